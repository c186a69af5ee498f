package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/fallback"
	"golang.org/x/sync/errgroup"
)

// roomStore is what the final check needs from the room store
// (fallback.Mongo).
type roomStore interface {
	Get(ctx context.Context, id string) (room fallback.Room, found bool, err error)
	Ping(ctx context.Context) error
}

// room is one simulated game room.
type room struct {
	id, key, playersKey string
	complete            bool // goes to completed at the end of the run

	// Read by the reader goroutines: set after a write's reply has arrived.
	ackSeq    atomic.Int64   // seq of the last acknowledged SET of key; -1 before the first
	ackPlayer []atomic.Int64 // per player, seq of the last acknowledged entry; -1 before the join
	uncertain atomic.Bool    // a write got no reply, so its outcome is unknown: the room is not checked

	// Owned by the room's writer goroutine during the load, then by the
	// completion phase and the final check, each handed over by a Wait.
	rng         *rand.Rand
	seq         int64
	playerSeq   []int64
	score       []int64
	buf         []byte   // scratch for the next value
	acked       []byte   // value of the last acknowledged SET
	ackedStatus string   // its status
	ackedPlayer [][]byte // per player, the last acknowledged entry (nil before the join)
}

// Commands of the workload, counted as sent.
const (
	cmdSet = iota
	cmdHSet
	cmdGet
	cmdHGet
	numCmds
)

var cmdNames = [numCmds]string{"set", "hset", "get", "hget"}

const (
	maxErrorTexts = 50 // distinct error texts kept; more are counted as "(other)"
	maxExamples   = 8
)

// stats are the counters of a run; safe for concurrent use.
type stats struct {
	cmds                                      [numCmds]atomic.Int64
	stateWrites, lifecycleWrites, writeErrors atomic.Int64
	writeLat, lifeLat, readLat                *histogram

	checked, stale, nilReads, unparsable, readErrors, skipped atomic.Int64

	mu       sync.Mutex // protects errs and examples
	errs     map[string]int64
	examples []string
}

func (s *stats) recordError(err error) {
	text := errorText(err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.errs[text]; !ok && len(s.errs) >= maxErrorTexts {
		text = "(other)"
	}
	s.errs[text]++
}

func (s *stats) example(format string, a ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.examples) < maxExamples {
		s.examples = append(s.examples, fmt.Sprintf(format, a...))
	}
}

// errorText is an error reply's text, or a client-side error marked as
// such, cut to 80 bytes.
func errorText(err error) string {
	text := "client: " + err.Error()
	if isReply(err) {
		text = err.Error()
	}
	if len(text) > 80 {
		text = text[:77] + "..."
	}
	return text
}

// isReply reports whether err is an error reply from the server: the
// command was answered (and, for a write, not applied).
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, redis.Nil)
}

// runner plays the workload and checks it.
type runner struct {
	cfg         config
	direct      bool
	runID       string
	endpoint    *redis.Client // writers, completion, ROOM.FLUSH, checks
	readers     *redis.Client // reads only: connections of their own
	upstream    *redis.Client // INFO commandstats and the upstream checks
	store       roomStore     // nil without -mongo
	closeStore  func() error
	rooms       []*room
	playerNames []string
	st          stats
	progress    io.Writer
}

// run plays the workload of cfg and returns its report; an error means the
// run could not be made (bad endpoint, no INFO), not that a check failed.
func run(ctx context.Context, cfg config, progress io.Writer) (*Report, error) {
	r, err := newRunner(ctx, cfg, progress)
	if err != nil {
		return nil, err
	}
	defer r.close()
	return r.run(ctx)
}

