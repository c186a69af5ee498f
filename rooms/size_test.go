package rooms

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/policy"
)

// fakeRoom answers the snapshot script from the string keys and hashes it
// holds, counting the snapshots read; during, if set, runs while one is
// being read.
type fakeRoom struct {
	keys      map[string]string
	hashes    map[string]map[string]string
	snapshots int
	during    func()
}

func (f *fakeRoom) exec(_ context.Context, cmds [][][]byte) []batch.Reply {
	out := make([]batch.Reply, len(cmds))
	for i, c := range cmds {
		isEval := strings.EqualFold(string(c[0]), "EVAL") && string(c[1]) == snapshotScript
		isSHA := strings.EqualFold(string(c[0]), "EVALSHA") && string(c[1]) == scriptSHA[snapshotScript]
		if !isEval && !isSHA {
			out[i] = batch.Reply{Err: errors.New("fakeRoom: only the snapshot script")}
			continue
		}
		f.snapshots++
		if f.during != nil {
			f.during()
		}
		bulk := func(b []byte, s string) []byte { return append(b, "$"+strconv.Itoa(len(s))+"\r\n"+s+"\r\n"...) }
		const noOwnTTL = ":-1\r\n"
		b := []byte("*" + strconv.Itoa(4*(len(f.keys)+len(f.hashes))) + "\r\n")
		for k, v := range f.keys {
			b = append(bulk(bulk(bulk(b, k), fallback.TypeString), v), noOwnTTL...)
		}
		for k, h := range f.hashes {
			b = bulk(bulk(b, k), fallback.TypeHash)
			b = append(b, "*"+strconv.Itoa(2*len(h))+"\r\n"...)
			for field, v := range h {
				b = bulk(bulk(b, field), v)
			}
			b = append(b, noOwnTTL...)
		}
		out[i] = batch.Reply{Raw: b}
	}
	return out
}

