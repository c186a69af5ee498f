package rooms

import (
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/policy"
)

// Unit tests of the pending set's rules; flushing against a real
// redis-server is tested in integration/debounce_test.go.

func TestPendingSetCapsMeanWriteThrough(t *testing.T) {
	m := newManager(t)
	d := m.NewDebouncer(DebounceConfig{MaxBytes: 100, MaxRooms: 2})
	big := make([]byte, 60)
	if !d.SetStrings([]StringWrite{{Room: "a", Key: "room:a", Value: big}}) {
		t.Fatal("the first write fits")
	}
	if d.SetStrings([]StringWrite{{Room: "a", Key: "room:a:x", Value: big}}) {
		t.Fatal("a write past PENDING_MAX_BYTES was taken")
	}
	if !d.SetStrings([]StringWrite{{Room: "a", Key: "room:a", Value: big[:10]}}) {
		t.Fatal("a write that fits under the cap was refused")
	}
	d.SetStrings([]StringWrite{{Room: "b", Key: "room:b", Value: []byte("x")}})
	if d.SetStrings([]StringWrite{{Room: "c", Key: "room:c", Value: []byte("x")}}) {
		t.Fatal("a third room past PENDING_MAX_ROOMS was taken")
	}
	// All or nothing: MSET across a full set changes nothing.
	before := d.Stats()
	if d.SetStrings([]StringWrite{{Room: "a", Key: "room:a:y", Value: []byte("1")}, {Room: "c", Key: "room:c", Value: []byte("2")}}) {
		t.Fatal("an MSET with one key over the caps was taken")
	}
	if after := d.Stats(); after.PendingKeys != before.PendingKeys || after.PendingBytes != before.PendingBytes {
		t.Fatalf("a refused MSET changed the pending set: %+v -> %+v", before, after)
	}
}

func TestCompletedRoomIsNotDebounced(t *testing.T) {
	m := newManager(t)
	d := m.NewDebouncer(DebounceConfig{})
	m.remember("done", policy.Completed)
	if d.SetStrings([]StringWrite{{Room: "done", Key: "room:done:x", Value: []byte("1")}}) {
		t.Fatal("a write to a completed room was debounced")
	}
}

func TestHashWritesNeedKnownFields(t *testing.T) {
	m := newManager(t)
	d := m.NewDebouncer(DebounceConfig{})
	fv := args("p1", "10", "p2", "20")
	if _, ok := d.SetFields("h", "room:h:players", fv); ok {
		t.Fatal("an HSET was debounced without knowing the hash's fields (its reply would be a guess)")
	}
	d.Prime("h", "room:h:players", args("p1"))
	added, ok := d.SetFields("h", "room:h:players", fv)
	if !ok || added != 1 {
		t.Fatalf("HSET p1 p2 over known {p1} = %d, %v; want 1 new field", added, ok)
	}
	if added, _ := d.SetFields("h", "room:h:players", args("p2", "21")); added != 0 {
		t.Fatalf("HSET of a field just written reports %d new", added)
	}
	_, vals, hash, ok, _ := d.Pending("room:h:players", args("p1", "p2"))
	if !hash || !ok || string(vals[0]) != "10" || string(vals[1]) != "21" {
		t.Fatalf("pending p1 p2 = %q, %v, %v", vals, hash, ok)
	}
	if _, _, _, ok, none := d.Pending("room:h:players", args("p3")); ok || !none {
		t.Fatalf("a field never written: ok %v, none %v; want Redis to answer without a flush", ok, none)
	}
	if _, _, _, ok, none := d.Pending("room:h:players", args("p1", "p3")); ok || none {
		t.Fatalf("a mix of pending and other fields: ok %v, none %v; want a flush first", ok, none)
	}
	// Any other write to the room forgets the field lists.
	m.remember("h", policy.Active)
	d.NoteWrite("h")
	if _, ok := d.SetFields("h", "room:h:players", args("p9", "1")); ok {
		t.Fatal("field lists survived a write that was not coalesced")
	}
}

func TestPendingStringExpires(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	m := newManager(t)
	m.now = func() time.Time { return now }
	d := m.NewDebouncer(DebounceConfig{})
	d.SetStrings([]StringWrite{{Room: "e", Key: "room:e:k", Value: []byte("v"), TTL: 100 * time.Millisecond}})
	if _, _, _, ok, _ := d.Pending("room:e:k", nil); !ok {
		t.Fatal("a fresh pending value is not served")
	}
	now = now.Add(time.Second)
	if _, _, _, ok, _ := d.Pending("room:e:k", nil); ok {
		t.Fatal("a pending value past its own TTL is still served")
	}
}

func TestHeldUntilStored(t *testing.T) {
	m := newManager(t)
	d := m.NewDebouncer(DebounceConfig{})
	m.remember("s", policy.Active) // the store keeps this room
	d.SetStrings([]StringWrite{{Room: "s", Key: "room:s", Value: []byte(`{"status":"active"}`)}})
	r := d.rooms["s"]
	cmd, sent, _ := d.buildFlushLocked("s", r, m.now(), false)
	if cmd == nil || len(sent) != 1 {
		t.Fatalf("flush of one pending key: %q %v", cmd, sent)
	}
	d.settleLocked("s", r, sent, true, m.now())
	if d.HasRoom("s") || !d.HasKeyHeld("room:s") {
		t.Fatal("after its flush a write must be held (not pending for Redis) until the store has it")
	}
	d.dropStoredLocked("s", r)
	if d.HasKeyHeld("room:s") {
		t.Fatal("a write the store has is still held")
	}
}

// HasKeyHeld (tests) reports whether key has an acknowledged write not yet in the
// store (in Redis or not).
func (d *Debouncer) HasKeyHeld(key string) bool {
	if !d.Enabled() {
		return false
	}
	d.mu.Lock()
	_, ok := d.keys[key]
	d.mu.Unlock()
	return ok
}
