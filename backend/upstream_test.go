package backend

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/testsupport"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var args = testsupport.Args

// TestConcurrentClientsKeepOrder: 50 clients submit batches of INCRs on
// their own key at once; batches are merged into shared round trips, and each
// client still sees 1, 2, 3, ... in order.
// Over TLS too: the workers and the streams dial through dialUpstream, which
// puts TLS over a sockio connection. Batches of 5 commands go to the streams
// through a leading caller (see lead), batches of 20 straight from theirs.
func TestConcurrentClientsKeepOrder(t *testing.T) {
	for _, tls := range []bool{false, true} {
		for _, stream := range []string{"never", "always"} {
			for _, per := range []int{5, 20} {
				t.Run(fmt.Sprintf("stream=%s/tls=%v/per=%d", stream, tls, per), func(t *testing.T) { testKeepOrder(t, stream, tls, per) })
			}
		}
	}
}

func testKeepOrder(t *testing.T, stream string, tls bool, per int) {
	r := testredis.Start(t, testredis.Options{TLS: tls})
	up, err := New(Config{URL: r.URL(), TLSCAFile: r.CAFile, Conns: 2, Stream: stream})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	const clients, rounds = 50, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := batch.New()
			key := fmt.Sprint("order:", c)
			next := 1
			for range rounds {
				b.Reset(2)
				for range per {
					b.Add(args("INCR", key), false)
				}
				up.Submit(b)
				b.Wait()
				for _, rep := range b.Replies {
					if want := ":" + strconv.Itoa(next) + "\r\n"; rep.Err != nil || string(rep.Raw) != want {
						errs <- fmt.Errorf("client %d: got %q (%v), want %q", c, rep.Raw, rep.Err, want)
						return
					}
					next++
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := up.Stats()
	if st.Commands != int64(clients*rounds*per) {
		t.Errorf("commands sent = %d, want %d", st.Commands, clients*rounds*per)
	}
	if st.Conns > 2 || st.StreamConns > streamCount(2) {
		t.Errorf("%d pooled and %d stream connections, want at most 2 and %d", st.Conns, st.StreamConns, streamCount(2))
	}
	if st.Streaming != (stream == "always") {
		t.Errorf("streaming = %v with Stream %q", st.Streaming, stream)
	}
	// The workers merge batches that wait together at the queue, and so does
	// a stream leader for batches under streamGroupMax; one round trip per batch
	// means neither did.
	if (stream == "never" || per < streamGroupMax) && st.RoundTrips >= int64(clients*rounds) {
		t.Errorf("%d client batches went upstream in %d round trips: none were merged", clients*rounds, st.RoundTrips)
	}
	t.Logf("%d client batches went upstream in %d round trips", clients*rounds, st.RoundTrips)
}

// TestWritesAreNeverRetried: after the upstream dies, a batch with a write
// fails at once; a read-only batch is retried and succeeds once the upstream
// is back within the deadline.
func TestWritesAreNeverRetried(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	// The breaker would open after a few failed attempts and end the retries
	// (TestBreaker* cover that); this test is about retries alone.
	up, err := New(Config{URL: r.URL(), Conns: 1, Timeout: 3 * time.Second, MaxRetries: 20, RetryDelay: 100 * time.Millisecond,
		Breaker: BreakerConfig{Failures: 1000, Timeouts: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	b := batch.New()
	b.Reset(2)
	b.Add(args("SET", "k", "v"), false)
	up.Submit(b)
	b.Wait()
	r.Kill()

	b.Reset(2)
	b.Add(args("SET", "k", "v2"), false)
	up.Submit(b)
	b.Wait()
	if b.Replies[0].Err == nil {
		t.Fatalf("write to a dead upstream: %q", b.Replies[0].Raw)
	}
	if up.Stats().Retries != 0 {
		t.Fatalf("a write was retried")
	}

	go func() { time.Sleep(300 * time.Millisecond); r.Restart() }()
	b.Reset(2)
	b.Add(args("GET", "k"), true)
	b.Add(args("EXISTS", "k"), true)
	up.Submit(b)
	b.Wait()
	if b.Replies[0].Err != nil || string(b.Replies[0].Raw) != "$-1\r\n" || string(b.Replies[1].Raw) != ":0\r\n" {
		t.Fatalf("read after restart: %+v", b.Replies)
	}
	if up.Stats().Retries == 0 {
		t.Fatalf("the read-only batch should have been retried")
	}
}

// TestIdleConnectionClosedByServer: the server closes a pooled connection
// while it is idle (a restart, a timeout, CLIENT KILL). go-redis's check
// before reuse must still find that, through sockio's connections, so that
// the next write goes out on a new connection instead of failing (a write is
// never retried). sockio runs the check for connections idle for a second or
// more.
func TestIdleConnectionClosedByServer(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	up, err := New(Config{URL: r.URL(), Conns: 1, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	set := func(v string) batch.Reply {
		b := batch.New()
		b.Reset(2)
		b.Add(args("SET", "k", v), false)
		up.Submit(b)
		b.Wait()
		return b.Replies[0]
	}
	if r := set("1"); r.Err != nil {
		t.Fatal(r.Err)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer direct.Close()
	if n, err := direct.ClientKillByFilter(context.Background(), "TYPE", "normal", "SKIPME", "yes").Result(); err != nil || n != 1 {
		t.Fatalf("CLIENT KILL: %d %v", n, err)
	}
	time.Sleep(1200 * time.Millisecond)
	if r := set("2"); r.Err != nil || string(r.Raw) != "+OK\r\n" {
		t.Fatalf("write after the server closed the idle connection: %q %v", r.Raw, r.Err)
	}
	if st := up.Stats(); st.Failures != 0 || st.Dials != 2 {
		t.Fatalf("stats %+v, want no failure and a second dial", st)
	}
}

// TestStreamKeepsTransactionsWhole: with streaming on, MULTI ... EXEC still
// runs contiguously (it takes the pipelined path).
func TestStreamKeepsTransactionsWhole(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	up, err := New(Config{URL: r.URL(), Stream: "always"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	b := batch.New()
	b.Reset(2)
	b.Tx = true
	b.Add(args("MULTI"), false)
	b.Add(args("INCR", "t"), false)
	b.Add(args("INCR", "t"), false)
	b.Add(args("EXEC"), false)
	up.Submit(b)
	b.Wait()
	if got := string(b.Replies[3].Raw); got != "*2\r\n:1\r\n:2\r\n" {
		t.Fatalf("EXEC = %q (%v)", got, b.Replies[3].Err)
	}
}

func TestClosedUpstreamFailsBatches(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	up, err := New(Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	up.Close()
	b := batch.New()
	b.Reset(2)
	b.Add(args("GET", "k"), true)
	up.Submit(b)
	b.Wait()
	if b.Replies[0].Err != errClosed {
		t.Fatalf("got %+v", b.Replies[0])
	}
}

// TestCloseWhileStreaming: Close while 20 clients keep submitting batches of
// both sizes to the streams (gathered and sent directly). Every batch
// submitted completes, with replies or an error, and Close returns with no
// goroutine left (TestMain's goleak).
func TestCloseWhileStreaming(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	up, err := New(Config{URL: r.URL(), Stream: "always"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var done, failed atomic.Int64
	stop := make(chan struct{})
	defer func() { // also when the test fails: the clients stop, then Close
		close(stop)
		all := make(chan struct{})
		go func() { wg.Wait(); close(all) }()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Error("a client's batch never completed")
		}
		up.Close()
	}()
	for c := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := batch.New()
			key := fmt.Sprint("close:", c)
			for i := 0; i < 1_000_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b.Reset(2)
				for range 1 + (i%2)*streamGroupMax {
					b.Add(args("INCR", key), false)
				}
				up.Submit(b)
				b.Wait()
				done.Add(1)
				if b.Replies[0].Err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	testsupport.Eventually(t, 10*time.Second, "200 batches", func() bool { return done.Load() >= 200 })
	closed := make(chan struct{})
	go func() {
		up.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10 s")
	}
	t.Logf("%d batches so far, %d failed", done.Load(), failed.Load())
	// The deferred function waits for every client's last batch.
}

// BenchmarkUpstream: 50 concurrent submitters of one-command batches (as 50
// redis-benchmark clients at -P 1) against a real redis-server.
func BenchmarkUpstream(b *testing.B) {
	r := testredis.Start(b, testredis.Options{})
	up, err := New(Config{URL: r.URL()})
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	set := batch.New()
	set.Reset(2)
	set.Add(args("SET", "key:1", "xxx"), false)
	up.Submit(set)
	set.Wait()
	if r := set.Replies[0]; r.Err != nil || string(r.Raw) != "+OK\r\n" {
		b.Fatalf("SET: %q %v", r.Raw, r.Err)
	}
	b.ReportAllocs()
	b.SetParallelism(25) // 50 goroutines on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		bt := batch.New()
		cmd := args("GET", "key:1")
		for pb.Next() {
			bt.Reset(2)
			bt.Add(cmd, true)
			up.Submit(bt)
			bt.Wait()
			if r := bt.Replies[0]; r.Err != nil || string(r.Raw) != "$3\r\nxxx\r\n" {
				b.Errorf("GET: %q %v", r.Raw, r.Err)
				return
			}
		}
	})
	st := up.Stats()
	b.ReportMetric(float64(st.Commands)/float64(st.RoundTrips), "cmds/roundtrip")
}

func TestParseInfo(t *testing.T) {
	info := "# Memory\r\nused_memory:1048576\r\nmaxmemory:2097152\r\n# Stats\r\nevicted_keys:42\r\n" +
		"# Replication\r\nrole:master\r\nslave0:ip=10.0.0.1,port=6379,state=online,offset=10,lag=3\r\nslave1:ip=x,port=1,state=online,offset=9,lag=7\r\n" +
		"# Keyspace\r\ndb0:keys=100,expires=5,avg_ttl=0\r\ndb1:keys=2,expires=0,avg_ttl=0\r\n"
	h := parseInfo(info)
	if h.UsedMemory != 1<<20 || h.MaxMemory != 2<<20 || h.EvictedKeys != 42 || h.Role != "master" || h.ReplicationLag != 7 || h.Keys != 102 {
		t.Fatalf("parseInfo = %+v", h)
	}
	if h := parseInfo("role:slave\r\nmaster_last_io_seconds_ago:4\r\n"); h.Role != "slave" || h.ReplicationLag != 4 {
		t.Fatalf("replica: %+v", h)
	}
}

// TestStreamingDecision: "auto" streams once the shortest recent round trip
// exceeds StreamAbove, but not on the evidence of the first few round trips,
// which include dialing (a burst of clients at start-up once opened the
// stream connections to a local Redis for nothing).
func TestStreamingDecision(t *testing.T) {
	e := &engine{up: &Upstream{cfg: Config{StreamAbove: 2 * time.Millisecond}}}
	for i := range minRTTSamples - 1 {
		e.observe(5 * time.Millisecond)
		if e.slow.Load() {
			t.Fatalf("slow after %d round trips", i+1)
		}
	}
	e.observe(5 * time.Millisecond)
	if !e.slow.Load() {
		t.Fatalf("not slow after %d round trips of 5 ms", minRTTSamples)
	}
	// One fast round trip in the window: the network is fast, load was slow.
	e.observe(100 * time.Microsecond)
	if e.slow.Load() {
		t.Fatal("still slow after a 100 µs round trip")
	}
	local := &engine{up: &Upstream{cfg: Config{StreamAbove: 2 * time.Millisecond}}}
	for range 1000 {
		local.observe(300 * time.Microsecond)
	}
	if local.slow.Load() {
		t.Fatal("a 300 µs upstream counts as slow")
	}
}
