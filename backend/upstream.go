package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/internal/sockio"
)

// Config configures the upstream. The zero value of a field means its default.
type Config struct {
	// URL is REDIS_URL: rediss://user:pass@host:port (TLS, certificate and host
	// name verified, TLS 1.2+) or redis:// for a local server.
	URL string
	// TLSCAFile is REDIS_TLS_CA: an extra PEM CA bundle trusted for rediss://.
	TLSCAFile string
	// Timeout bounds one upstream round trip, dial included, and reaches the
	// socket as its deadline. Default 5 s (REDIS_TIMEOUT_MS).
	Timeout time.Duration
	// Conns is the number of upstream connections per RESP version, and the
	// number of round trips in flight at once. Default 4.
	Conns int
	// MaxRetries is how many times a round trip made only of read-only
	// commands is retried after a connection failure (REDIS_MAX_RETRIES,
	// default 10). A round trip that contains a write is never retried: after
	// an ambiguous failure the write may have happened.
	MaxRetries int
	// RetryDelay is the pause before a retry (REDIS_RETRY_DELAY_MS, default 100 ms).
	RetryDelay time.Duration
	// ConnMaxIdle recycles a connection idle this long, before a hosted Redis
	// drops it. Default 4 min.
	ConnMaxIdle time.Duration
	// MaxBatch caps the commands of one upstream round trip. Default 8192.
	MaxBatch int
	// PipelineWait is how long a batch may wait for a round trip in flight to
	// finish before another connection starts one (see engine.work). Default
	// 200 µs; negative means never wait.
	PipelineWait time.Duration
	// Stream selects go-redis's full-duplex autopipeliner for client batches:
	// each of (Conns+1)/2 held connections (streams) has a writer and a
	// reader goroutine, and a batch is written as soon as it arrives instead
	// of waiting for a free connection. "auto" (the default) streams once the
	// measured upstream round trip exceeds StreamAbove, as it does for a
	// remote Upstash; "always" and "never" force it. Transactions (MULTI ...
	// EXEC) always take the pipelined path.
	Stream string
	// StreamAbove is the minimum round trip above which "auto" streams.
	// Default 2 ms.
	StreamAbove time.Duration
	// MaxLanes caps the dedicated upstream connections per RESP version, used
	// by blocking commands and by transactions that WATCH (MAX_BLOCKING,
	// default 128).
	MaxLanes int
	// PubSubPing is how often an idle subscription connection is checked with
	// a PING (billed); 0 means the default 30 s, negative turns it off.
	PubSubPing time.Duration
	Logger     *slog.Logger
	// OnRoundTrip, if set, is called after every upstream round trip with its
	// duration (for a latency histogram). It must be fast and safe for
	// concurrent use.
	OnRoundTrip func(time.Duration)
	// Breaker configures the circuit breaker in front of the upstream.
	Breaker BreakerConfig
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Conns <= 0 {
		c.Conns = 4
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = 100 * time.Millisecond
	}
	if c.ConnMaxIdle <= 0 {
		c.ConnMaxIdle = 4 * time.Minute
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 8192
	}
	if c.Stream == "" {
		c.Stream = "auto"
	}
	if c.StreamAbove <= 0 {
		c.StreamAbove = 2 * time.Millisecond
	}
	if c.PipelineWait == 0 {
		c.PipelineWait = 200 * time.Microsecond
	}
	if c.MaxLanes <= 0 {
		c.MaxLanes = 128
	}
	if c.PubSubPing == 0 {
		c.PubSubPing = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Options turns the configuration into go-redis options for one RESP version.
// Errors name the variable and never contain the URL, which holds a password.
func (c Config) Options(proto int) (*redis.Options, error) {
	c = c.withDefaults()
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		return nil, errors.New("REDIS_URL: want redis://host:port or rediss://user:password@host:port")
	}
	if u.Query().Has("skip_verify") {
		return nil, errors.New("REDIS_URL: skip_verify is not allowed; roomproxy always verifies the upstream certificate")
	}
	opt, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, errors.New("REDIS_URL: not a valid Redis URL")
	}
	if opt.DB != 0 {
		return nil, errors.New("REDIS_URL: only database 0 is supported")
	}
	if opt.TLSConfig != nil {
		host, _, _ := net.SplitHostPort(opt.Addr)
		opt.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("REDIS_TLS_CA: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("REDIS_TLS_CA: no PEM certificate found")
			}
			opt.TLSConfig.RootCAs = pool
		}
	} else if c.TLSCAFile != "" {
		return nil, errors.New("REDIS_TLS_CA is set but REDIS_URL is not rediss://")
	}
	opt.Protocol = proto
	opt.PoolSize = c.Conns
	opt.PipelinePoolSize = -1 // every round trip is a pipeline: one pool
	opt.MinIdleConns = 0
	opt.MaxRetries = -1 // retries are decided here, per batch, by idempotence
	opt.ContextTimeoutEnabled = true
	opt.DialTimeout = c.Timeout
	// One dial attempt: go-redis's default retries a refused dial 5 times
	// 100 ms apart, so every round trip to a dead upstream would wait 0.4 s
	// before failing. The breaker and the read-only retries above decide what
	// happens after a failure.
	opt.DialerRetries = 1
	opt.ReadTimeout = c.Timeout
	opt.WriteTimeout = c.Timeout
	opt.PoolTimeout = c.Timeout
	opt.ConnMaxIdleTime = c.ConnMaxIdle
	opt.DisableIdentity = true // no CLIENT SETINFO: every upstream command is billed
	return opt, nil
}

