package rooms

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/testsupport"
	"github.com/roomproxy/roomproxy/policy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var args = testsupport.Args

func newManager(t *testing.T) *Manager {
	st, err := fallback.OpenEmbedded(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// Plan never reaches the upstream; Apply's reads are tested against a
	// real redis-server in the integration tests.
	exec := func(context.Context, [][][]byte) []batch.Reply { t.Fatal("unexpected upstream call"); return nil }
	return New(policy.DefaultRules(), st, exec, nil)
}

func TestPlan(t *testing.T) {
	m := newManager(t)
	ctx := context.Background()
	cases := []struct {
		name      string
		args      [][]byte
		lifecycle bool
		after     string // the hidden commands, joined
		err       bool
	}{
		{"set", args("SET", "room:a", `{"status":"waiting"}`), true, "", false},
		{"hset", args("HSET", "room:a:players", "p1", "x"), false, "EVALSHA keyTTL 3 roomproxy:keys:{a} roomproxy:ttl:{a} room:a:players 1800 ", false},
		{"set", args("SET", "room:a:timer", "1", "EX", "5"), false, "EVALSHA keyTTL 3 roomproxy:keys:{a} roomproxy:ttl:{a} room:a:timer 1800 own", false},
		{"hset", args("HSET", "room:b", "status", "playing"), true, "", false},
		{"hset", args("HSET", "room:b", "score", "1"), true, "", false}, // unknown room: creating it is lifecycle
		{"mset", args("MSET", "room:c", "{}", "x", "y"), false, "", true},
		{"incr", args("INCR", "room:{d}:n"), false, "EVALSHA keyTTL 3 roomproxy:keys:{d} roomproxy:ttl:{d} room:{d}:n 1800 ", false},
	}
	for _, c := range cases {
		keys := [][]byte{c.args[1]}
		if c.name == "mset" {
			keys = [][]byte{c.args[1], c.args[3]}
		}
		p, err := m.Plan(ctx, c.name, c.args, keys)
		if (err != nil) != c.err {
			t.Errorf("%q: err %v", c.args, err)
			continue
		}
		var after []string
		for _, a := range p.After {
			after = append(after, strings.Replace(string(joinArgs(a)), scriptSHA[keyTTLScript], "keyTTL", 1))
		}
		if p.Lifecycle != c.lifecycle || strings.Join(after, "|") != c.after {
			t.Errorf("%q: lifecycle=%v after=%q", c.args, p.Lifecycle, strings.Join(after, "|"))
		}
	}
	// Once a room's state is known, a write keeping it is a state write, and
	// one changing it is a lifecycle write.
	m.remember("a", policy.Active)
	if p, _ := m.Plan(ctx, "set", args("SET", "room:a", `{"status":"active","round":2}`), [][]byte{[]byte("room:a")}); p.Lifecycle {
		t.Error("a state-keeping SET of an active room is not a lifecycle write")
	}
	if p, _ := m.Plan(ctx, "set", args("SET", "room:a", `{"status":"ended"}`), [][]byte{[]byte("room:a")}); !p.Lifecycle || p.State != policy.Completed {
		t.Errorf("ending the game: %+v", p)
	}
	if p, _ := m.Plan(ctx, "del", args("DEL", "room:a"), [][]byte{[]byte("room:a")}); !p.Lifecycle {
		t.Error("deleting the state key is a lifecycle write")
	}
}

// TestMultiStateKeysNamesCommandAndPrefix: the refusal of a command that
// writes a state key with other keys names the command and the prefix the
// rooms use.
func TestMultiStateKeysNamesCommandAndPrefix(t *testing.T) {
	m := newManager(t)
	m.Rules.Prefix = "game:"
	_, err := m.Plan(context.Background(), "rename", args("RENAME", "game:x:n", "game:x"),
		[][]byte{[]byte("game:x:n"), []byte("game:x")})
	want := "RENAME writes a room's state key (game:<id>) together with other keys; write the state key with a command of its own"
	var me *MultiStateKeysError
	if !errors.As(err, &me) || err.Error() != want {
		t.Fatalf("Plan: %v, want %q", err, want)
	}
}

func joinArgs(a [][]byte) []byte {
	var b []byte
	for i, x := range a {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, x...)
	}
	return b
}