func newRunner(ctx context.Context, cfg config, progress io.Writer) (*runner, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	upstreamURL := cfg.Upstream
	if upstreamURL == "" {
		upstreamURL = cfg.Addr
	}
	direct, err := sameServer(cfg.Addr, upstreamURL)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, direct: direct, progress: progress,
		runID: "rl" + strconv.FormatInt(time.Now().UnixMilli(), 36)}
	r.cfg.Upstream = upstreamURL
	r.st.errs = map[string]int64{}
	r.st.writeLat, r.st.lifeLat, r.st.readLat = newHistogram(), newHistogram(), newHistogram()
	if r.endpoint, err = newClient(cfg.Addr, cfg.Conns, cfg.Timeout); err != nil {
		return nil, fmt.Errorf("-addr: %w", err)
	}
	r.readers, _ = newClient(cfg.Addr, max(cfg.Readers, 1), cfg.Timeout) // the same URL: no error
	// INFO uses one connection, opened by the first INFO; the final checks
	// may open more, after the last INFO.
	if r.upstream, err = newClient(upstreamURL, min(cfg.Conns, 8), cfg.Timeout); err != nil {
		r.close()
		return nil, fmt.Errorf("-upstream: %w", err)
	}
	if cfg.Mongo != "" {
		m, err := fallback.OpenMongo(ctx, fallback.MongoConfig{URL: cfg.Mongo, DB: cfg.MongoDB, Retention: cfg.MongoRetention})
		if err != nil {
			r.close()
			return nil, fmt.Errorf("-mongo: %w (the TTL index must match roomproxy's: see -mongo-retention)", err)
		}
		r.store, r.closeStore = m, m.Close
	}
	for p := range cfg.Players {
		r.playerNames = append(r.playerNames, "p"+strconv.Itoa(p+1))
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	completed := int(math.Round(cfg.Complete * float64(cfg.Rooms)))
	perm := rng.Perm(cfg.Rooms)
	for i := range cfg.Rooms {
		id := r.runID + "-" + strconv.Itoa(i)
		rm := &room{id: id, key: cfg.Prefix + id, playersKey: cfg.Prefix + id + ":players",
			rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), seq: -1,
			ackPlayer: make([]atomic.Int64, cfg.Players), playerSeq: make([]int64, cfg.Players),
			score: make([]int64, cfg.Players), ackedPlayer: make([][]byte, cfg.Players)}
		rm.ackSeq.Store(-1)
		for p := range cfg.Players {
			rm.ackPlayer[p].Store(-1)
			rm.playerSeq[p] = -1
		}
		r.rooms = append(r.rooms, rm)
	}
	for _, i := range perm[:completed] {
		r.rooms[i].complete = true
	}
	return r, nil
}

func (r *runner) close() {
	for _, c := range []*redis.Client{r.endpoint, r.readers, r.upstream} {
		if c != nil {
			c.Close()
		}
	}
	if r.closeStore != nil {
		r.closeStore()
	}
}

// parseRedisURL accepts redis://, rediss:// and a bare host:port.
func parseRedisURL(s string) (*redis.Options, error) {
	if !strings.Contains(s, "://") {
		s = "redis://" + s
	}
	return redis.ParseURL(s)
}

// newClient returns a client whose every command is one command on the
// wire: no retries, no CLIENT SETINFO, RESP2 (HELLO is still sent once per
// connection, before the run when the pool is warmed).
func newClient(url string, pool int, timeout time.Duration) (*redis.Client, error) {
	opt, err := parseRedisURL(url)
	if err != nil {
		return nil, err
	}
	opt.PoolSize = pool
	opt.MaxRetries = -1
	opt.Protocol = 2
	opt.DisableIdentity = true
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.PoolTimeout = timeout, timeout, timeout, timeout
	return redis.NewClient(opt), nil
}

// sameServer reports whether two URLs name the same server and database,
// as written (localhost and 127.0.0.1 are different here).
func sameServer(a, b string) (bool, error) {
	oa, err := parseRedisURL(a)
	if err != nil {
		return false, fmt.Errorf("-addr: %w", err)
	}
	ob, err := parseRedisURL(b)
	if err != nil {
		return false, fmt.Errorf("-upstream: %w", err)
	}
	return oa.Addr == ob.Addr && oa.DB == ob.DB, nil
}

