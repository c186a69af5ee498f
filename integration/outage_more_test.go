package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
)

// TestFlappingUpstream: the link to the upstream goes down and up every
// 300 ms for 4 s while 20 rooms write and 10 readers read. No read fails or
// goes backwards, and once the link is stable every room's last
// acknowledged state is in Redis and in the store.
func TestFlappingUpstream(t *testing.T) {
	if testing.Short() {
		t.Skip("a flapping link for 4 s")
	}
	leakCheck(t)
	var tp *toxiproxy.Proxy
	g := startOutageRigVia(t, 500*time.Millisecond, viaToxiproxy(t, &tp), "")
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: g.p.Addr, PoolSize: 32, MaxRetries: -1, ReadTimeout: 20 * time.Second})
	defer c.Close()
	const nRooms = 20
	acked := make([]atomic.Int64, nRooms)
	for i := range nRooms {
		if err := c.Set(ctx, fmt.Sprintf("room:F%d", i), stateDoc("active", 0), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writeErrs, readErrs, stale, backwards atomic.Int64
	var firstErr atomic.Value
	for i := range nRooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 1; ; seq++ {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if err := c.Set(ctx, fmt.Sprintf("room:F%d", i), stateDoc("active", seq), 0).Err(); err != nil {
					writeErrs.Add(1)
					firstErr.CompareAndSwap(nil, "write: "+err.Error())
					continue
				}
				acked[i].Store(int64(seq))
			}
		}()
	}
	for r := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := make([]int, nRooms)
			for n := r; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := n % nRooms
				want := acked[i].Load()
				v, err := c.Get(ctx, fmt.Sprintf("room:F%d", i)).Result()
				switch {
				case err != nil:
					readErrs.Add(1)
					firstErr.CompareAndSwap(nil, "read: "+err.Error())
				case int64(seqOf(t, v)) < want:
					stale.Add(1)
				case seqOf(t, v) < seen[i]:
					backwards.Add(1)
				default:
					seen[i] = seqOf(t, v)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	for range 7 { // down 300 ms, up 300 ms
		tp.Stop()
		time.Sleep(300 * time.Millisecond)
		if err := tp.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	recovered := waitFor(t, 60*time.Second, func() bool {
		return g.up.Breaker().State() == backend.BreakerClosed && g.m.DegradedStats().Dirty == 0
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	for i := range nRooms {
		c.Do(ctx, "ROOM.FLUSH", fmt.Sprintf("F%d", i))
	}
	direct := redis.NewClient(&redis.Options{Addr: g.r.Addr})
	defer direct.Close()
	for i := range nRooms {
		key := fmt.Sprintf("room:F%d", i)
		v, err := direct.Get(ctx, key).Result()
		if err != nil || int64(seqOf(t, v)) != acked[i].Load() {
			t.Errorf("%s in Redis: %q, %v; want seq %d", key, v, err, acked[i].Load())
		}
		room, _, err := g.store.Get(ctx, fmt.Sprintf("F%d", i))
		if err != nil || int64(seqOf(t, string(room.Keys[key].String))) != acked[i].Load() {
			t.Errorf("%s in the store: %q, %v; want seq %d", key, room.Keys[key].String, err, acked[i].Load())
		}
	}
	bs := g.up.Breaker().Stats()
	t.Logf("flapping: breaker opened %d times; recovered %v after the last flap; %d writes failed, %d reads failed, %d stale, %d backwards; store path %+v",
		bs.Transitions[backend.BreakerClosed][backend.BreakerOpen], recovered.Round(time.Millisecond), writeErrs.Load(), readErrs.Load(), stale.Load(), backwards.Load(), g.m.DegradedStats())
	if readErrs.Load()+stale.Load()+backwards.Load() > 0 {
		t.Fatalf("reads: %d failed, %d stale, %d went backwards (first error %v)", readErrs.Load(), stale.Load(), backwards.Load(), firstErr.Load())
	}
}

// TestStoreDownUpstreamUp: MongoDB is gone while Redis is fine. State
// writes keep flowing (acknowledged, read back, in Redis); lifecycle
// writes are refused, never +OK; the writes Redis has are held, within the
// pending caps, until the store is back.
func TestStoreDownUpstreamUp(t *testing.T) {
	leakCheck(t)
	g := startOutageRig(t, time.Second)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: g.p.Addr, MaxRetries: -1, ReadTimeout: 20 * time.Second})
	defer c.Close()
	if err := c.Set(ctx, "room:m1", stateDoc("active", 1), 0).Err(); err != nil {
		t.Fatal(err)
	}
	g.mdb.Stop()
	for seq := 2; seq <= 20; seq++ {
		if err := c.Set(ctx, "room:m1", stateDoc("active", seq), 0).Err(); err != nil {
			t.Fatalf("a state write with the store down: %v", err)
		}
	}
	if v, err := c.Get(ctx, "room:m1").Result(); err != nil || seqOf(t, v) != 20 {
		t.Fatalf("GET = %q, %v", v, err)
	}
	err := c.Set(ctx, "room:m1", stateDoc("completed", 21), 0).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN room store unavailable") {
		t.Fatalf("a lifecycle write with the store down = %v, want -TRYAGAIN room store unavailable", err)
	}
	if err := c.Set(ctx, "room:new", stateDoc("waiting", 0), 0).Err(); err == nil {
		t.Fatal("creating a room with the store down was acknowledged")
	}
	direct := redis.NewClient(&redis.Options{Addr: g.r.Addr})
	defer direct.Close()
	waitFor(t, 10*time.Second, func() bool {
		v, _ := direct.Get(ctx, "room:m1").Result()
		return v != "" && seqOf(t, v) == 20
	})
	if st := g.m.Debouncer().Stats(); st.PendingKeys == 0 {
		t.Fatalf("the state writes are not held for the store: %+v", st)
	}
}

// TestBothDown: Redis and MongoDB are both gone. Room reads and lifecycle
// writes get errors, promptly (bounded by the deadlines), never a hang and
// never +OK for a lifecycle write.
func TestBothDown(t *testing.T) {
	leakCheck(t)
	g := startOutageRig(t, 500*time.Millisecond)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: g.p.Addr, MaxRetries: -1, ReadTimeout: 30 * time.Second})
	defer c.Close()
	if err := c.Set(ctx, "room:b1", stateDoc("active", 1), 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Do(ctx, "ROOM.FLUSH", "b1")
	g.r.Kill()
	g.mdb.Stop()
	start := time.Now()
	if err := c.Get(ctx, "room:b1").Err(); err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Fatalf("a room read with both down = %v, want -TRYAGAIN", err)
	}
	if err := c.Set(ctx, "room:b1", stateDoc("completed", 2), 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Fatalf("a lifecycle write with both down = %v, want -TRYAGAIN", err)
	}
	if err := c.Get(ctx, "plain").Err(); err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN upstream unavailable") {
		t.Fatalf("a plain read with both down = %v", err)
	}
	t.Logf("both down: a room read, a lifecycle write and a plain read answered with errors in %v", time.Since(start).Round(time.Millisecond))
}