// dialUpstream is the dialer of the round-trip workers and of the streams.
// It dials as go-redis's own dialer does (its keep-alive settings, TLS when
// tlsCfg is set), over a sockio connection: their reads and writes are raw
// non-blocking system calls, like the client sockets' (see internal/sockio).
// Lanes and subscriptions keep go-redis's dialer: they are not the hot path,
// and go-redis peeks into their sockets for pushed data, which
// sockio.Conn.SyscallConn would hide from it for a second after each read.
// The streams' reader reads every frame as it comes and does not peek.
// The workers' connections are added to track (see engine.abandon).
func dialUpstream(ctx context.Context, network, addr string, timeout time.Duration, tlsCfg *tls.Config, track *connSet) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 30 * time.Second, Interval: 5 * time.Second, Count: 3,
	}}
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	nc = sockio.Wrap(nc)
	if track != nil {
		nc = track.add(nc) // under TLS: the interruption reaches the socket
	}
	if tlsCfg == nil {
		return nc, nil
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc := tls.Client(nc, tlsCfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		nc.Close()
		return nil, err
	}
	return tc, nil
}

// Stats are the upstream's counters since start.
type Stats struct {
	Commands    int64 // commands sent upstream, each one billable
	RoundTrips  int64 // pipelines sent
	Failures    int64 // round trips that failed
	Retries     int64 // read-only round trips retried
	Dials       int64 // upstream connections opened
	Conns       int   // pooled upstream connections open now (pipelined round trips)
	StreamConns int   // held full-duplex connections open now
	Streaming   bool  // batches take the full-duplex path now
	Lanes       int   // dedicated connections (WATCH, blocking commands), idle or in use
	Breaker     BreakerStats
}

// Upstream forwards batches to Redis: all client connections share a few
// upstream connections, and batches that arrive while a connection is busy
// are merged into its next round trip (auto-pipelining). Each client's batch
// stays whole and in order inside one round trip, and a client never has two
// batches in flight, so per-client order is kept.
type Upstream struct {
	cfg     Config
	engines [2]*engine // RESP2 and RESP3, so replies pass through byte for byte
	lanes   [2]lanePool
	breaker *Breaker
	prober  *redis.Client // the breaker's probe: one connection of its own

	commands   atomic.Int64
	roundTrips atomic.Int64
	failures   atomic.Int64
	retries    atomic.Int64
	dials      atomic.Int64
	lastLog    atomic.Int64 // unix nanoseconds of the last failure log line
}

// quietLogger drops go-redis's own log lines: they can carry the upstream's
// address. roomproxy logs upstream failures itself, without it.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...interface{}) {}

var silenceDriver sync.Once

// New connects lazily: it checks the configuration and starts the workers but
// dials nothing until the first command.
func New(cfg Config) (*Upstream, error) {
	cfg = cfg.withDefaults()
	silenceDriver.Do(func() { redis.SetLogger(quietLogger{}) })
	u := &Upstream{cfg: cfg}
	for i := range u.lanes {
		u.lanes[i].free = make(chan struct{}, 1)
	}
	for i, proto := range []int{2, 3} {
		opt, err := cfg.Options(proto)
		if err != nil {
			return nil, err
		}
		opt.OnConnect = func(context.Context, *redis.Conn) error {
			u.dials.Add(1)
			return nil
		}
		u.engines[i] = newEngine(u, opt)
	}
	popt, _ := cfg.Options(2)
	popt.PoolSize, popt.MaxActiveConns = 1, 1
	popt.OnConnect = func(context.Context, *redis.Conn) error {
		u.dials.Add(1)
		return nil
	}
	u.prober = redis.NewClient(popt)
	u.breaker = newBreaker(cfg.Breaker, cfg.Timeout, cfg.Logger, func(ctx context.Context) error {
		u.commands.Add(1)
		return u.prober.Ping(ctx).Err()
	})
	u.breaker.OnChange(func(tr Transition) {
		if tr.To == BreakerOpen {
			for _, e := range u.engines {
				e.abandon()
				e.renewStreams()
			}
			u.abortInFlight()
		}
	})
	return u, nil
}

// Breaker is the circuit breaker guarding the upstream.
func (u *Upstream) Breaker() *Breaker { return u.breaker }

