package integration

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/wiring"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/proxy"
	"github.com/roomproxy/roomproxy/rooms"
)

// outage is a proxy whose rooms are served from the store (a scratch
// server, as in production) while down is set, standing in for the breaker,
// with a debouncer of a 100 ms window.
type outage struct {
	p       *proxyUnderTest
	r       *testredis.Server
	store   *fallback.Mongo
	m       *rooms.Manager
	scratch *backend.Scratch
	down    *atomic.Bool
}

// outageSetup starts redis-server, the store on database db and the proxy;
// all end with the test, which must leave no goroutine behind.
func outageSetup(t *testing.T, db string) outage {
	t.Helper()
	leakCheck(t)
	o := outage{r: testredis.Start(t, testredis.Options{}), down: new(atomic.Bool)}
	o.store, _ = startStore(t, db, 5*time.Second)
	scratch, err := backend.NewScratch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scratch.Close() })
	o.scratch = scratch
	var d *rooms.Debouncer
	o.p = startProxyWith(t, backend.Config{URL: o.r.URL(), Timeout: 500 * time.Millisecond}, func(up *backend.Upstream) proxy.Config {
		o.m = rooms.New(policy.DefaultRules(), o.store, wiring.Exec(up), nil)
		d = o.m.NewDebouncer(rooms.DebounceConfig{Window: 100 * time.Millisecond})
		o.m.SetDegraded(scratch, o.down.Load)
		return proxy.Config{Rooms: o.m}
	})
	runCtx, stop := context.WithCancel(context.Background())
	flusherDone := make(chan struct{})
	go func() { defer close(flusherDone); d.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-flusherDone })
	return o
}

