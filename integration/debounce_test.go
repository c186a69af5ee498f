package integration

import (
	"context"
	"strconv"
	"strings"
	"sync"
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

// debounceSetup is redis-server + FerretDB + roomproxy with rooms on and
// state writes debounced, its flusher running until the test ends.
func debounceSetup(t *testing.T, cfg rooms.DebounceConfig) (*proxyUnderTest, *testredis.Server, *fallback.Mongo, *rooms.Debouncer) {
	t.Helper()
	r := testredis.Start(t, testredis.Options{})
	store, _ := startStore(t, "debounce_it", 5*time.Second)
	var d *rooms.Debouncer
	p := startProxyWith(t, backend.Config{URL: r.URL()}, func(up *backend.Upstream) proxy.Config {
		m := rooms.New(policy.DefaultRules(), store, wiring.Exec(up), nil)
		d = m.NewDebouncer(cfg)
		return proxy.Config{Rooms: m}
	})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(runCtx) }()
	// Registered after startProxyWith's cleanup, so it runs first: the
	// flusher stops before the upstream closes.
	t.Cleanup(func() { stop(); <-done })
	return p, r, store, d
}

// commandCalls reads calls per command from the server's INFO commandstats.
func commandCalls(t *testing.T, c *redis.Client) map[string]int64 {
	t.Helper()
	text, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(text, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}

func seqOf(t *testing.T, v string) int {
	t.Helper()
	i := strings.Index(v, `"seq":`)
	if i < 0 {
		t.Fatalf("no seq in %q", v)
	}
	rest := v[i+6:]
	end := strings.IndexAny(rest, ",}")
	n, err := strconv.Atoi(rest[:end])
	if err != nil {
		t.Fatalf("bad seq in %q", v)
	}
	return n
}

func stateDoc(status string, seq int) string {
	return `{"status":"` + status + `","seq":` + strconv.Itoa(seq) + `,"tick":"` + strings.Repeat("x", 40) + `"}`
}

// TestDebounceReadYourWrites: 10k SET-then-GET pairs on room keys from two
// connections of one proxy never read an older value than the last
// acknowledged one, for the state document, a hash field, and reads the
// pending value cannot answer (HGETALL, GETRANGE), which flush first.
func TestDebounceReadYourWrites(t *testing.T) {
	p, r, _, d := debounceSetup(t, rooms.DebounceConfig{})
	ctx := context.Background()
	w := redis.NewClient(&redis.Options{Addr: p.Addr, PoolSize: 1})
	defer w.Close()
	rd := redis.NewClient(&redis.Options{Addr: p.Addr, PoolSize: 1})
	defer rd.Close()
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()

	if err := w.Set(ctx, "room:ryw", stateDoc("active", 0), 0).Err(); err != nil { // lifecycle: created
		t.Fatal(err)
	}
	const pairs = 10000
	for i := 1; i <= pairs; i++ {
		switch i % 4 {
		case 0: // a hash field
			if err := w.HSet(ctx, "room:ryw:players", "p1", strconv.Itoa(i)).Err(); err != nil {
				t.Fatal(err)
			}
			v, err := rd.HGet(ctx, "room:ryw:players", "p1").Result()
			if err != nil || v != strconv.Itoa(i) {
				t.Fatalf("pair %d: HGET = %q, %v", i, v, err)
			}
			if i%40 == 0 { // a read the pending value cannot answer: flushed first
				all, err := rd.HGetAll(ctx, "room:ryw:players").Result()
				if err != nil || all["p1"] != strconv.Itoa(i) {
					t.Fatalf("pair %d: HGETALL = %v, %v", i, all, err)
				}
			}
		default: // the state document
			if err := w.Set(ctx, "room:ryw", stateDoc("active", i), 0).Err(); err != nil {
				t.Fatal(err)
			}
			var v string
			var err error
			if i%50 == 1 {
				v, err = rd.GetRange(ctx, "room:ryw", 0, -1).Result()
			} else {
				v, err = rd.Get(ctx, "room:ryw").Result()
			}
			if err != nil {
				t.Fatalf("pair %d: %v", i, err)
			}
			if got := seqOf(t, v); got < i {
				t.Fatalf("pair %d: read seq %d, older than the acknowledged %d", i, got, i)
			}
		}
	}
	st := d.Stats()
	if st.Coalesced == 0 || st.PendingReads == 0 {
		t.Fatalf("nothing was debounced: %+v", st)
	}
	// Redis gets the last values once the window has passed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, _ := direct.Get(ctx, "room:ryw").Result()
		f, _ := direct.HGet(ctx, "room:ryw:players", "p1").Result()
		if v == stateDoc("active", pairs-1) && f == strconv.Itoa(pairs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis holds %q and p1=%q, want the last acknowledged values", v, f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ttlWithin(t, direct, "room:ryw:players", 3500*time.Second, 3600*time.Second)
	t.Logf("debounce: %+v", st)
}

// TestDebounceHotKey: 100k writes a second to one room key for 5 s reach
// the upstream at most 2 times a second, and the final value is the last
// acknowledged one, in Redis and, after ROOM.FLUSH, in the room store.
func TestDebounceHotKey(t *testing.T) {
	p, r, store, d := debounceSetup(t, rooms.DebounceConfig{})
	ctx := context.Background()
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, PoolSize: 8})
	defer c.Close()
	if err := c.Set(ctx, "room:hot", stateDoc("active", 0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	before := commandCalls(t, direct)

	const (
		writers  = 4
		perBatch = 250
		rate     = 100000 // writes a second, all writers together
		length   = 5 * time.Second
	)
	var seq atomic.Int64
	var lastAcked atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stopAt := start.Add(length)
	// Each writer sends pipelines of perBatch writes, paced so that all
	// writers together offer rate writes a second; each pipeline's last
	// sequence number is acknowledged when its replies are in. Writers are
	// serialised per pipeline so that acknowledgement order is seq order.
	var order sync.Mutex
	interval := time.Duration(float64(time.Second) * perBatch * writers / rate)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for time.Now().Before(stopAt) {
				order.Lock()
				pipe := c.Pipeline()
				var last int64
				for range perBatch {
					last = seq.Add(1)
					pipe.Set(ctx, "room:hot", stateDoc("active", int(last)), 0)
				}
				_, err := pipe.Exec(ctx)
				if err == nil {
					lastAcked.Store(last)
				}
				order.Unlock()
				if err != nil {
					t.Errorf("pipeline: %v", err)
					return
				}
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	last := int(lastAcked.Load())
	if v, err := c.Get(ctx, "room:hot").Result(); err != nil || seqOf(t, v) != last {
		t.Fatalf("GET through the proxy = %q, %v; want seq %d", v, err, last)
	}
	if err := c.Do(ctx, "ROOM.FLUSH", "hot").Err(); err != nil {
		t.Fatal(err)
	}
	elapsed2 := time.Since(start)
	after := commandCalls(t, direct)
	sets := after["set"] - before["set"]
	allowed := int64(2*elapsed2.Seconds()) + 2 // 2 a second, plus the first and the ROOM.FLUSH
	t.Logf("%d writes acknowledged in %v (%.0f/s); %d reached Redis (%d EVAL and EVALSHA calls)",
		last, elapsed.Round(time.Millisecond), float64(last)/elapsed.Seconds(), sets,
		after["eval"]+after["evalsha"]-before["eval"]-before["evalsha"])
	if sets > allowed {
		t.Fatalf("%d upstream writes of the key in %v, want at most %d (2 a second)", sets, elapsed2, allowed)
	}
	if v, err := direct.Get(ctx, "room:hot").Result(); err != nil || seqOf(t, v) != last {
		t.Fatalf("Redis holds %q, %v; want seq %d", v, err, last)
	}
	room, found, err := store.Get(ctx, "hot")
	if err != nil || !found || seqOf(t, string(room.Keys["room:hot"].String)) != last {
		t.Fatalf("store holds %+v (found %v, %v); want seq %d", room.Keys["room:hot"], found, err, last)
	}
	if st := d.Stats(); st.Coalesced < int64(last)-2 {
		t.Fatalf("coalesced %d of %d writes", st.Coalesced, last)
	}
}

// TestFlushesUseEvalsha: a debounced room's flushes reach Redis as EVALSHA
// (the script's digest, not its 1.4 KB of text); when Redis's script cache
// has been emptied (SCRIPT FLUSH, as after a restart or a failover), the
// next flush is answered NOSCRIPT, is sent again as EVAL, and its writes
// still land.
func TestFlushesUseEvalsha(t *testing.T) {
	p, r, _, _ := debounceSetup(t, rooms.DebounceConfig{Window: time.Hour}) // flushed by ROOM.FLUSH only
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	if err := c.Set(ctx, "room:sha", stateDoc("active", 0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	flush := func(value string) (eval, evalsha int64) {
		t.Helper()
		before := commandCalls(t, direct)
		if err := c.Set(ctx, "room:sha:pos", value, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Do(ctx, "ROOM.FLUSH", "sha").Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := direct.Get(ctx, "room:sha:pos").Result(); err != nil || v != value {
			t.Fatalf("Redis holds %q, %v after the flush; want %q", v, err, value)
		}
		after := commandCalls(t, direct)
		return after["eval"] - before["eval"], after["evalsha"] - before["evalsha"]
	}
	flush("warm") // the first flush may load the script
	if eval, evalsha := flush("1"); eval != 0 || evalsha == 0 {
		t.Fatalf("a flush sent %d EVAL and %d EVALSHA calls; want EVALSHA only", eval, evalsha)
	}
	if err := direct.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if eval, _ := flush("2"); eval == 0 {
		t.Fatal("after SCRIPT FLUSH the flush was not sent again as EVAL")
	}
	if eval, evalsha := flush("3"); eval != 0 || evalsha == 0 {
		t.Fatalf("once reloaded, a flush sent %d EVAL and %d EVALSHA calls; want EVALSHA only", eval, evalsha)
	}
}

// TestDebounceOrderAndLifecycle: a command that is not coalesced flushes the
// room first, so Redis applies effects in acknowledgement order; completing
// the room flushes it and stores the last state write with it.
func TestDebounceOrderAndLifecycle(t *testing.T) {
	p, r, store, d := debounceSetup(t, rooms.DebounceConfig{Window: time.Hour}) // nothing flushes by time
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	if err := c.Set(ctx, "room:ord", stateDoc("active", 0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, "room:ord:counter", "10", 0)
	if v, _ := direct.Exists(ctx, "room:ord:counter").Result(); v != 0 {
		t.Fatal("a debounced write reached Redis before its window")
	}
	// INCR is not coalesced: the pending SET reaches Redis first.
	if n, err := c.Incr(ctx, "room:ord:counter").Result(); err != nil || n != 11 {
		t.Fatalf("INCR = %d, %v; want 11 (the pending SET applied first)", n, err)
	}
	// A pending string read as a hash is Redis's WRONGTYPE, not a proxy answer.
	c.Set(ctx, "room:ord:s", "x", 0)
	if err := c.HGet(ctx, "room:ord:s", "f").Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		t.Fatalf("HGET on a pending string = %v, want WRONGTYPE", err)
	}
	// WATCH of a key with a pending write flushes it first.
	c.Set(ctx, "room:ord:w", "pending", 0)
	if err := c.Watch(ctx, func(tx *redis.Tx) error {
		if v, _ := direct.Get(ctx, "room:ord:w").Result(); v != "pending" {
			t.Errorf("under WATCH redis-server holds %q, want the pending write", v)
		}
		return nil
	}, "room:ord:w"); err != nil {
		t.Fatal(err)
	}
	// The first HSET of a key Redis holds as a string: Redis's own error.
	direct.Set(ctx, "room:ord:wt", "x", 0)
	if err := c.HSet(ctx, "room:ord:wt", "f", "v").Err(); err == nil || !strings.HasPrefix(err.Error(), "WRONGTYPE") {
		t.Fatalf("HSET on a string = %v, want WRONGTYPE", err)
	}
	// SET with a client TTL shorter than the policy's keeps it.
	c.Set(ctx, "room:ord:short", "v", 30*time.Second)
	c.Set(ctx, "room:ord", stateDoc("active", 1), 0)
	if err := c.Set(ctx, "room:ord", stateDoc("completed", 2), 0).Err(); err != nil {
		t.Fatal(err)
	}
	room, found, err := store.Get(ctx, "ord")
	if err != nil || !found || room.Status != "completed" || string(room.Keys["room:ord:s"].String) != "x" ||
		string(room.Keys["room:ord:counter"].String) != "11" || string(room.Keys["room:ord:short"].String) != "v" {
		t.Fatalf("stored room = %+v, %v, %v", room, found, err)
	}
	if n, _ := direct.Exists(ctx, "room:ord", "room:ord:s", "room:ord:counter").Result(); n != 0 {
		t.Fatalf("%d keys of the completed room are still in Redis", n)
	}
	if st := d.Stats(); st.PendingKeys != 0 {
		t.Fatalf("pending after completion: %+v", st)
	}
}

// TestDebounceClientTTL: a state write with the client's own short TTL is
// flushed with it, and a pending write whose TTL ran out reads as gone.
func TestDebounceClientTTL(t *testing.T) {
	p, r, _, _ := debounceSetup(t, rooms.DebounceConfig{Window: 300 * time.Millisecond})
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	c.Set(ctx, "room:ttl", stateDoc("active", 0), 0)
	c.Set(ctx, "room:ttl:a", "v", 20*time.Second)
	c.Do(ctx, "PSETEX", "room:ttl:gone", "50", "v")
	time.Sleep(100 * time.Millisecond)
	if err := c.Get(ctx, "room:ttl:gone").Err(); err != redis.Nil {
		t.Fatalf("GET of an expired pending write = %v, want nil", err)
	}
	if err := c.Do(ctx, "ROOM.FLUSH", "ttl").Err(); err != nil {
		t.Fatal(err)
	}
	ttlWithin(t, direct, "room:ttl:a", 15*time.Second, 20*time.Second)
	if n, _ := direct.Exists(ctx, "room:ttl:gone").Result(); n != 0 {
		t.Fatal("an expired pending write reached Redis")
	}
}

// TestSnapshotsWithDebouncingOff: with debouncing off (DEBOUNCE_WINDOW_MS=0)
// a write that is not a lifecycle write still reaches the store with the
// room's next periodic snapshot (SPEC 4.3, 4.4), and at SIGTERM (Drain):
// Redis losing its data loses none of them.
func TestSnapshotsWithDebouncingOff(t *testing.T) {
	p, r, store, d := debounceSetup(t, rooms.DebounceConfig{Window: -1, PersistInterval: 200 * time.Millisecond})
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	mustOK(t, c.Set(ctx, "room:off", stateDoc("active", 0), 0).Err())
	mustOK(t, c.HIncrBy(ctx, "room:off:score", "p1", 5).Err())
	mustOK(t, c.Set(ctx, "room:off:pos", "3,4", 0).Err())
	if direct.Exists(ctx, "room:off:pos").Val() != 1 {
		t.Fatal("with debouncing off a state write is not written at once")
	}
	stored := func() (score, pos string) {
		room, _, err := store.Get(ctx, "off")
		mustOK(t, err)
		return string(room.Keys["room:off:score"].Hash["p1"]), string(room.Keys["room:off:pos"].String)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		score, pos := stored()
		if score == "5" && pos == "3,4" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store holds score %q, pos %q 10 s after the writes; want 5, 3,4", score, pos)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A write just before SIGTERM: Drain stores it.
	mustOK(t, c.HIncrBy(ctx, "room:off:score", "p1", 1).Err())
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	mustOK(t, d.Drain(dctx))
	if score, _ := stored(); score != "6" {
		t.Fatalf("after Drain the store holds score %q, want 6", score)
	}
}