// Submit queues a batch for the next round trip on an upstream connection of
// the batch's RESP version. It blocks while every connection is busy and the
// queue is full, which slows readers down instead of growing memory. While the
// circuit breaker is not closed the batch fails at once: every reply is
// ErrUnavailable and nothing is sent.
func (u *Upstream) Submit(b *batch.Batch) {
	if !u.breaker.allows() {
		u.reject(b)
		return
	}
	u.engine(b.Proto).submit(b)
}

// SubmitRecovery is Submit for the breaker's OnRecover hook (a re-sync
// before traffic is let back): while the breaker is recovering it runs b on
// the caller's goroutine, past the breaker, and its outcome is not counted
// (the hook's error decides). In any other state it is Submit.
func (u *Upstream) SubmitRecovery(b *batch.Batch) {
	if u.breaker.State() != BreakerRecovering {
		u.Submit(b)
		return
	}
	e := u.engine(b.Proto)
	e.roundTrip(e.client.Pipeline(), []*batch.Batch{b}, &rawCmds{}, nil)
}

func (u *Upstream) engine(proto int) *engine {
	if proto == 3 {
		return u.engines[1]
	}
	return u.engines[0]
}

// reject fails a batch that the breaker kept from the upstream.
func (u *Upstream) reject(b *batch.Batch) {
	u.breaker.reject()
	b.Fail(ErrUnavailable)
}

// Ping checks that the upstream answers; it is one billable command. It is
// not guarded by the circuit breaker (health checks ask even while it is
// open) and its outcome is not counted.
func (u *Upstream) Ping(ctx context.Context) error {
	u.commands.Add(1)
	return u.engines[0].client.Ping(ctx).Err()
}

// Stats returns the counters.
func (u *Upstream) Stats() Stats {
	s := Stats{
		Commands: u.commands.Load(), RoundTrips: u.roundTrips.Load(),
		Failures: u.failures.Load(), Retries: u.retries.Load(), Dials: u.dials.Load(),
		Breaker: u.breaker.Stats(),
	}
	for _, e := range u.engines {
		s.Conns += int(e.client.PoolStats().TotalConns)
		if ss := e.streams.Load(); ss != nil {
			for _, c := range ss.clients {
				ps := c.PoolStats()
				s.StreamConns += int(ps.TotalConns)
				if ps.PipelineStats != nil {
					s.StreamConns += int(ps.PipelineStats.TotalConns)
				}
			}
		}
		s.Streaming = s.Streaming || e.streaming()
	}
	for i := range u.lanes {
		p := &u.lanes[i]
		p.mu.Lock()
		s.Lanes += p.total
		p.mu.Unlock()
	}
	return s
}

// Close fails queued batches' waiters only after running them: it stops
// accepting batches, lets the workers finish what is queued, and closes the
// connections.
func (u *Upstream) Close() error {
	u.breaker.close()
	u.closeLanes()
	errs := []error{u.prober.Close()}
	for _, e := range u.engines {
		errs = append(errs, e.close())
	}
	return errors.Join(errs...)
}

// errClosed answers batches submitted after Close.
var errClosed = errors.New("upstream closed")

// engine is the pipelining forwarder for one RESP version.
type engine struct {
	up     *Upstream
	client *redis.Client
	queue  chan *batch.Batch

	token chan struct{} // held by the one worker waiting at the queue

	newStreams func() *streamSet         // nil when streaming is off (Stream "never")
	streams    atomic.Pointer[streamSet] // the full-duplex streams now (see Config.Stream)
	toStreams  streamGather              // batches for the streams (see lead)
	next       atomic.Uint32             // round robin over the streams
	rttMu      sync.Mutex                // protects the round-trip window below
	rttMin     [2]time.Duration          // minimum round trip in the previous and the current window
	rttN       int                       // round trips in the current window
	slow       atomic.Bool               // the windowed minimum round trip exceeds StreamAbove

	mu        sync.Mutex    // protects inflight, lastStart and done
	inflight  int           // round trips under way
	lastStart time.Time     // when the latest round trip started
	done      chan struct{} // closed at the end of each round trip

	// cancels holds each worker's round trip in flight, so that the breaker
	// opening can end them (see abandon).
	cancels []atomic.Value // of context.CancelFunc (a func value: storing it does not allocate)
	// afterAdmit, when set (by tests, before any traffic), runs in each
	// guarded round trip right after the breaker admitted it.
	afterAdmit func()
	// pooled is the workers' connections, for abandon.
	pooled *connSet

	closeMu sync.RWMutex // protects closed against sends on a closed queue
	closed  bool
	wg      sync.WaitGroup // the workers
}

