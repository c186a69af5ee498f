package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/rs/zerolog"
)

// TestBlackholeRoomReads: the upstream stops answering (no RST, no reply).
// Room reads under way wait at most the op deadline (then the store answers
// them), reads after the breaker opens are answered from the store at once,
// and once the link is back the breaker closes and Redis serves again.
func TestBlackholeRoomReads(t *testing.T) {
	leakCheck(t)
	var tp *toxiproxy.Proxy
	const deadline = 500 * time.Millisecond
	g := startOutageRigVia(t, deadline, viaToxiproxy(t, &tp), "")
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: g.p.Addr, PoolSize: 32, MaxRetries: -1, ReadTimeout: 20 * time.Second})
	defer c.Close()
	const nRooms = 10
	for i := range nRooms {
		key := fmt.Sprintf("room:B%d", i)
		if err := c.Set(ctx, key, stateDoc("active", 1), 0).Err(); err != nil {
			t.Fatal(err)
		}
		c.Set(ctx, key, stateDoc("active", 2), 0)
		c.Do(ctx, "ROOM.FLUSH", fmt.Sprintf("B%d", i))
	}
	if err := setBlackhole(tp, true); err != nil {
		t.Fatal(err)
	}
	holeAt := time.Now()
	var (
		mu          sync.Mutex
		worst       time.Duration
		afterOpen   []time.Duration
		errs        []string
		wg          sync.WaitGroup
		opened      time.Time
		openedKnown bool
	)
	for r := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Since(holeAt) < 3*time.Second; n++ {
				key := fmt.Sprintf("room:B%d", (r+n)%nRooms)
				t0 := time.Now()
				v, err := c.Get(ctx, key).Result()
				took := time.Since(t0)
				mu.Lock()
				if took > worst {
					worst = took
				}
				if !openedKnown && g.up.Breaker().State() != backend.BreakerClosed {
					opened, openedKnown = time.Now(), true
				}
				if openedKnown && t0.After(opened) {
					afterOpen = append(afterOpen, took)
				}
				if err != nil || seqOf(t, v) != 2 {
					errs = append(errs, fmt.Sprintf("%s: %q %v", key, v, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d room reads failed during the blackhole, first: %s", len(errs), errs[0])
	}
	if !openedKnown {
		t.Fatal("the breaker did not open on a blackhole")
	}
	t.Logf("blackhole: breaker open %v after it began; worst read %v (deadline %v); after the opening p50 %v, p99 %v over %d reads",
		opened.Sub(holeAt).Round(time.Millisecond), worst.Round(time.Millisecond), deadline, pct(afterOpen, 50), pct(afterOpen, 99), len(afterOpen))
	// The bound is structural, not a speed: a read waits for its round trip
	// (the deadline) and then for the store (its own deadline, 5 s).
	if limit := deadline + 5*time.Second; worst > limit {
		t.Fatalf("a read waited %v, more than the op deadline plus the store's (%v)", worst, limit)
	}

	setBlackhole(tp, false)
	waitFor(t, 30*time.Second, func() bool { return g.up.Breaker().State() == backend.BreakerClosed })
	if v, err := c.Get(ctx, "room:B3").Result(); err != nil || seqOf(t, v) != 2 {
		t.Fatalf("after the blackhole: %q, %v", v, err)
	}
	if err := c.Set(ctx, "plain", "x", 0).Err(); err != nil {
		t.Fatalf("a non-room write after the blackhole: %v", err)
	}
}

// setBlackhole makes tp drop everything both ways (toxiproxy's timeout toxic
// with no timeout), or stop doing so.
func setBlackhole(tp *toxiproxy.Proxy, on bool) error {
	for _, stream := range []string{"upstream", "downstream"} {
		if !on {
			tp.Toxics.RemoveToxic(context.Background(), "hole-"+stream)
			continue
		}
		js := fmt.Sprintf(`{"name":"hole-%s","type":"timeout","stream":%q,"toxicity":1,"attributes":{"timeout":0}}`, stream, stream)
		if _, err := tp.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			return err
		}
	}
	return nil
}

// viaToxiproxy puts an in-process toxiproxy between the proxy and
// redis-server (for startOutageRigVia) and hands it back in *tp.
func viaToxiproxy(t *testing.T, tp **toxiproxy.Proxy) func(addr string) string {
	return func(addr string) string {
		srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
		*tp = toxiproxy.NewProxy(srv, "redis", "127.0.0.1:0", addr)
		if err := (*tp).Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*tp).Stop)
		return (*tp).Listen
	}
}
