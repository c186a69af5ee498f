package integration

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/testmongo"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/wiring"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/proxy"
	"github.com/roomproxy/roomproxy/rooms"
)

// outageRig is redis-server + FerretDB + roomproxy wired as cmd/roomproxy
// wires it: breaker, debouncer, rooms served from the store during
// outages, re-sync when the breaker closes.
type outageRig struct {
	p     *proxyUnderTest
	r     *testredis.Server
	store *fallback.Mongo
	m     *rooms.Manager
	up    *backend.Upstream
	mdb   *testmongo.Server
}

func startOutageRig(t *testing.T, timeout time.Duration) *outageRig {
	return startOutageRigVia(t, timeout, nil, "")
}

// startOutageRigVia puts via (a toxiproxy, say) between the proxy and
// redis-server: via gets the server's address and returns the one to dial.
// stream is the upstream's streaming mode (backend.Config.Stream; "" is the
// default, auto).
func startOutageRigVia(t *testing.T, timeout time.Duration, via func(addr string) string, stream string) *outageRig {
	t.Helper()
	return startOutageRigWith(t, timeout, via, stream, nil)
}

// startOutageRigWith is startOutageRigVia whose room manager uses
// wrap(store) (nil: the store itself), to watch or disturb its calls.
func startOutageRigWith(t *testing.T, timeout time.Duration, via func(addr string) string, stream string, wrap func(fallback.Store) fallback.Store) *outageRig {
	t.Helper()
	g := &outageRig{r: testredis.Start(t, testredis.Options{})}
	url := g.r.URL()
	if via != nil {
		url = "redis://" + via(g.r.Addr)
	}
	g.store, g.mdb = startStore(t, "outage_load", 2*time.Second)
	scratch, err := backend.NewScratch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(scratch.Close)
	var d *rooms.Debouncer
	var stopResync func()
	g.p = startProxyWith(t, backend.Config{URL: url, Timeout: timeout, Stream: stream}, func(up *backend.Upstream) proxy.Config {
		g.up = up
		var store fallback.Store = g.store
		if wrap != nil {
			store = wrap(store)
		}
		g.m = rooms.New(policy.DefaultRules(), store, wiring.Exec(up), nil)
		d = g.m.NewDebouncer(rooms.DebounceConfig{})
		// Before the proxy serves, as in cmd/roomproxy: sessions read the
		// manager's outage setting without a lock.
		stopResync = wiring.ServeRoomsDuringOutages(up, g.m, scratch, 500, slog.New(slog.DiscardHandler))
		return proxy.Config{Rooms: g.m, Limits: proxy.Limits{UpstreamTimeout: timeout}}
	})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done; stopResync() })
	return g
}

// roomHistory is what the load acknowledged for one room.
type roomHistory struct {
	key       string
	seq       atomic.Int64 // last acknowledged state seq
	status    atomic.Value // last acknowledged status
	completed atomic.Bool
}

// TestUpstreamKilledUnderRoomLoad is the outage issue's first demonstration:
// 100 rooms writing their state 10 times a second, with lifecycle changes
// and reads from other connections; redis-server is killed, then restarted
// empty. Room reads never get an error, the breaker opens within about a
// second, no acknowledged lifecycle write is lost, every active room is
// back in Redis after the restart, and no read is ever older than the last
// acknowledged write. It logs the read p99 during the outage and the time
// to recover. Through the pooled workers and through the full-duplex streams
// (a remote upstream's path), one after the other: each is a load of its own.
func TestUpstreamKilledUnderRoomLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("two 12 s loads with an outage")
	}
	for _, stream := range []string{"never", "always"} {
		t.Run("stream="+stream, func(t *testing.T) { upstreamKilledUnderRoomLoad(t, stream) })
	}
}