func newEngine(up *Upstream, opt *redis.Options) *engine {
	popt := *opt
	popt.PipelinePoolSize = -1 // pipelined round trips use the main pool
	tlsCfg, timeout := opt.TLSConfig, up.cfg.Timeout
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialUpstream(ctx, network, addr, timeout, tlsCfg, nil)
	}
	e := &engine{up: up, queue: make(chan *batch.Batch, 1024),
		token: make(chan struct{}, 1), done: make(chan struct{}), pooled: &connSet{}}
	popt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialUpstream(ctx, network, addr, timeout, tlsCfg, e.pooled)
	}
	e.client = redis.NewClient(&popt)
	e.token <- struct{}{}
	if up.cfg.Stream != "never" {
		sopt := *opt
		sopt.PoolSize, sopt.PipelinePoolSize = 1, 1
		sopt.Dialer = dial
		e.newStreams = func() *streamSet { return newStreamSet(&sopt, streamCount(up.cfg.Conns)) }
		if ss := e.newStreams(); ss != nil {
			e.streams.Store(ss)
		} else {
			e.newStreams = nil
		}
	}
	e.cancels = make([]atomic.Value, up.cfg.Conns)
	for i := range up.cfg.Conns {
		e.wg.Add(1)
		go e.work(&e.cancels[i])
	}
	return e
}

// streamSet is an engine's full-duplex streams: go-redis keeps one
// autopipeliner per client, on one held connection, so each stream is a
// client of its own. None dials before it is used.
type streamSet struct {
	aps     []*redis.AutoPipeliner
	clients []*redis.Client
}

// newStreamSet returns n streams, or nil if go-redis refuses the
// full-duplex options (then the engine does not stream).
func newStreamSet(opt *redis.Options, n int) *streamSet {
	s := &streamSet{}
	for range n {
		c := redis.NewClient(opt)
		ap, err := c.AutoPipelineWithOptions(&redis.AutoPipelineOptions{FullDuplex: true, MaxBatchSize: 512})
		if err != nil {
			c.Close()
			s.close()
			return nil
		}
		s.aps = append(s.aps, ap)
		s.clients = append(s.clients, c)
	}
	return s
}

func (s *streamSet) close() {
	for i, ap := range s.aps {
		ap.Close()
		s.clients[i].Close()
	}
}

// renewStreams replaces the streams with new ones, which dial when first
// used, and closes the old ones (calls still on them fail). Called when the
// breaker opens: a stream holds its connection, and one the outage broke
// could still be held when the breaker closes, failing the first batches
// after the recovery and opening the breaker again. The pooled connections
// do not need this: go-redis checks a pooled connection that was idle before
// it reuses it.
func (e *engine) renewStreams() {
	if e.newStreams == nil {
		return
	}
	e.closeMu.RLock()
	defer e.closeMu.RUnlock()
	if e.closed {
		return
	}
	ss := e.newStreams()
	if ss == nil {
		return
	}
	old := e.streams.Swap(ss)
	e.wg.Add(1)
	go func() { // closing waits for calls in flight; the breaker's listener must not
		defer e.wg.Done()
		old.close()
	}()
}

// streamCount is how many full-duplex streams an engine with conns pooled
// connections keeps: half as many, at least one. A stream has no round trip
// to wait for, so one carries what several pooled connections do (at 15 ms,
// one stream kept 0.97 to 0.98 of direct Redis's -P 16 throughput, two
// 0.99 to 1.00); the pooled connections stay open for transactions, so
// every stream is one more upstream connection.
func streamCount(conns int) int { return (conns + 1) / 2 }

func (e *engine) submit(b *batch.Batch) {
	switch {
	case !e.streaming() || b.Tx:
		e.enqueue(b)
	case b.Len() >= streamGroupMax:
		// A group of its own anyway: sent from this goroutine, without
		// gathering (and without holding closeMu for the round trip:
		// streamed may need it to hand the batch to the workers).
		if e.whileOpen(b, func() { e.wg.Add(1) }) {
			e.streamed([]*batch.Batch{b}, b.Len())
		}
	default:
		lead := false
		e.whileOpen(b, func() {
			if lead = e.toStreams.add(b); lead {
				e.wg.Add(1) // for the leader's last group, which streamed ends
			}
		})
		if lead {
			e.lead()
		}
	}
}

// enqueue hands b to the pipelined workers.
func (e *engine) enqueue(b *batch.Batch) {
	e.whileOpen(b, func() { e.queue <- b })
}

// whileOpen runs f, which sends b on (to a queue, or to the wait group of
// calls in flight), while the engine cannot close, and reports whether it
// did; on a closed engine it fails b instead. Close waits for it, so nothing
// is sent on a closed queue or added to the wait group after Close waits.
func (e *engine) whileOpen(b *batch.Batch, f func()) bool {
	e.closeMu.RLock()
	defer e.closeMu.RUnlock()
	if e.closed {
		b.Fail(errClosed)
		return false
	}
	f()
	return true
}

// streaming reports whether batches should take the full-duplex path now.
func (e *engine) streaming() bool {
	if e.newStreams == nil {
		return false
	}
	switch e.up.cfg.Stream {
	case "always":
		return true
	case "auto":
		return e.slow.Load()
	}
	return false
}