// TestRoomsServedFromStoreDuringOutage: with the upstream killed (and the
// outage flag set by hand, standing in for the breaker), room reads and
// writes are answered from the room store with Redis's reply bytes, other
// keys get -TRYAGAIN, and after the upstream is back (empty) the re-sync
// writes the rooms written during the outage back to Redis, so no
// pre-outage value is served.
func TestRoomsServedFromStoreDuringOutage(t *testing.T) {
	o := outageSetup(t, "outage_it")
	r, store, m, scratch := o.r, o.store, o.m, o.scratch
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: o.p.Addr, MaxRetries: -1})
	defer c.Close()
	c3 := redis.NewClient(&redis.Options{Addr: o.p.Addr, MaxRetries: -1, Protocol: 3})
	defer c3.Close()
	must := func(err error) { mustOK(t, err) }
	must(c.Set(ctx, "room:o1", stateDoc("active", 1), 0).Err())
	must(c.HSet(ctx, "room:o1:players", "p1", "10", "p2", "20").Err())
	must(c.RPush(ctx, "room:o1:log", "a", "b").Err())
	must(c.Set(ctx, "room:o2", stateDoc("active", 1), 0).Err())
	must(c.Do(ctx, "ROOM.FLUSH", "o1").Err())

	// The outage: Redis is gone.
	r.Kill()
	o.down.Store(true)
	if v, err := c.Get(ctx, "room:o1").Result(); err != nil || seqOf(t, v) != 1 {
		t.Fatalf("GET during the outage = %q, %v", v, err)
	}
	if v, err := c3.HGetAll(ctx, "room:o1:players").Result(); err != nil || v["p2"] != "20" {
		t.Fatalf("HGETALL (RESP3) during the outage = %v, %v", v, err)
	}
	if n, err := c.HIncrBy(ctx, "room:o1:players", "p1", 5).Result(); err != nil || n != 15 {
		t.Fatalf("HINCRBY during the outage = %d, %v", n, err)
	}
	must(c.Set(ctx, "room:o1", stateDoc("active", 2), 0).Err()) // a state write: debounced, flushed to the store
	if v, err := c.Get(ctx, "room:o1").Result(); err != nil || seqOf(t, v) != 2 {
		t.Fatalf("GET after a write during the outage = %q, %v", v, err)
	}
	if v, err := c.LRange(ctx, "room:o1:log", 0, -1).Result(); err != nil || strings.Join(v, ",") != "a,b" {
		t.Fatalf("LRANGE during the outage = %v, %v", v, err)
	}
	if err := c.Incr(ctx, "room:o1").Err(); err == nil || !strings.HasPrefix(err.Error(), "ERR value is not an integer") {
		t.Fatalf("INCR of a JSON document = %v, want Redis's error", err)
	}
	// A lifecycle write goes to the store alone.
	must(c.Set(ctx, "room:o2", stateDoc("completed", 2), 0).Err())
	if v, err := c3.Do(ctx, "ROOM.GET", "o1").Result(); err != nil || v.(map[any]any)["source"] != "store" {
		t.Fatalf("ROOM.GET during the outage = %#v, %v; want source store", v, err)
	}
	if err := c.Get(ctx, "plain").Err(); err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Fatalf("GET of a non-room key during the outage = %v, want -TRYAGAIN", err)
	}
	time.Sleep(300 * time.Millisecond) // the held state write reaches the store
	room, _, err := store.Get(ctx, "o1")
	if err != nil || seqOf(t, string(room.Keys["room:o1"].String)) != 2 || string(room.Keys["room:o1:players"].Hash["p1"]) != "15" {
		t.Fatalf("stored o1 = %+v, %v", room.Keys, err)
	}
	if room, _, _ := store.Get(ctx, "o2"); room.Status != "completed" {
		t.Fatalf("o2 status %q, want completed", room.Status)
	}
	if st := m.DegradedStats(); st.Dirty != 2 || st.Reads == 0 || st.Writes == 0 {
		t.Fatalf("outage stats %+v", st)
	}
	// A proxy started now (a restart, another instance) learns which rooms
	// are dirty from the store.
	other := rooms.New(policy.DefaultRules(), store, nil, nil)
	other.SetDegraded(scratch, func() bool { return false })
	if n, err := other.LoadDirty(ctx); err != nil || n != 2 || !other.Dirty("o1") || !other.Dirty("o2") {
		t.Fatalf("LoadDirty = %d, %v; o1 %v, o2 %v", n, err, other.Dirty("o1"), other.Dirty("o2"))
	}

	// Back, empty. Until re-synced the dirty rooms are still served from
	// the store; then Redis has them.
	r.Restart()
	o.down.Store(false)
	if v, err := c.Get(ctx, "room:o1").Result(); err != nil || seqOf(t, v) != 2 {
		t.Fatalf("GET of a dirty room before re-sync = %q, %v", v, err)
	}
	if n := m.Resync(ctx, 100, slog.New(slog.DiscardHandler)); n != 2 {
		t.Fatalf("re-synced %d rooms, want 2", n)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	if v, err := direct.Get(ctx, "room:o1").Result(); err != nil || seqOf(t, v) != 2 {
		t.Fatalf("Redis after re-sync: room:o1 = %q, %v", v, err)
	}
	if v, _ := direct.HGet(ctx, "room:o1:players", "p1").Result(); v != "15" {
		t.Fatalf("Redis after re-sync: p1 = %q", v)
	}
	ttlWithin(t, direct, "room:o1:log", 3500*time.Second, 3600*time.Second)
	if n, _ := direct.Exists(ctx, "room:o2").Result(); n != 0 {
		t.Fatal("the room completed during the outage is in Redis")
	}
	if v, err := c.Get(ctx, "room:o1").Result(); err != nil || seqOf(t, v) != 2 {
		t.Fatalf("GET after re-sync = %q, %v", v, err)
	}
	if n, err := other.LoadDirty(ctx); err != nil || n != 0 {
		t.Fatalf("after the re-sync the store still lists %d dirty rooms (%v)", n, err)
	}
}

// TestOverLimitRoomDuringOutage: served from the store, a room past
// ROOM_MAX_BYTES (grown by a script before the outage) refuses a write that
// adds to it, takes one that makes it smaller, and completes.
func TestOverLimitRoomDuringOutage(t *testing.T) {
	o := outageSetup(t, "outage_big_it")
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: o.p.Addr, MaxRetries: -1})
	defer c.Close()
	mustOK(t, c.Set(ctx, "room:ob", stateDoc("active", 1), 0).Err())
	growOverLimit(t, c, "ob")
	mustOK(t, c.Do(ctx, "ROOM.FLUSH", "ob").Err()) // the store has the room as it is

	o.r.Kill()
	o.down.Store(true)
	if err := c.HSet(ctx, "room:ob:h", "f", strings.Repeat("y", 10<<10)).Err(); err == nil || err.Error() != "ERR room document too large" {
		t.Fatalf("a write adding to a room past the limit during the outage: %v, want ERR room document too large", err)
	}
	mustOK(t, c.Del(ctx, "room:ob:d").Err()) // still past the limit, but smaller
	mustOK(t, c.Set(ctx, "room:ob", stateDoc("completed", 2), 0).Err())
	room, _, err := o.store.Get(ctx, "ob")
	if err != nil || room.Status != "completed" {
		t.Fatalf("stored room: %q (%v), want completed", room.Status, err)
	}
	if _, ok := room.Keys["room:ob:d"]; ok {
		t.Fatal("the key deleted during the outage is still stored")
	}
}
