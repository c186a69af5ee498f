package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
)

// afterPutStore calls hook after every Put the store took.
type afterPutStore struct {
	fallback.Store
	hook func(fallback.Room)
}

func (s *afterPutStore) Put(ctx context.Context, room fallback.Room) error {
	err := s.Store.Put(ctx, room)
	if err == nil {
		s.hook(room)
	}
	return err
}

// TestLifecycleWriteThatDoesNotReachRedis: the store takes a lifecycle
// write, and the link to redis-server then drops everything before the
// write reaches Redis (the store's Put adds the blackhole). The client gets
// an error, but the room is marked dirty, in the store too: it is read from
// the store (the new state, not Redis's older copy), and once the link is
// back the re-sync writes it to Redis (SPEC 4.5, "a failed Redis write").
// Before, the room stayed clean, and Redis served the state before the write
// from then on.
func TestLifecycleWriteThatDoesNotReachRedis(t *testing.T) {
	leakCheck(t)
	var tp *toxiproxy.Proxy
	var armed atomic.Bool
	g := startOutageRigWith(t, 500*time.Millisecond, viaToxiproxy(t, &tp), "", func(s fallback.Store) fallback.Store {
		return &afterPutStore{Store: s, hook: func(r fallback.Room) {
			if r.ID == "nl" && r.Status == "active" && armed.CompareAndSwap(true, false) {
				if err := setBlackhole(tp, true); err != nil {
					t.Error(err) // not Fatal: this runs in the proxy's goroutine
				}
			}
		}}
	})
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: g.p.Addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	defer c.Close()
	direct := redis.NewClient(&redis.Options{Addr: g.r.Addr})
	defer direct.Close()
	const waiting, active = `{"status":"waiting","seq":1}`, `{"status":"active","seq":2}`
	mustOK(t, c.Set(ctx, "room:nl", waiting, 0).Err())

	armed.Store(true)
	if err := c.Set(ctx, "room:nl", active, 0).Err(); err == nil {
		t.Fatal("the lifecycle write whose round trip was dropped was acknowledged")
	}
	stored, _, err := g.store.Get(ctx, "nl")
	if err != nil || stored.Status != "active" || !stored.Dirty {
		t.Fatalf("stored room: status %q, dirty %v (%v); want active and dirty", stored.Status, stored.Dirty, err)
	}
	if n := g.m.Stats().NotLanded; n != 1 {
		t.Errorf("lifecycle writes not landed: %d, want 1", n)
	}
	if v, err := c.Get(ctx, "room:nl").Result(); err != nil || v != active {
		t.Fatalf("read while Redis is cut off: %q, %v; want the stored state", v, err)
	}

	setBlackhole(tp, false)
	waitFor(t, 30*time.Second, func() bool {
		return g.up.Breaker().State() == backend.BreakerClosed && g.m.DegradedStats().Dirty == 0
	})
	if v, err := direct.Get(ctx, "room:nl").Result(); err != nil || v != active {
		t.Fatalf("Redis after the re-sync: %q, %v; want %q", v, err, active)
	}
	if v, err := c.Get(ctx, "room:nl").Result(); err != nil || v != active {
		t.Fatalf("read after the re-sync: %q, %v", v, err)
	}
	if stored, _, _ := g.store.Get(ctx, "nl"); stored.Dirty || stored.Status != "active" {
		t.Errorf("stored room after the re-sync: status %q, dirty %v", stored.Status, stored.Dirty)
	}
}