// streamGroupMax is how many commands a stream leader puts in one group
// before it stops adding batches.
const streamGroupMax = 16

// streamGather holds the batches submitted for the streams until a leader
// sends them (see lead).
type streamGather struct {
	mu      sync.Mutex
	queued  []*batch.Batch
	leading bool // a session is leading: it will send what is queued
}

// add queues b and reports whether the caller is to lead.
func (g *streamGather) add(b *batch.Batch) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queued = append(g.queued, b)
	if g.leading {
		return false
	}
	g.leading = true
	return true
}

// take removes the first batches queued, up to max commands (at least one
// batch), and reports whether any remain; if none do, leading ends.
func (g *streamGather) take(max int) (group []*batch.Batch, n int, more bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := 0
	for k < len(g.queued) && (k == 0 || n+g.queued[k].Len() <= max) {
		n += g.queued[k].Len()
		k++
	}
	group = append([]*batch.Batch(nil), g.queued[:k]...)
	rest := copy(g.queued, g.queued[k:])
	clear(g.queued[rest:])
	g.queued = g.queued[:rest]
	more = rest > 0
	g.leading = more
	return group, n, more
}

// lead sends the batches queued for the streams, its own session's among
// them, as contiguous FDPipelined calls, on the goroutine of the session
// that found no leader; sessions that submit meanwhile only queue. A
// stream's writer writes what is queued when it runs, and a session that
// submits readies the writer to run next, so batches submitted straight
// from the sessions went out one write each: at 15 ms -P 1 that was one
// upstream write per command. The leader yields once first, so that the
// other sessions the poller made runnable at the same time queue theirs;
// nothing waits for more than that. It sends the last group itself and
// waits for its replies, as its session would wait for its batch anyway;
// groups before it (only when more than streamGroupMax commands were
// queued) each go on a goroutine of their own. Leading on the session's
// goroutine instead of a gathering goroutine that started one per group
// saves two goroutine switches per group and the new goroutine's stack
// growth: 7 to 10 % of the proxy's CPU per command at 15 ms -P 1.
//
// A group stops growing at streamGroupMax commands: FDPipelined returns when
// the group's last reply is in, so every batch of a group waits for the
// whole group. Unbounded, the groups at 15 ms -P 16 (50 pipelines of 16)
// cost 2 to 4 % of throughput; bounded, a group gathers single commands
// (where one write per command was the cost) and leaves a pipeline alone.
func (e *engine) lead() {
	runtime.Gosched()
	for {
		group, n, more := e.toStreams.take(streamGroupMax)
		if !more {
			e.streamed(group, n)
			return
		}
		e.wg.Add(1)
		go e.streamed(group, n)
	}
}

// streamed runs batches (n commands) as one contiguous batch on a
// full-duplex stream. If the stream refuses them, having sent nothing, they
// go to the pipelined workers instead.
//
// The breaker admits them again here, as it admits each of the workers'
// round trips when it starts: it may have opened since Submit, and its
// renewStreams replaced the streams. Batches admitted before the opening
// must not reach the new streams: they would dial the upstream that is down,
// and go-redis then answers every later dial of that stream with the cached
// error until its once-a-second redial succeeds, which can be after the
// breaker has closed again (the first batches after a recovery failed and
// opened it a second time). The streams are read between two looks at the
// breaker, so they are the ones of the state the batches are admitted in.
func (e *engine) streamed(batches []*batch.Batch, n int) {
	defer e.wg.Done()
	br := e.up.breaker
	ticket, ok := br.admit()
	ss := e.streams.Load()
	if now, _ := br.admit(); !ok || now != ticket {
		for _, b := range batches {
			e.up.reject(b)
		}
		return
	}
	nargs := 0
	for _, b := range batches {
		nargs += argCount(b.Cmds)
	}
	cmds := make([]redis.Cmder, 0, n)
	ia := argsFor(nargs)
	for _, b := range batches {
		for _, args := range b.Cmds {
			cmds = append(cmds, redis.NewRawCmd(context.Background(), ia.next(args)...))
		}
	}
	ap := ss.aps[int(e.next.Add(1))%len(ss.aps)]
	start := time.Now()
	err := ap.FDPipelined(context.Background(), cmds)
	if errors.Is(err, redis.ErrFDPipelineDiverts) || errors.Is(err, redis.ErrFDPipelineUnavailable) {
		for _, b := range batches {
			e.enqueue(b)
		}
		return
	}
	e.observe(time.Since(start))
	e.up.account(len(cmds), err)
	for _, b := range batches {
		bc := cmds[:b.Len()]
		cmds = cmds[b.Len():]
		br.record(ticket, outcomeOf(err, bc))
		for i, c := range bc {
			b.Replies[i] = replyOf(c.(*redis.RawCmd), err)
		}
		b.Done()
	}
}

// minRTTSamples is how many round trips the first streaming decision waits for.
const minRTTSamples = 8