// warm opens n connections of c and leaves them idle in its pool, so the
// connection setup (HELLO) happens before the upstream counters are read.
func warm(ctx context.Context, c *redis.Client, n int) error {
	conns := make([]*redis.Conn, 0, n)
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for range n {
		cn := c.Conn()
		conns = append(conns, cn)
		if err := cn.Ping(ctx).Err(); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) logf(format string, a ...any) {
	if r.progress != nil {
		fmt.Fprintf(r.progress, "roomload: "+format+"\n", a...)
	}
}

// startMonitor opens a MONITOR stream on the upstream.
func (r *runner) startMonitor(ctx context.Context) (*monitor, error) {
	opt := r.upstream.Options()
	m, err := startMonitor(ctx, opt.Addr, opt.Password)
	if err != nil {
		return nil, fmt.Errorf("MONITOR on the upstream %s: %w", r.cfg.Upstream, err)
	}
	return m, nil
}

func (r *runner) commandStats(ctx context.Context) (map[string]int64, error) {
	info, err := r.upstream.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO commandstats on the upstream %s: %w", r.cfg.Upstream, err)
	}
	return parseCommandStats(info)
}

// bytesIn is the upstream's INFO stats total_net_input_bytes.
func (r *runner) bytesIn(ctx context.Context) (int64, error) {
	info, err := r.upstream.Info(ctx, "stats").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO stats on the upstream %s: %w", r.cfg.Upstream, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_net_input_bytes:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO stats on the upstream %s: no total_net_input_bytes", r.cfg.Upstream)
}

func (r *runner) run(ctx context.Context) (*Report, error) {
	if err := warm(ctx, r.endpoint, r.cfg.Conns); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", r.cfg.Addr, err)
	}
	if err := warm(ctx, r.readers, max(r.cfg.Readers, 1)); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", r.cfg.Addr, err)
	}
	if r.store != nil {
		if err := r.store.Ping(ctx); err != nil {
			return nil, fmt.Errorf("MongoDB: %w", err)
		}
	}
	mon, err := r.startMonitor(ctx)
	if err != nil {
		return nil, err
	}
	before, err := r.commandStats(ctx)
	if err != nil {
		mon.stop()
		return nil, err
	}
	bytesBefore, err := r.bytesIn(ctx)
	if err != nil {
		mon.stop()
		return nil, err
	}

	r.logf("%s: %d rooms for %s against %s", r.runID, len(r.rooms), r.cfg.Duration, r.cfg.Addr)
	start := time.Now()
	r.load(ctx)
	if ctx.Err() == nil {
		r.completeRooms(ctx)
	}
	rep := r.report(time.Since(start))
	if ctx.Err() != nil {
		return r.finish(rep, true), nil
	}

	r.logf("settling for %s", r.cfg.Settle)
	if !sleep(ctx, r.cfg.Settle) {
		return r.finish(rep, true), nil
	}
	rep.Client.Flushes = r.flush(ctx)
	after, err := r.commandStats(ctx)
	sent, inScripts := mon.stop()
	if err != nil {
		return nil, err
	}
	bytesAfter, err := r.bytesIn(ctx)
	if err != nil {
		return nil, err
	}
	deltas, err := commandDeltas(before, after)
	if err != nil {
		return nil, err
	}
	rep.Upstream = UpstreamReport{Commands: deltas, Total: sumCommands(deltas, nil), Writes: sumCommands(deltas, upstreamWriteCommands),
		Sent: sent, SentTotal: sumCommands(sent, nil), InScripts: inScripts, BytesIn: bytesAfter - bytesBefore}
	for name, n := range sent {
		if !upstreamReads[name] {
			rep.Upstream.SentWrites += n
		}
	}
	if rep.Client.Total > 0 {
		rep.Ratio.Overall = float64(rep.Upstream.Total) / float64(rep.Client.Total)
		rep.Ratio.Sent = float64(rep.Upstream.SentTotal) / float64(rep.Client.Total)
	}
	if w := rep.Client.Commands["set"] + rep.Client.Commands["hset"]; w > 0 {
		rep.Ratio.Writes = float64(rep.Upstream.Writes) / float64(w)
		rep.Ratio.SentWrites = float64(rep.Upstream.SentWrites) / float64(w)
	}

	r.logf("checking final states")
	rep.Final = r.checkFinal(ctx)
	return r.finish(rep, ctx.Err() != nil), nil
}

// finish adds the error texts and the examples of the load to rep and
// judges it.
func (r *runner) finish(rep *Report, interrupted bool) *Report {
	rep.Interrupted = interrupted
	r.st.mu.Lock()
	rep.Final.Examples = append(append([]string(nil), r.st.examples...), rep.Final.Examples...)
	if len(rep.Final.Examples) > maxExamples {
		rep.Final.Examples = rep.Final.Examples[:maxExamples]
	}
	for k, v := range r.st.errs {
		rep.Errors[k] = v
	}
	r.st.mu.Unlock()
	rep.judge()
	return rep
}

