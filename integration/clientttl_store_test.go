package integration

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/rooms"
)

// storedExpiry checks the room store's copy of key: its own expiry lies
// within (now, now+hi], or, with hi 0, it has none.
func storedExpiry(t *testing.T, store fallback.Store, id, key string, hi time.Duration) {
	t.Helper()
	room, found, err := store.Get(context.Background(), id)
	v, ok := room.Keys[key]
	if err != nil || !found || !ok {
		t.Fatalf("room %s, key %s not stored (found %v, %v)", id, key, found, err)
	}
	now := time.Now()
	switch {
	case hi == 0 && !v.ExpireAt.IsZero():
		t.Fatalf("%s is stored with an expiry (%v) it should not have", key, v.ExpireAt)
	case hi > 0 && (!v.ExpireAt.After(now) || v.ExpireAt.After(now.Add(hi))):
		t.Fatalf("%s is stored expiring at %v, want within %v of %v", key, v.ExpireAt, hi, now)
	}
}

// TestClientTTLRestoredAfterRedisDataLoss: a key with a client's own TTL
// (SPEC 4.2) is stored with its expiry; after Redis loses its data, the
// read-through restore (SPEC 4.5) brings it back with what is left of that
// TTL, and does not bring back one whose TTL ran out meanwhile.
func TestClientTTLRestoredAfterRedisDataLoss(t *testing.T) {
	forEachDebounceMode(t, clientTTLRestoredAfterRedisDataLoss)
}

func clientTTLRestoredAfterRedisDataLoss(t *testing.T, p *proxyUnderTest, r *testredis.Server, store *fallback.Mongo) {
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	must := func(err error) { mustOK(t, err) }
	must(c.Set(ctx, "room:dl", stateDoc("waiting", 0), 0).Err())
	must(c.Set(ctx, "room:dl:lock", "p1", 30*time.Second).Err())
	must(c.Set(ctx, "room:dl:short", "x", 1500*time.Millisecond).Err())
	must(c.HSet(ctx, "room:dl:h", "f", "v").Err())
	must(c.Set(ctx, "room:dl", stateDoc("active", 1), 0).Err()) // a lifecycle write: the room is stored
	storedExpiry(t, store, "dl", "room:dl:lock", 30*time.Second)
	storedExpiry(t, store, "dl", "room:dl:short", 1500*time.Millisecond)
	storedExpiry(t, store, "dl", "room:dl:h", 0)

	time.Sleep(1600 * time.Millisecond) // room:dl:short's TTL runs out
	must(direct.FlushAll(ctx).Err())    // Redis loses everything
	if v, err := c.Get(ctx, "room:dl:short").Result(); err != redis.Nil {
		t.Fatalf("GET of a key whose own TTL ran out = %q, %v; want nil", v, err)
	}
	if v, err := c.Get(ctx, "room:dl:lock").Result(); err != nil || v != "p1" {
		t.Fatalf("GET room:dl:lock after the restore = %q, %v", v, err)
	}
	ttlWithin(t, direct, "room:dl:lock", 0, 29*time.Second) // 30 s less the 1.6 s waited
	if in, _ := direct.SIsMember(ctx, rooms.OwnTTLKey("dl"), "room:dl:lock").Result(); !in {
		t.Fatal("the restored key is not listed as keeping its own TTL")
	}
	ttlWithin(t, direct, "room:dl:h", 3500*time.Second, 3600*time.Second)
	if n, _ := direct.Exists(ctx, "room:dl:short").Result(); n != 0 {
		t.Fatal("the key whose own TTL ran out is back in Redis")
	}
}

// TestClientTTLDuringOutage: while rooms are served from the store (SPEC 5),
// a client's own TTL holds: a key set with one is gone once it runs out, and
// the re-sync after the outage gives Redis what is left of each, listed as
// the client's.
func TestClientTTLDuringOutage(t *testing.T) {
	o := outageSetup(t, "outage_ttl_it")
	r, store := o.r, o.store
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: o.p.Addr, MaxRetries: -1})
	defer c.Close()
	must := func(err error) { mustOK(t, err) }
	must(c.Set(ctx, "room:ot", stateDoc("active", 1), 0).Err())
	must(c.Set(ctx, "room:ot:lock", "p1", 60*time.Second).Err())
	must(c.Do(ctx, "ROOM.FLUSH", "ot").Err())
	storedExpiry(t, store, "ot", "room:ot:lock", 60*time.Second)

	r.Kill()
	o.down.Store(true)
	must(c.Set(ctx, "room:ot:cd", "x", time.Second).Err())
	if ms, err := c.PTTL(ctx, "room:ot:cd").Result(); err != nil || ms <= 0 || ms > time.Second {
		t.Fatalf("PTTL during the outage = %v, %v; want at most 1 s", ms, err)
	}
	must(c.Expire(ctx, "room:ot:lock", 30*time.Second).Err())
	must(c.HSet(ctx, "room:ot:h", "f", "v").Err())
	time.Sleep(1200 * time.Millisecond)
	if v, err := c.Get(ctx, "room:ot:cd").Result(); err != redis.Nil {
		t.Fatalf("GET during the outage of a key whose own TTL ran out = %q, %v; want nil", v, err)
	}
	time.Sleep(300 * time.Millisecond) // the held HSET reaches the store

	r.Restart()
	o.down.Store(false)
	if n := o.m.Resync(ctx, 100, slog.New(slog.DiscardHandler)); n != 1 {
		t.Fatalf("re-synced %d rooms, want 1", n)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	ttlWithin(t, direct, "room:ot:lock", 0, 30*time.Second)
	if in, _ := direct.SIsMember(ctx, rooms.OwnTTLKey("ot"), "room:ot:lock").Result(); !in {
		t.Fatal("after the re-sync the key is not listed as keeping its own TTL")
	}
	ttlWithin(t, direct, "room:ot:h", 3500*time.Second, 3600*time.Second)
	if n, _ := direct.Exists(ctx, "room:ot:cd").Result(); n != 0 {
		t.Fatal("the key whose own TTL ran out during the outage is in Redis")
	}
}