// observe records one round trip for streaming decisions and metrics. The upstream counts as slow when the
// shortest round trip of the last 256 to 512 exceeds StreamAbove: the
// minimum is the network's share, while averages also grow with load (a busy
// local Redis is not a remote one).
func (e *engine) observe(d time.Duration) {
	if f := e.up.cfg.OnRoundTrip; f != nil {
		f(d)
	}
	e.rttMu.Lock()
	defer e.rttMu.Unlock()
	if e.rttN == 0 || d < e.rttMin[1] {
		e.rttMin[1] = d
	}
	e.rttN++
	if e.rttN == 256 {
		e.rttMin[0], e.rttN = e.rttMin[1], 0
		e.slow.Store(e.rttMin[0] > e.up.cfg.StreamAbove)
		return
	}
	if e.rttMin[0] == 0 {
		// First window: decide once there is some evidence. Not on the very
		// first round trips: they include dialing, and a burst of clients
		// arriving at once can delay them past StreamAbove on a local Redis,
		// which would open the stream connections for nothing.
		if e.rttN >= minRTTSamples {
			e.slow.Store(e.rttMin[1] > e.up.cfg.StreamAbove)
		}
	} else {
		e.slow.Store(min(e.rttMin[0], e.rttMin[1]) > e.up.cfg.StreamAbove)
	}
}

func (e *engine) close() error {
	e.closeMu.Lock()
	if !e.closed {
		e.closed = true
		close(e.queue)
	}
	e.closeMu.Unlock()
	if ss := e.streams.Load(); ss != nil {
		ss.close() // after closed is set: renewStreams no longer swaps
	}
	e.wg.Wait()
	return e.client.Close()
}

// work is one worker: one upstream connection's round trips. Workers take
// turns at the queue: only the holder of the token waits for work, so a
// batch arriving while every connection is idle does not wake them all.
//
// The holder does not start a round trip the moment a batch arrives if
// another round trip began less than PipelineWait ago and is still in
// flight: on a fast upstream that one is about to finish, and waiting for it
// gathers more clients into the next pipeline (fewer writes for the proxy and
// for Redis). On a slow upstream the wait runs out first, so up to Conns
// round trips overlap and a client waits at most PipelineWait for a start.
func (e *engine) work(inflight *atomic.Value) {
	defer e.wg.Done()
	pipe := e.client.Pipeline()
	var batches []*batch.Batch
	var cmds rawCmds
	for {
		<-e.token
		b, ok := <-e.queue
		if !ok {
			e.token <- struct{}{} // let the next worker see the closed queue
			return
		}
		batches = append(batches[:0], b)
		e.gather(&batches, b.Len())
		e.token <- struct{}{}
		e.roundTrip(pipe, batches, &cmds, inflight)
		e.finished()
		clear(batches)
		cmds.reset()
	}
}

// gather waits for its turn (see work) while adding queued batches, then
// takes whatever else is queued, up to MaxBatch commands in all.
func (e *engine) gather(batches *[]*batch.Batch, n int) {
	e.mu.Lock()
	busy, since, done := e.inflight > 0, time.Since(e.lastStart), e.done
	e.mu.Unlock()
	max := e.up.cfg.MaxBatch
	if wait := e.up.cfg.PipelineWait - since; busy && wait > 0 {
		timer := time.NewTimer(wait)
	wait:
		for n < max {
			select {
			case more, ok := <-e.queue:
				if !ok {
					break wait
				}
				*batches = append(*batches, more)
				n += more.Len()
			case <-done:
				break wait
			case <-timer.C:
				break wait
			}
		}
		timer.Stop()
	}
collect:
	for n < max {
		select {
		case more, ok := <-e.queue:
			if !ok {
				break collect
			}
			*batches = append(*batches, more)
			n += more.Len()
		default:
			break collect
		}
	}
	e.mu.Lock()
	e.inflight++
	e.lastStart = time.Now()
	e.mu.Unlock()
}

// finished records the end of a round trip and wakes a worker waiting for it.
func (e *engine) finished() {
	e.mu.Lock()
	e.inflight--
	close(e.done)
	e.done = make(chan struct{})
	e.mu.Unlock()
}