func upstreamKilledUnderRoomLoad(t *testing.T, stream string) {
	leakCheck(t)
	g := startOutageRigVia(t, time.Second, nil, stream)
	ctx := context.Background()
	const nRooms = 100
	hist := make([]*roomHistory, nRooms)
	c := redis.NewClient(&redis.Options{Addr: g.p.Addr, PoolSize: 32, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	defer c.Close()
	for i := range hist {
		h := &roomHistory{key: fmt.Sprintf("room:L%d", i)}
		if err := c.Set(ctx, h.key, stateDoc("waiting", 0), 0).Err(); err != nil {
			t.Fatal(err)
		}
		c.HSet(ctx, h.key+":players", "p1", "0")
		if err := c.Set(ctx, h.key, stateDoc("active", 1), 0).Err(); err != nil {
			t.Fatal(err)
		}
		h.seq.Store(1)
		h.status.Store("active")
		hist[i] = h
	}

	var (
		stop                  = make(chan struct{})
		wg                    sync.WaitGroup
		readErrs, stale, nils atomic.Int64
		writeErrs             atomic.Int64
		mu                    sync.Mutex
		reads                 []timedRead
		firstErr              atomic.Value
	)
	start := time.Now()
	// Writers: one per room, 10 state writes a second; rooms 0, 10, 20 ...
	// complete during the outage and rooms 1, 11, 21 ... after it.
	for i, h := range hist {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			completeAt := map[int]time.Duration{0: 5 * time.Second, 1: 9500 * time.Millisecond}[i%10]
			for seq := int64(2); ; seq++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				status := "active"
				if completeAt > 0 && time.Since(start) > completeAt {
					status = "completed"
				}
				if err := c.Set(ctx, h.key, stateDoc(status, int(seq)), 0).Err(); err != nil {
					writeErrs.Add(1)
					firstErr.CompareAndSwap(nil, "write: "+err.Error())
					continue
				}
				h.seq.Store(seq)
				h.status.Store(status)
				if status == "completed" {
					h.completed.Store(true)
					return
				}
				if seq%10 == 0 {
					c.HSet(ctx, h.key+":players", "p1", strconv.FormatInt(seq, 10))
				}
			}
		}()
	}
	// Readers: 4 connections reading every room's state in turn.
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc := redis.NewClient(&redis.Options{Addr: g.p.Addr, PoolSize: 1, MaxRetries: -1, ReadTimeout: 10 * time.Second})
			defer rc.Close()
			for n := r; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				h := hist[n%nRooms]
				want, wasCompleted := h.seq.Load(), h.completed.Load()
				t0 := time.Now()
				v, err := rc.Get(ctx, h.key).Result()
				took := time.Since(t0)
				mu.Lock()
				reads = append(reads, timedRead{at: t0, took: took})
				mu.Unlock()
				switch {
				case err == redis.Nil:
					if !wasCompleted && !h.completed.Load() {
						nils.Add(1) // an active room read as missing
					}
				case err != nil:
					readErrs.Add(1)
					firstErr.CompareAndSwap(nil, "read: "+err.Error())
				case int64(seqOf(t, v)) < want:
					stale.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	time.Sleep(3 * time.Second)
	g.r.Kill()
	killAt := time.Now()
	openAfter := waitFor(t, 10*time.Second, func() bool { return g.up.Breaker().State() != backend.BreakerClosed })
	time.Sleep(4*time.Second - openAfter)
	// Rooms created during the outage: lifecycle writes to the store alone.
	for i := range 5 {
		if err := c.Set(ctx, fmt.Sprintf("room:N%d", i), stateDoc("active", 1), 0).Err(); err != nil {
			t.Errorf("creating a room during the outage: %v", err)
		}
	}
	g.r.Restart()
	restartAt := time.Now()
	recoverAfter := waitFor(t, 60*time.Second, func() bool {
		return g.up.Breaker().State() == backend.BreakerClosed && g.m.DegradedStats().Dirty == 0
	})
	time.Sleep(max(12*time.Second-time.Since(start), time.Second))
	close(stop)
	wg.Wait()

	// Held state writes go out; then Redis and the store are checked.
	for _, h := range hist {
		c.Do(ctx, "ROOM.FLUSH", strings.TrimPrefix(h.key, "room:"))
	}
	direct := redis.NewClient(&redis.Options{Addr: g.r.Addr})
	defer direct.Close()
	lost, notBack := 0, 0
	for _, h := range hist {
		id := strings.TrimPrefix(h.key, "room:")
		room, found, err := g.store.Get(ctx, id)
		if err != nil || !found || room.Status != h.status.Load().(string) {
			lost++
			t.Errorf("%s: stored status %q (%v, %v), last acknowledged %q", h.key, room.Status, found, err, h.status.Load())
		}
		if h.completed.Load() {
			continue
		}
		v, err := direct.Get(ctx, h.key).Result()
		if err != nil || int64(seqOf(t, v)) != h.seq.Load() {
			notBack++
			t.Errorf("%s in Redis after the restart: %q, %v; want seq %d", h.key, v, err, h.seq.Load())
		}
	}
	for i := range 5 {
		if room, found, _ := g.store.Get(ctx, fmt.Sprintf("N%d", i)); !found || room.Status != "active" {
			t.Errorf("room N%d created during the outage: stored %v %q", i, found, room.Status)
		}
		if n, _ := direct.Exists(ctx, fmt.Sprintf("room:N%d", i)).Result(); n != 1 {
			t.Errorf("room N%d created during the outage is not in Redis after the re-sync", i)
		}
	}

	var during, all []time.Duration
	for _, r := range reads {
		all = append(all, r.took)
		if r.at.After(killAt) && r.at.Before(restartAt) {
			during = append(during, r.took)
		}
	}
	fs := g.m.DegradedStats()
	t.Logf("breaker open %v after the kill; outage %v; recovered (closed, every dirty room back in Redis) %v after the restart",
		openAfter.Round(time.Millisecond), restartAt.Sub(killAt).Round(time.Millisecond), recoverAfter.Round(time.Millisecond))
	t.Logf("reads: %d in all (p99 %v), %d during the outage (p50 %v, p99 %v, max %v); %d errors, %d stale, %d active rooms read as missing",
		len(all), pct(all, 99), len(during), pct(during, 50), pct(during, 99), pct(during, 100), readErrs.Load(), stale.Load(), nils.Load())
	t.Logf("store path: %d reads, %d writes, %d errors, %d rooms re-synced; %d state writes failed", fs.Reads, fs.Writes, fs.Errors, fs.Resynced, writeErrs.Load())
	if readErrs.Load() > 0 || stale.Load() > 0 || nils.Load() > 0 {
		t.Fatalf("room reads: %d errors, %d stale, %d missing (first error: %v)", readErrs.Load(), stale.Load(), nils.Load(), firstErr.Load())
	}
	if lost > 0 || notBack > 0 {
		t.Fatalf("%d rooms lost an acknowledged lifecycle write, %d active rooms not back in Redis", lost, notBack)
	}
	if len(during) == 0 {
		t.Fatal("no read ran during the outage")
	}
	// One outage, one opening: a second one would mean the recovery let
	// traffic onto connections the outage broke.
	if st := g.up.Stats().Breaker; st.Transitions[backend.BreakerClosed][backend.BreakerOpen] != 1 {
		t.Errorf("the breaker opened %d times: %+v", st.Transitions[backend.BreakerClosed][backend.BreakerOpen], st)
	}
}

type timedRead struct {
	at   time.Time
	took time.Duration
}

// pct is the p-th percentile of ds (p = 100: the maximum).
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s) - 1) * p / 100
	return s[i].Round(10 * time.Microsecond)
}

// waitFor polls cond every 5 ms until it holds and returns how long that
// took; it fails the test after limit.
func waitFor(t *testing.T, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}