// report fills in what the load itself measured.
func (r *runner) report(elapsed time.Duration) *Report {
	rep := &Report{Endpoint: r.cfg.Addr, UpstreamURL: r.cfg.Upstream, Direct: r.direct, RunID: r.runID,
		Rooms: r.cfg.Rooms, Players: r.cfg.Players, Readers: r.cfg.Readers,
		WritesPerS: r.cfg.Writes, ReadsPerS: r.cfg.Reads, DurationS: elapsed.Seconds(),
		Errors: map[string]int64{}, Upstream: UpstreamReport{Commands: map[string]int64{}}}
	c := &rep.Client
	c.Commands = map[string]int64{}
	for i, name := range cmdNames {
		if n := r.st.cmds[i].Load(); n > 0 {
			c.Commands[name] = n
			c.Total += n
		}
	}
	if elapsed > 0 {
		c.PerS = float64(c.Total) / elapsed.Seconds()
	}
	c.StateWrites, c.LifecycleWrites, c.WriteErrors = r.st.stateWrites.Load(), r.st.lifecycleWrites.Load(), r.st.writeErrors.Load()
	rep.Latency = LatencyReport{StateWrites: percentiles(r.st.writeLat), LifecycleWrites: percentiles(r.st.lifeLat), Reads: percentiles(r.st.readLat)}
	rep.Reads = ReadReport{Checked: r.st.checked.Load(), Stale: r.st.stale.Load(), Nil: r.st.nilReads.Load(),
		Unparsable: r.st.unparsable.Load(), Errors: r.st.readErrors.Load(), Skipped: r.st.skipped.Load()}
	return rep
}

// load runs every room's writer and the readers until -duration has passed
// or ctx ends. Commands in flight at the end finish (they run on ctx, not on
// the load's deadline), so every write's outcome is known.
func (r *runner) load(ctx context.Context) {
	loadCtx, cancel := context.WithTimeout(ctx, r.cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for _, rm := range r.rooms {
		wg.Go(func() { r.playRoom(loadCtx, ctx, rm) })
	}
	for i := range r.cfg.Readers {
		wg.Go(func() { r.readLoop(loadCtx, ctx, i) })
	}
	wg.Wait()
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// rampUp is how long the creation of the rooms is spread over (a quarter of
// a short run): all rooms created and joined in the same instant would put
// a burst of queued commands into the latency percentiles, and would tick
// in step afterwards.
func rampUp(d time.Duration) time.Duration { return min(time.Second, d/4) }

// playRoom is one room's writer: create, joins, start, then state writes at
// -writes per second, each sent after the previous one's reply, so the
// room's writes are in order. A tick missed because a write was slow is
// skipped, not made up.
func (r *runner) playRoom(loadCtx, ctx context.Context, rm *room) {
	if ramp := rampUp(r.cfg.Duration); ramp > 0 && !sleep(loadCtx, time.Duration(rm.rng.Int64N(int64(ramp)))) {
		return
	}
	if !r.setState(ctx, rm, "waiting", true) {
		return
	}
	for p := range r.cfg.Players {
		r.setPlayer(ctx, rm, p)
	}
	r.setState(ctx, rm, "active", true)
	if r.cfg.Writes <= 0 {
		<-loadCtx.Done()
		return
	}
	every(loadCtx, time.Duration(float64(time.Second)/r.cfg.Writes), func(int) {
		if r.cfg.Players > 0 && rm.rng.IntN(4) == 0 {
			r.setPlayer(ctx, rm, rm.rng.IntN(r.cfg.Players))
		} else {
			r.setState(ctx, rm, "active", false)
		}
	})
}

// every calls fn(0), fn(1), ... once per interval (at least 1 µs) until ctx
// ends; a tick missed because fn was slow is skipped, not made up.
func every(ctx context.Context, interval time.Duration, fn func(k int)) {
	t := time.NewTicker(max(interval, time.Microsecond))
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return
		}
		fn(k)
	}
}