func TestApplyToSnapshot(t *testing.T) {
	keys := map[string]fallback.Value{"room:a": {Type: fallback.TypeHash, Hash: map[string][]byte{"status": []byte("waiting"), "x": []byte("1")}}}
	applyToSnapshot(keys, "room:a", "hset", args("HSET", "room:a", "status", "active", "y", "2"))
	if h := keys["room:a"].Hash; string(h["status"]) != "active" || string(h["x"]) != "1" || string(h["y"]) != "2" {
		t.Fatalf("HSET on the snapshot: %v", h)
	}
	applyToSnapshot(keys, "room:a", "hsetnx", args("HSETNX", "room:a", "x", "9"))
	if string(keys["room:a"].Hash["x"]) != "1" {
		t.Fatal("HSETNX overwrote a field")
	}
	applyToSnapshot(keys, "room:a", "hdel", args("HDEL", "room:a", "y"))
	if _, ok := keys["room:a"].Hash["y"]; ok {
		t.Fatal("HDEL kept the field")
	}
	applyToSnapshot(keys, "room:a", "setex", args("SETEX", "room:a", "10", `{"status":"active"}`))
	if v := keys["room:a"]; v.Type != fallback.TypeString || string(v.String) != `{"status":"active"}` {
		t.Fatalf("SETEX on the snapshot: %+v", v)
	}
	applyToSnapshot(keys, "room:a", "del", args("DEL", "room:a"))
	if _, ok := keys["room:a"]; ok {
		t.Fatal("DEL kept the key")
	}
}

func TestParse(t *testing.T) {
	v, err := parse([]byte("*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:5\r\n"))
	if err != nil || len(v.items) != 3 || string(v.items[0].str) != "a" || v.items[1].kind != 0 || v.items[2].items[0].num != 5 {
		t.Fatalf("parse = %+v, %v", v, err)
	}
	for _, bad := range []string{"", "*2\r\n$1\r\na\r\n", "$5\r\nab\r\n", "?x\r\n", "*1\r\n:1\r\nextra"} {
		if _, err := parse([]byte(bad)); err == nil {
			t.Errorf("parse(%q) should fail", bad)
		}
	}
}

// countingStore counts reads and makes them slow enough to overlap.
type countingStore struct {
	fallback.Store
	mu    sync.Mutex
	reads int
}

func (c *countingStore) Get(ctx context.Context, id string) (fallback.Room, bool, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	return c.Store.Get(ctx, id)
}

// TestConcurrentMissesReadTheStoreOnce: twenty readers missing one room at
// once cost one store read (singleflight).
func TestConcurrentMissesReadTheStoreOnce(t *testing.T) {
	st, err := fallback.OpenEmbedded(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	st.Put(ctx, fallback.Room{ID: "hot", Status: "active", Version: 1, Keys: map[string]fallback.Value{
		"room:hot": {Type: fallback.TypeString, String: []byte(`{"status":"active"}`)}}})
	cs := &countingStore{Store: st}
	exec := func(_ context.Context, cmds [][][]byte) []batch.Reply {
		out := make([]batch.Reply, len(cmds))
		for i := range out {
			out[i].Raw = []byte(":1\r\n")
		}
		return out
	}
	m := New(policy.DefaultRules(), cs, exec, nil)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := m.Restore(ctx, "hot"); err != nil || n != 1 {
				t.Errorf("Restore = %d, %v", n, err)
			}
		}()
	}
	wg.Wait()
	if cs.reads != 1 {
		t.Fatalf("%d store reads for 20 concurrent misses", cs.reads)
	}
}