// roundTrip sends batches as one pipeline and hands out the replies. A
// worker's round trip is guarded: the breaker admits each attempt (batches
// that waited in the queue while it opened fail fast) and counts its outcome,
// and inflight holds its cancel function while it runs. OnRecover's round
// trips (inflight nil) are not guarded.
func (e *engine) roundTrip(pipe redis.Pipeliner, batches []*batch.Batch, rc *rawCmds, inflight *atomic.Value) {
	guarded := inflight != nil
	cfg := &e.up.cfg
	br := e.up.breaker
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	if guarded {
		// Before the admission: the breaker can open between admit and any
		// later point, and its abandon must then find this round trip (an
		// earlier version stored it after admit, and a batch admitted in that
		// gap waited out its whole deadline after the opening).
		inflight.Store(cancel)
		defer inflight.Store(context.CancelFunc(noop))
	}
	ticket, ok := br.admit()
	if guarded && !ok {
		for _, b := range batches {
			e.up.reject(b)
		}
		return
	}
	if guarded && e.afterAdmit != nil {
		e.afterAdmit()
	}
	readOnly := true
	n, nargs := 0, 0
	for _, b := range batches {
		readOnly = readOnly && b.ReadOnly
		n += b.Len()
		nargs += argCount(b.Cmds)
	}
	rc.size(n)
	ia := argsFor(nargs)
	i := 0
	for _, b := range batches {
		b.Arena.Reset()
		for _, args := range b.Cmds {
			rc.set(ctx, i, &b.Arena, ia.next(args))
			i++
		}
	}
	cmds := rc.list
	pipe.BatchProcess(ctx, cmds...)
	start := time.Now()
	err := e.exec(ctx, pipe, len(cmds))
	if guarded {
		br.record(ticket, rc.outcome(batches, err))
	}
	if err == nil {
		e.observe(time.Since(start))
	}
	for attempt := 0; err != nil && readOnly && attempt < cfg.MaxRetries && ctx.Err() == nil; attempt++ {
		e.up.retries.Add(1)
		select {
		case <-time.After(cfg.RetryDelay):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if ticket, ok = br.admit(); guarded && !ok {
			// The breaker opened meanwhile: stop waiting for the upstream.
			// The batches only read, so nothing took effect.
			for _, b := range batches {
				e.up.reject(b)
			}
			return
		}
		rc.clear(batches)
		pipe.BatchProcess(ctx, cmds...)
		err = e.exec(ctx, pipe, len(cmds))
		if guarded {
			br.record(ticket, rc.outcome(batches, err))
		}
	}
	rc.each(batches, err, func(b *batch.Batch, j int, r batch.Reply) { b.Replies[j] = r })
	for _, b := range batches {
		b.Done()
	}
}

// rawCmds is a worker's storage for one round trip's commands, kept between
// round trips: the command values themselves, so that a command costs go-redis
// no allocation of its own, and the list of them handed to the pipeline.
// go-redis streams each reply into its batch's Arena (RawWriteToCmd), where
// RawCmd would allocate a copy of every reply.
type rawCmds struct {
	vals []redis.RawWriteToCmd
	list []redis.Cmder
}

// size makes room for n commands; it must come before set, which points into
// vals.
func (r *rawCmds) size(n int) {
	if cap(r.vals) < n {
		r.vals = make([]redis.RawWriteToCmd, n)
		r.list = make([]redis.Cmder, n)
	}
	r.vals, r.list = r.vals[:n], r.list[:n]
}

func (r *rawCmds) set(ctx context.Context, i int, w io.Writer, args []interface{}) {
	r.vals[i] = *redis.NewRawWriteToCmd(ctx, w, args...)
	r.list[i] = &r.vals[i]
}

// clear readies the commands and the batches' arenas for another attempt.
func (r *rawCmds) clear(batches []*batch.Batch) {
	for _, b := range batches {
		b.Arena.Reset()
	}
	for i := range r.vals {
		r.vals[i].SetErr(nil)
		r.vals[i].SetVal(0)
	}
}

// each calls f with every command's reply after a round trip that ended with
// pipeErr, in order: its raw bytes in the batch's arena, or the error that
// kept them from arriving. The commands of batches[k] come k-th, in order.
func (r *rawCmds) each(batches []*batch.Batch, pipeErr error, f func(b *batch.Batch, j int, r batch.Reply)) {
	i := 0
	for _, b := range batches {
		off := 0
		for j := range b.Cmds {
			n, err := r.vals[i].Result()
			i++
			raw := b.Arena.Slice(off, off+int(n))
			off += int(n)
			if err == nil && n == 0 {
				err = pipeErr
			}
			if err != nil {
				f(b, j, batch.Reply{Err: generic(err)})
				continue
			}
			f(b, j, batch.Reply{Raw: raw})
		}
	}
}

// outcome is outcomeOf for a worker's round trip.
func (r *rawCmds) outcome(batches []*batch.Batch, err error) error {
	if err != nil {
		return err
	}
	var fault error
	r.each(batches, nil, func(_ *batch.Batch, _ int, rep batch.Reply) {
		if fault == nil && rep.Err == nil {
			fault = replyFault(rep.Raw)
		}
	})
	return fault
}

// reset drops what the last round trip referenced (arguments, replies), and
// storage a huge round trip grew.
func (r *rawCmds) reset() {
	if cap(r.vals) > 1024 {
		*r = rawCmds{}
		return
	}
	clear(r.vals)
	clear(r.list)
}

// abandon ends the round trips in flight: called when the breaker opens, so
// that a blackholed upstream does not keep batches that were already sent
// waiting out the rest of their deadline. Their replies are the cancellation
// (the upstream may or may not have run them); the breaker excludes it.
// Cancelling a round trip's context stops it only before it reads: go-redis
// does not end a read in progress when the context is cancelled, only at the
// context's deadline. So the connections with a read in progress are
// interrupted too (connSet.interrupt).
func (e *engine) abandon() {
	for i := range e.cancels {
		if c, ok := e.cancels[i].Load().(context.CancelFunc); ok {
			c()
		}
	}
	e.pooled.interrupt()
}

// errAbandoned is the error of a read on a connection abandon interrupted;
// it is a cancellation (errors.Is context.Canceled), which the breaker
// excludes.
var errAbandoned = fmt.Errorf("upstream round trip abandoned when the circuit breaker opened: %w", context.Canceled)

// connSet is the open connections of an engine's pool.
type connSet struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func (s *connSet) add(nc net.Conn) net.Conn {
	c := &trackedConn{Conn: nc, set: s}
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*trackedConn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return c
}

// interrupt ends the reads in progress on the set's connections, and every
// later read and write on them: a connection whose replies were not all read
// is of no more use, and go-redis drops a connection whose read failed.
// Connections with no read in progress are left alone.
func (s *connSet) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.reading.Load() > 0 {
			c.abandoned.Store(true)
			c.Conn.SetReadDeadline(time.Unix(1, 0))
		}
	}
}