// setState sends SET key <state document> with the room's next seq.
func (r *runner) setState(ctx context.Context, rm *room, status string, lifecycle bool) bool {
	rm.seq++
	rm.buf = appendState(rm.buf[:0], status, rm.seq, rm.seq, time.Now().UnixMilli(), r.cfg.Players, rm.rng)
	r.st.cmds[cmdSet].Add(1)
	h := r.st.writeLat
	if lifecycle {
		r.st.lifecycleWrites.Add(1)
		h = r.st.lifeLat
	} else {
		r.st.stateWrites.Add(1)
	}
	start := time.Now()
	if err := r.endpoint.Set(ctx, rm.key, rm.buf, 0).Err(); err != nil {
		r.writeFailed(ctx, rm, err)
		return false
	}
	h.Record(time.Since(start))
	rm.buf, rm.acked = rm.acked, rm.buf
	rm.ackedStatus = status
	rm.ackSeq.Store(rm.seq)
	return true
}

// setPlayer sends HSET playersKey p<n> <entry> with the player's next seq
// (the first one is the join).
func (r *runner) setPlayer(ctx context.Context, rm *room, p int) bool {
	rm.playerSeq[p]++
	rm.score[p] += rm.rng.Int64N(50)
	rm.buf = appendPlayer(rm.buf[:0], r.playerNames[p], rm.playerSeq[p], rm.score[p], true)
	r.st.cmds[cmdHSet].Add(1)
	r.st.stateWrites.Add(1)
	start := time.Now()
	if err := r.endpoint.HSet(ctx, rm.playersKey, r.playerNames[p], rm.buf).Err(); err != nil {
		r.writeFailed(ctx, rm, err)
		return false
	}
	r.st.writeLat.Record(time.Since(start))
	rm.buf, rm.ackedPlayer[p] = rm.ackedPlayer[p], rm.buf
	rm.ackPlayer[p].Store(rm.playerSeq[p])
	return true
}

// writeFailed counts a failed write. An error reply means the write was not
// applied; any other error (timeout, connection) leaves its outcome unknown,
// and the room is no longer checked.
func (r *runner) writeFailed(ctx context.Context, rm *room, err error) {
	r.st.writeErrors.Add(1)
	if ctx.Err() == nil {
		r.st.recordError(err)
	}
	if !isReply(err) {
		rm.uncertain.Store(true)
	}
}

// readLoop is reader i: it reads the rooms i, i+readers, ... in turn, at
// -reads per second per room, one read at a time on its own connection.
func (r *runner) readLoop(loadCtx, ctx context.Context, i int) {
	var mine []*room
	for j := i; j < len(r.rooms); j += r.cfg.Readers {
		mine = append(mine, r.rooms[j])
	}
	if len(mine) == 0 || r.cfg.Reads <= 0 {
		return
	}
	rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(1<<32+i)))
	interval := max(time.Duration(float64(time.Second)/(r.cfg.Reads*float64(len(mine)))), time.Microsecond)
	if !sleep(loadCtx, time.Duration(rng.Int64N(int64(interval)))) {
		return
	}
	every(loadCtx, interval, func(k int) { r.read(ctx, mine[k%len(mine)], rng) })
}