func TestTouchSlidesActiveRoomsOncePerInterval(t *testing.T) {
	m := newManager(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	if m.Touch("unknown") != nil {
		t.Fatal("a room of unknown state is not refreshed")
	}
	m.remember("w", policy.Waiting)
	if m.Touch("w") != nil {
		t.Fatal("waiting rooms do not slide")
	}
	m.remember("a", policy.Active)
	c := m.Touch("a")
	if c == nil || string(c[0]) != "EVALSHA" || string(c[1]) != scriptSHA[refreshScript] || string(c[3]) != "roomproxy:keys:{a}" || string(c[4]) != "roomproxy:ttl:{a}" || string(c[5]) != "3600" {
		t.Fatalf("first touch = %q", c)
	}
	now = now.Add(59 * time.Second)
	if m.Touch("a") != nil {
		t.Fatal("refreshed twice within the interval")
	}
	now = now.Add(time.Second)
	if m.Touch("a") == nil {
		t.Fatal("not refreshed after the interval")
	}
}

// TestClientExpiry: what a command does to its key's TTL by itself, and so
// whether the room's TTL follows it (SPEC 4.2: the client's own TTL stands
// only when no longer than the room's).
func TestClientExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	keep := clientTTL{sets: true, ttl: -1}
	cases := []struct {
		args []string
		want clientTTL
	}{
		{[]string{"SET", "k", "v"}, clientTTL{}},
		{[]string{"SET", "k", "v", "EX", "30"}, clientTTL{true, 30 * time.Second}},
		{[]string{"SET", "k", "v", "NX", "px", "1500"}, clientTTL{true, 1500 * time.Millisecond}},
		{[]string{"SET", "k", "v", "EXAT", "1000060"}, clientTTL{true, time.Minute}},
		{[]string{"SET", "k", "v", "PXAT", "999999000"}, keep}, // in the past: the key is deleted
		{[]string{"SET", "k", "v", "KEEPTTL"}, keep},
		{[]string{"SET", "k", "v", "EX", "x"}, keep}, // refused by Redis
		{[]string{"SETEX", "k", "20", "v"}, clientTTL{true, 20 * time.Second}},
		{[]string{"PSETEX", "k", "20", "v"}, clientTTL{true, 20 * time.Millisecond}},
		{[]string{"EXPIRE", "k", "99999"}, clientTTL{true, 99999 * time.Second}},
		{[]string{"EXPIRE", "k", "10", "GT"}, clientTTL{true, 10 * time.Second}},
		{[]string{"PEXPIREAT", "k", "1000002000"}, clientTTL{true, 2 * time.Second}},
		{[]string{"PERSIST", "k"}, clientTTL{sets: true}},
		{[]string{"GETEX", "k"}, keep},
		{[]string{"GETEX", "k", "PERSIST"}, clientTTL{sets: true}},
		{[]string{"GETEX", "k", "EX", "5"}, clientTTL{true, 5 * time.Second}},
		{[]string{"HSET", "k", "f", "v"}, clientTTL{}},
	}
	for _, c := range cases {
		if got := clientExpiry(strings.ToLower(c.args[0]), args(c.args...), now); got != c.want {
			t.Errorf("clientExpiry(%q) = %+v, want %+v", c.args, got, c.want)
		}
	}
}

// TestPlanClientTTL: the room's TTL follows a command whose own TTL is
// longer than the room's, or none (PERSIST), and not one whose TTL is
// shorter.
func TestPlanClientTTL(t *testing.T) {
	m := newManager(t)
	m.remember("t", policy.Active) // 3600 s
	ctx := context.Background()
	for _, c := range []struct {
		args   []string
		expire bool // the room's TTL on the key after the command
	}{
		{[]string{"SET", "room:t:lock", "v", "EX", "30"}, false},
		{[]string{"SET", "room:t:lock", "v", "EX", "99999"}, true},
		{[]string{"EXPIRE", "room:t:h", "3600"}, false},
		{[]string{"EXPIRE", "room:t:h", "3601"}, true},
		{[]string{"PERSIST", "room:t:h"}, true},
		{[]string{"HSET", "room:t:h", "f", "v"}, true},
	} {
		a := args(c.args...)
		p, err := m.Plan(ctx, strings.ToLower(c.args[0]), a, a[1:2])
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, cmd := range p.After {
			// keyTTLScript: KEYS idx, ttl set, key; ARGV ttl, mode. The room's
			// TTL follows in modes 'room' and '' (the key's own TTL, if an
			// earlier command set one that still holds, is Redis's to tell).
			if string(cmd[1]) == scriptSHA[keyTTLScript] && string(cmd[5]) == c.args[1] {
				got = string(cmd[6]) == "3600" && (string(cmd[7]) == "room" || string(cmd[7]) == "")
			}
		}
		if got != c.expire {
			t.Errorf("%q: the room's TTL after it: %v, want %v (%q)", c.args, got, c.expire, p.After)
		}
	}
}