// trackedConn is a pooled upstream connection that knows whether a read is
// in progress on it (see connSet.interrupt).
type trackedConn struct {
	net.Conn
	set       *connSet
	reading   atomic.Int32
	abandoned atomic.Bool
}

func (c *trackedConn) Read(p []byte) (int, error) {
	c.reading.Add(1)
	n, err := 0, errAbandoned
	if !c.abandoned.Load() {
		n, err = c.Conn.Read(p)
	}
	c.reading.Add(-1)
	if err != nil && c.abandoned.Load() {
		err = errAbandoned
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	if c.abandoned.Load() {
		return 0, errAbandoned
	}
	return c.Conn.Write(p)
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

// SyscallConn is the socket's, for go-redis's check of a pooled connection
// before reuse (it looks for syscall.Conn); an abandoned connection fails
// the check, so that go-redis drops it instead of sending on it.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	if c.abandoned.Load() {
		return nil, net.ErrClosed
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func noop() {}

func (e *engine) exec(ctx context.Context, pipe redis.Pipeliner, n int) error {
	_, err := pipe.Exec(ctx)
	e.up.account(n, err)
	return err
}

// account counts a round trip of n commands (all billable, sent or not
// known to be unsent) and its failure.
func (u *Upstream) account(n int, err error) {
	u.commands.Add(int64(n))
	u.roundTrips.Add(1)
	if err != nil {
		u.failures.Add(1)
		u.logFailure(err)
	}
}

// replyOf is one command's reply after a round trip that ended with
// pipeErr: its raw bytes, or the error that kept them from arriving.
func replyOf(c *redis.RawCmd, pipeErr error) batch.Reply {
	raw, err := c.Result()
	if err == nil && raw == nil {
		err = pipeErr
	}
	if err != nil {
		return batch.Reply{Err: generic(err)}
	}
	return batch.Reply{Raw: raw}
}

// upstreamError is how an upstream failure reaches callers: its text names
// only the kind of failure ("upstream timeout", "upstream auth"), never the
// driver's or the upstream's text, which can hold the upstream's address or
// user. The cause stays reachable with errors.Is and errors.As.
type upstreamError struct {
	kind string
	err  error
}

func (e *upstreamError) Error() string { return "upstream " + e.kind }
func (e *upstreamError) Unwrap() error { return e.err }

// generic wraps an upstream error for callers (see upstreamError); errors
// whose text is already roomproxy's own pass unchanged.
func generic(err error) error {
	if err == nil || err == ErrUnavailable || err == errClosed {
		return err
	}
	var ue *upstreamError
	if errors.As(err, &ue) {
		return err
	}
	return &upstreamError{kind: FailureKind(err), err: err}
}

// logFailure logs an upstream failure at most once a second, by kind only:
// driver errors can hold the upstream's address or user.
func (u *Upstream) logFailure(err error) {
	now := time.Now().UnixNano()
	last := u.lastLog.Load()
	if now-last < int64(time.Second) || !u.lastLog.CompareAndSwap(last, now) {
		return
	}
	u.cfg.Logger.Warn("upstream round trip failed", "kind", FailureKind(err), "failures_total", u.failures.Load())
}

// FailureKind names the class of an upstream error without its text:
// "timeout", "tls", "auth", "closed" or "connection".
func FailureKind(err error) string {
	var ne net.Error
	var tlsErr *tls.CertificateVerificationError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case errors.As(err, &tlsErr):
		return "tls"
	case errors.Is(err, errClosed):
		return "closed"
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		if strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") || strings.HasPrefix(msg, "ERR AUTH") {
			return "auth"
		}
		return "server"
	}
	return "connection"
}