// read sends GET key (two reads in three) or HGET playersKey p<n>, and
// judges the value against the write acknowledged before it was sent.
func (r *runner) read(ctx context.Context, rm *room, rng *rand.Rand) {
	if rm.uncertain.Load() {
		r.st.skipped.Add(1)
		return
	}
	var (
		key, field string
		acked      int64
		v          []byte
		err        error
		start      time.Time
	)
	if r.cfg.Players == 0 || rng.IntN(3) > 0 {
		key, acked = rm.key, rm.ackSeq.Load()
		if acked < 0 {
			r.st.skipped.Add(1)
			return
		}
		r.st.cmds[cmdGet].Add(1)
		start = time.Now()
		v, err = r.readers.Get(ctx, key).Bytes()
	} else {
		p := rng.IntN(r.cfg.Players)
		key, field, acked = rm.playersKey, r.playerNames[p], rm.ackPlayer[p].Load()
		if acked < 0 {
			r.st.skipped.Add(1)
			return
		}
		r.st.cmds[cmdHGet].Add(1)
		start = time.Now()
		v, err = r.readers.HGet(ctx, key, field).Bytes()
	}
	lat := time.Since(start)
	where := key
	if field != "" {
		where += " " + field
	}
	switch {
	case errors.Is(err, redis.Nil):
		r.st.readLat.Record(lat)
		r.st.nilReads.Add(1)
		r.st.example("nil read of %s after seq %d was acknowledged", where, acked)
	case err != nil:
		r.st.readErrors.Add(1)
		if ctx.Err() == nil {
			r.st.recordError(err)
		}
	default:
		r.st.readLat.Record(lat)
		r.st.checked.Add(1)
		switch seq, vd := checkRead(v, acked); vd {
		case readStale:
			r.st.stale.Add(1)
			r.st.example("stale read of %s: seq %d, but seq %d was acknowledged before the read", where, seq, acked)
		case readUnparsable:
			r.st.unparsable.Add(1)
			r.st.example("unparsable read of %s: %q", where, truncate(v, 60))
		}
	}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// completeRooms sends the completed state of the rooms chosen to complete.
func (r *runner) completeRooms(ctx context.Context) {
	var g errgroup.Group
	g.SetLimit(r.cfg.Conns)
	for _, rm := range r.rooms {
		if rm.complete && rm.ackSeq.Load() >= 0 && !rm.uncertain.Load() {
			g.Go(func() error {
				r.setState(ctx, rm, "completed", true)
				return nil
			})
		}
	}
	g.Wait()
}

// flush sends ROOM.FLUSH <id> for every room, so a debouncing endpoint has
// sent its pending writes before the check. An endpoint without the command
// (redis-server) answers "unknown command" to the first one and gets no
// more. It returns how many rooms were flushed.
func (r *runner) flush(ctx context.Context) int64 {
	var n atomic.Int64
	var g errgroup.Group
	g.SetLimit(r.cfg.Conns)
	first := true
	for _, rm := range r.rooms {
		if rm.ackSeq.Load() < 0 {
			continue
		}
		f := func() error {
			err := r.endpoint.Do(ctx, "ROOM.FLUSH", rm.id).Err()
			if err != nil && strings.Contains(strings.ToLower(err.Error()), "unknown command") {
				return err
			}
			if err != nil {
				r.st.recordError(fmt.Errorf("ROOM.FLUSH: %w", err))
				return nil
			}
			n.Add(1)
			return nil
		}
		if first {
			first = false
			if f() != nil {
				return 0
			}
			continue
		}
		g.Go(f)
	}
	g.Wait()
	return n.Load()
}

// checkFinal compares every room's final state with its last acknowledged
// writes.
func (r *runner) checkFinal(ctx context.Context) FinalReport {
	var (
		mu  sync.Mutex
		out = FinalReport{MongoChecked: r.store != nil}
		g   errgroup.Group
	)
	g.SetLimit(r.cfg.Conns)
	for _, rm := range r.rooms {
		g.Go(func() error {
			f := r.checkRoom(ctx, rm)
			mu.Lock()
			out.merge(f)
			mu.Unlock()
			return nil
		})
	}
	g.Wait()
	return out
}

func (f *FinalReport) merge(o FinalReport) {
	f.Active += o.Active
	f.LostEndpoint += o.LostEndpoint
	f.LostUpstream += o.LostUpstream
	f.PlayersLost += o.PlayersLost
	f.Completed += o.Completed
	f.CompletedLost += o.CompletedLost
	f.CompletedLeft += o.CompletedLeft
	f.Unchecked += o.Unchecked
	f.MongoLost += o.MongoLost
	f.MongoActiveSame += o.MongoActiveSame
	f.MongoErrors += o.MongoErrors
	for _, e := range o.Examples {
		if len(f.Examples) < maxExamples {
			f.Examples = append(f.Examples, e)
		}
	}
}

// describe says what a GET returned, for an example.
func describe(v []byte, err error) string {
	switch {
	case errors.Is(err, redis.Nil):
		return "nil"
	case err != nil:
		return "error: " + errorText(err)
	}
	if seq, err := parseSeq(v); err == nil {
		return "seq " + strconv.FormatInt(seq, 10)
	}
	return fmt.Sprintf("%q", truncate(v, 60))
}

func (r *runner) checkRoom(ctx context.Context, rm *room) FinalReport {
	var f FinalReport
	if rm.ackSeq.Load() < 0 || rm.uncertain.Load() {
		f.Unchecked = 1
		return f
	}
	want := rm.acked
	wantDesc := describe(want, nil)
	exampleGet := func(c *redis.Client, where string) bool {
		got, err := c.Get(ctx, rm.key).Bytes()
		if err == nil && bytes.Equal(got, want) {
			return true
		}
		f.Examples = append(f.Examples, fmt.Sprintf("%s %s: %s, want the acknowledged %s", where, rm.key, describe(got, err), wantDesc))
		return false
	}
	completed := rm.ackedStatus == "completed"
	switch {
	case completed && r.direct:
		// redis-server has no room lifecycle: the final state stays in it.
		f.Completed = 1
		if !exampleGet(r.endpoint, "completed room at the endpoint") {
			f.CompletedLost++
		}
	case completed:
		f.Completed = 1
		n, err := r.upstream.Exists(ctx, rm.key).Result()
		if err != nil || n != 0 {
			f.CompletedLost++
			f.Examples = append(f.Examples, fmt.Sprintf("completed room %s: EXISTS in the upstream = %d (err %v), want 0", rm.key, n, err))
		}
		if n, err := r.upstream.Exists(ctx, rm.playersKey).Result(); err == nil && n != 0 {
			f.CompletedLeft++
		}
	default:
		f.Active = 1
		if !exampleGet(r.endpoint, "active room at the endpoint") {
			f.LostEndpoint++
		}
		if !r.direct && !exampleGet(r.upstream, "active room in the upstream") {
			f.LostUpstream++
		}
		clients := []*redis.Client{r.endpoint}
		if !r.direct {
			clients = append(clients, r.upstream)
		}
		for _, c := range clients {
			got, err := c.HGetAll(ctx, rm.playersKey).Result()
			if why := diffPlayers(got, err, r.playerNames, rm.ackedPlayer); why != "" {
				f.PlayersLost++
				f.Examples = append(f.Examples, fmt.Sprintf("%s of %s: %s", rm.playersKey, c.Options().Addr, why))
				break
			}
		}
	}
	if r.store != nil {
		stored, found, err := r.store.Get(ctx, rm.id)
		if err != nil {
			f.MongoErrors++
			if completed {
				f.MongoLost++
			}
			f.Examples = append(f.Examples, fmt.Sprintf("MongoDB read of room %s: %v", rm.id, err))
			return f
		}
		ok, why := mongoHas(stored, found, rm.key, want, completed)
		switch {
		case completed && !ok:
			f.MongoLost++
			f.Examples = append(f.Examples, fmt.Sprintf("MongoDB room %s: %s, want completed with %s", rm.id, why, wantDesc))
		case !completed && ok:
			f.MongoActiveSame++
		}
	}
	return f
}

// diffPlayers compares a players hash with the acknowledged entries; it
// returns "" when they are the same.
func diffPlayers(got map[string]string, err error, names []string, acked [][]byte) string {
	if err != nil {
		return "error: " + errorText(err)
	}
	want := 0
	for p, v := range acked {
		if v == nil {
			continue
		}
		want++
		g, ok := got[names[p]]
		if !ok {
			return names[p] + " missing"
		}
		if g != string(v) {
			return fmt.Sprintf("%s is %s, want the acknowledged %s", names[p], describe([]byte(g), nil), describe(v, nil))
		}
	}
	if len(got) != want {
		return fmt.Sprintf("%d fields, want %d", len(got), want)
	}
	return ""
}

// mongoHas reports whether a stored room holds value as its state key (and,
// for a completed room, has status completed), and otherwise why not.
func mongoHas(stored fallback.Room, found bool, key string, value []byte, completed bool) (bool, string) {
	if !found {
		return false, "not stored"
	}
	if completed && stored.Status != "completed" {
		return false, "status " + strconv.Quote(stored.Status)
	}
	v, ok := stored.Keys[key]
	if !ok {
		return false, "no key " + key
	}
	if v.Type != fallback.TypeString || !bytes.Equal(v.String, value) {
		return false, fmt.Sprintf("%s %s is %s", v.Type, key, describe(v.String, nil))
	}
	return true, ""
}