// sizeManager is a Manager whose rooms may hold limit bytes, reading its
// snapshots from f, on a clock the test moves.
func sizeManager(t *testing.T, f *fakeRoom, limit int) (*Manager, *time.Time) {
	st, err := fallback.OpenEmbedded(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rules := policy.DefaultRules()
	rules.MaxBytes = limit
	now := time.Unix(1e9, 0)
	return New(rules, st, f.exec, func() time.Time { return now }), &now
}

// admit admits a write that reaches Redis at once (it is landed).
func admit(m *Manager, a ...string) error {
	adm, err := admitHeld(m, a...)
	m.Land(adm)
	return err
}

// admitHeld admits a write that is still on its way to Redis.
func admitHeld(m *Manager, a ...string) (Admitted, error) {
	args := args(a...)
	name := strings.ToLower(a[0])
	var keys [][]byte
	switch name {
	case "mset":
		for i := 1; i < len(args); i += 2 {
			keys = append(keys, args[i])
		}
	default:
		keys = args[1:2]
	}
	return m.AdmitWrite(context.Background(), name, args, keys, nil)
}

// TestAdmitWriteLedger: writes that fit are admitted without reading the
// room; a room is measured only when a write may not fit, and a write that
// would take it over ROOM_MAX_BYTES is refused.
func TestAdmitWriteLedger(t *testing.T) {
	f := &fakeRoom{keys: map[string]string{"room:a": `{"status":"active"}`}} // 6+19 = 25 bytes
	m, now := sizeManager(t, f, 1000)

	// An unknown room is measured once, on its first write.
	if err := admit(m, "HSET", "room:a:h", "f", "v"); err != nil || f.snapshots != 1 {
		t.Fatalf("first write: %v, %d snapshots", err, f.snapshots)
	}
	// Bounded writes count by their arguments (plus slack) and need no read
	// while the room's known size plus them fits.
	for i := 0; i < 20; i++ {
		if err := admit(m, "HSET", "room:a:h", "f", "v"); err != nil {
			t.Fatal(err)
		}
	}
	if f.snapshots != 1 {
		t.Fatalf("%d snapshots for writes that fit", f.snapshots)
	}
	// Counted as up to 21 * 42 bytes: the next one may not fit, so the room
	// is measured again (the fake room still holds 25 bytes) and admitted.
	if err := admit(m, "HSET", "room:a:h", "f", strings.Repeat("x", 100)); err != nil || f.snapshots != 2 {
		t.Fatalf("write after the bound ran out: %v, %d snapshots", err, f.snapshots)
	}

	// A string write is counted exactly: 836 bytes of 1000 are known now.
	if err := admit(m, "SET", "room:a:blob", strings.Repeat("b", 800)); err != nil || f.snapshots != 2 {
		t.Fatalf("blob: %v, %d snapshots", err, f.snapshots)
	}
	f.keys["room:a:blob"] = strings.Repeat("b", 800) // as Redis has it
	// A write larger than what is left is refused on a fresh measurement.
	err := admit(m, "APPEND", "room:a:blob", strings.Repeat("c", 200))
	if !errors.Is(err, ErrTooLarge) || f.snapshots != 3 {
		t.Fatalf("write past the limit: %v, %d snapshots", err, f.snapshots)
	}
	// Refused again within sizeFresh without reading the room again.
	if err := admit(m, "APPEND", "room:a:blob", strings.Repeat("c", 200)); !errors.Is(err, ErrTooLarge) || f.snapshots != 3 {
		t.Fatalf("second refusal: %v, %d snapshots", err, f.snapshots)
	}
	// Removing data is always admitted, without a read.
	if err := admit(m, "DEL", "room:a:blob"); err != nil || f.snapshots != 3 {
		t.Fatalf("DEL of a full room: %v, %d snapshots", err, f.snapshots)
	}
	// Once the measurement is older than sizeFresh, the room is read again
	// (another instance, or an expiry, may have made room).
	delete(f.keys, "room:a:blob")
	*now = now.Add(2 * sizeFresh)
	if err := admit(m, "APPEND", "room:a:blob", strings.Repeat("c", 200)); err != nil || f.snapshots != 4 {
		t.Fatalf("after the keys went away: %v, %d snapshots", err, f.snapshots)
	}
	if st := m.Stats(); st.SizeChecks != 4 || st.TooLarge != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAdmitStringOverwrites: string writes replace known values exactly, so
// a room holding a large blob can rewrite it forever without being read or
// refused, and a blob that really grows past the limit is refused.
func TestAdmitStringOverwrites(t *testing.T) {
	f := &fakeRoom{keys: map[string]string{"room:s": `{"status":"active"}`}}
	m, _ := sizeManager(t, f, 1000)
	blob := func(n int) string { return strings.Repeat("x", n) }
	for i := 0; i < 20; i++ {
		if err := admit(m, "SET", "room:s:state", blob(600+i)); err != nil {
			t.Fatalf("overwrite %d: %v", i, err)
		}
	}
	if f.snapshots != 1 {
		t.Fatalf("%d snapshots for overwrites", f.snapshots)
	}
	// A second key of the same size would take the room over: refused.
	if err := admit(m, "SETEX", "room:s:copy", "10", blob(600)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("second blob: %v", err)
	}
	// MSET counts each of its keys; shrinking one makes room for another.
	if err := admit(m, "MSET", "room:s:state", blob(300), "room:s:copy", blob(300)); err != nil {
		t.Fatalf("MSET that fits: %v", err)
	}
	if f.snapshots != 1 {
		t.Fatalf("%d snapshots; string writes should need only the first", f.snapshots)
	}
	// A conditional write may leave the old value: it never frees room, and
	// the ledger is no longer exact, so a write it refuses is checked on a
	// snapshot (here the NX did not apply: Redis still has 300 bytes).
	if err := admit(m, "SET", "room:s:state", "tiny", "NX"); err != nil {
		t.Fatal(err)
	}
	f.keys["room:s:state"], f.keys["room:s:copy"] = blob(300), blob(300)
	if err := admit(m, "SET", "room:s:more", blob(400)); !errors.Is(err, ErrTooLarge) || f.snapshots != 2 {
		t.Fatalf("room counted as freed by a conditional write: %v, %d snapshots", err, f.snapshots)
	}
}

// TestAdmitSetReplacesAnyType: SET replaces a key whatever it held, so a
// measured hash it overwrites stops counting.
func TestAdmitSetReplacesAnyType(t *testing.T) {
	f := &fakeRoom{
		keys:   map[string]string{"room:t": `{"status":"active"}`},
		hashes: map[string]map[string]string{"room:t:h": {"f": strings.Repeat("h", 600)}},
	}
	m, _ := sizeManager(t, f, 1000)
	if err := admit(m, "SET", "room:t:h", "small"); err != nil || f.snapshots != 1 { // 25 + 8 + 5
		t.Fatalf("SET over the hash: %v, %d snapshots", err, f.snapshots)
	}
	if err := admit(m, "SET", "room:t:blob", strings.Repeat("b", 600)); err != nil || f.snapshots != 1 {
		t.Fatalf("a 600-byte value where the hash was: %v, %d snapshots", err, f.snapshots)
	}
}

// TestAdmitCountsWritesDuringMeasure: a write admitted while the room's
// snapshot is being read may have missed it, so it stays counted.
func TestAdmitCountsWritesDuringMeasure(t *testing.T) {
	f := &fakeRoom{keys: map[string]string{"room:c": `{"status":"active"}`}}
	m, now := sizeManager(t, f, 1000)
	if err := admit(m, "HSET", "room:c:h", "f", "v"); err != nil { // measured: 25 bytes
		t.Fatal(err)
	}
	f.during = func() {
		f.during = nil
		if err := admit(m, "APPEND", "room:c:log", strings.Repeat("l", 500)); err != nil {
			t.Errorf("write during the snapshot: %v", err)
		}
	}
	*now = now.Add(2 * sizeFresh)
	// Forces a measurement (counted 42 + 932 > 1000), during which 500 bytes
	// more are admitted; the snapshot (25 bytes) does not have them.
	if err := admit(m, "APPEND", "room:c:log", strings.Repeat("l", 900)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("write on top of one admitted during the snapshot: %v", err)
	}
	if f.snapshots != 2 {
		t.Fatalf("%d snapshots", f.snapshots)
	}
}

// TestAdmitCountsWritesInFlight: a write admitted before a snapshot's read
// began but not in Redis yet (another connection's batch still on its way)
// may be missing from it, so it stays counted until it has landed.
func TestAdmitCountsWritesInFlight(t *testing.T) {
	f := &fakeRoom{keys: map[string]string{"room:f": `{"status":"active"}`}}
	m, now := sizeManager(t, f, 1000)
	if err := admit(m, "HSET", "room:f:h", "f", "v"); err != nil { // measured: 25 bytes
		t.Fatal(err)
	}
	held, err := admitHeld(m, "APPEND", "room:f:log", strings.Repeat("l", 500)) // 542 counted
	if err != nil || held.Empty() {
		t.Fatalf("held write: %v, %+v", err, held)
	}
	*now = now.Add(2 * sizeFresh)
	// Needs a measurement (25 + 584 + 442 > 1000); the snapshot (25 bytes)
	// lacks the held write, which stays counted: 25 + 542 + 442 > 1000.
	if err := admit(m, "APPEND", "room:f:log", strings.Repeat("l", 400)); !errors.Is(err, ErrTooLarge) || f.snapshots != 2 {
		t.Fatalf("write on top of one in flight: %v, %d snapshots", err, f.snapshots)
	}
	// It lands, and Redis has it now: the next measurement sees it there
	// and it is counted once, not twice.
	m.Land(held)
	f.keys["room:f:log"] = strings.Repeat("l", 500)
	*now = now.Add(2 * sizeFresh)
	if err := admit(m, "APPEND", "room:f:log", strings.Repeat("l", 450)); !errors.Is(err, ErrTooLarge) || f.snapshots != 3 {
		t.Fatalf("after landing, 535 + 492 bytes: %v, %d snapshots", err, f.snapshots)
	}
	if err := admit(m, "APPEND", "room:f:log", strings.Repeat("l", 300)); err != nil || f.snapshots != 3 {
		t.Fatalf("after landing, 535 + 342 bytes: %v, %d snapshots", err, f.snapshots)
	}
}

// BenchmarkAdmitWrite: the cost a state write to a room pays for its size
// check when it fits (no I/O): a string overwrite and a hash field write.
func BenchmarkAdmitWrite(b *testing.B) {
	f := &fakeRoom{keys: map[string]string{"room:b": `{"status":"active"}`}}
	st, err := fallback.OpenEmbedded(filepath.Join(b.TempDir(), "r.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m := New(policy.DefaultRules(), st, f.exec, nil)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		args [][]byte
	}{
		{"set", args("SET", "room:b:state", strings.Repeat("x", 200))},
		{"hset", args("HSET", "room:b:players", "p1", "100")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				a, err := m.AdmitWrite(ctx, c.name, c.args, c.args[1:2], nil)
				if err != nil {
					b.Fatal(err)
				}
				m.Land(a)
				if i%10000 == 0 {
					m.rebase("b", nil, m.landedOf("b")) // keep the bound from running out
				}
			}
		})
	}
}
