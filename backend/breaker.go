package backend

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// ErrUnavailable is the reply to every command of a batch that the circuit
// breaker kept from the upstream: nothing in the batch took effect upstream
// (it was not sent, or it only read and was not retried further). Its text is
// generic on purpose: it may reach a client.
var ErrUnavailable = errors.New("upstream unavailable")

// BreakerState is the circuit breaker's state.
type BreakerState uint32

const (
	// BreakerClosed: client traffic goes upstream and its outcomes are counted.
	BreakerClosed BreakerState = iota
	// BreakerOpen: client traffic fails fast with ErrUnavailable; the probe
	// waits for OpenTimeout to pass.
	BreakerOpen
	// BreakerHalfOpen: the probe is asking the upstream; client traffic still
	// fails fast.
	BreakerHalfOpen
	// BreakerRecovering: the probe got its answer and OnRecover runs; client
	// traffic still fails fast until it returns nil.
	BreakerRecovering
	// NumBreakerStates sizes tables indexed by state.
	NumBreakerStates
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerRecovering:
		return "recovering"
	}
	return "unknown"
}

// BreakerConfig configures the circuit breaker that guards the upstream. The
// zero value of a field means its default.
type BreakerConfig struct {
	// Failures is how many faulty round trips in a row open the breaker
	// (BREAKER_FAILURES, default 5). A successful round trip starts the count
	// again. Only faults count (see Classify).
	Failures int
	// Timeouts is how many round trips in a row that ran out the whole
	// upstream deadline open the breaker, sooner than Failures
	// (BREAKER_TIMEOUTS, default 2, never more than Failures). Each of them
	// has already cost its clients the deadline, and a blackholed upstream
	// fails only as many round trips per deadline as there are connections.
	Timeouts int
	// OpenTimeout is how long the breaker stays open before the probe asks
	// the upstream again (BREAKER_OPEN_MS, default 1 s).
	OpenTimeout time.Duration
	// ProbeInterval is how often the probe looks at a breaker that is not
	// closed (BREAKER_PROBE_MS, default 250 ms). Looking costs nothing
	// upstream: a probe PING (billed) is sent only once OpenTimeout has
	// passed, so at most one per OpenTimeout plus ProbeInterval during an
	// outage, and none while the breaker is closed.
	ProbeInterval time.Duration
	// HalfOpenProbes is how many probe PINGs in a row must succeed before the
	// breaker closes (gobreaker's MaxRequests; default 1).
	HalfOpenProbes int
	// OnRecover, if set, runs on the probe's goroutine after the probe's last
	// PING succeeded and before the breaker closes: client traffic keeps
	// failing fast until it returns nil. It may send its own commands with
	// Upstream.SubmitRecovery. An error opens the breaker again, and OnRecover
	// runs again at the next recovery. Its context ends when the upstream is
	// closed. Breaker.SetRecover sets it after New.
	OnRecover func(ctx context.Context) error
}

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.Failures <= 0 {
		c.Failures = 5
	}
	if c.Timeouts <= 0 {
		c.Timeouts = 2
	}
	c.Timeouts = min(c.Timeouts, c.Failures)
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = time.Second
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = 250 * time.Millisecond
	}
	if c.HalfOpenProbes <= 0 {
		c.HalfOpenProbes = 1
	}
	return c
}

// Transition is one change of the breaker's state.
type Transition struct {
	From, To BreakerState
	At       time.Time
	// Cause names the kind of fault that opened the breaker (see
	// FailureKind; "recover" when OnRecover failed); empty for other changes.
	Cause string
}

// BreakerStats are the breaker's counters since start.
type BreakerStats struct {
	State       BreakerState
	Since       time.Time // when State began
	Transitions [NumBreakerStates][NumBreakerStates]int64
	Rejected    int64  // client batches answered ErrUnavailable without the upstream
	Faults      int64  // client round trips that counted as faults
	Excluded    int64  // client round trips counted neither way (the client went away)
	Probes      int64  // probe PINGs sent (billed)
	LastCause   string // the Cause of the last opening
}

// Verdict is how the breaker counts the outcome of one upstream round trip.
type Verdict int

const (
	// VerdictSuccess: the upstream answered. Nil replies and error replies
	// that are the caller's business (WRONGTYPE, syntax, NOSCRIPT, max request
	// size, ...) are successes.
	VerdictSuccess Verdict = iota
	// VerdictFault: the upstream is unreachable, too slow, refuses roomproxy,
	// or is not serving.
	VerdictFault
	// VerdictExcluded: the caller went away, or roomproxy closed the
	// connection itself; counted neither way.
	VerdictExcluded
)

// errStale marks an outcome that arrived after the breaker left the state
// in which its round trip was admitted; it is excluded.
var errStale = errors.New("outcome of an earlier breaker state")

// errRecover is the probe's outcome when OnRecover failed.
var errRecover = errors.New("recovery hook failed")

// Classify says whether an upstream error is a fault. Faults: timeouts,
// connection errors (refused, reset, EOF, broken pipe, malformed replies),
// TLS errors, authentication failures, and the error replies of an upstream
// that is not serving (see ClassifyReply). Excluded: a cancelled context (the
// caller went away) and connections roomproxy closed itself.
func Classify(err error) Verdict {
	if err == nil {
		return VerdictSuccess
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, errStale) || errors.Is(err, ErrUnavailable) ||
		errors.Is(err, errClosed) || errors.Is(err, redis.ErrClosed) || errors.Is(err, net.ErrClosed) {
		return VerdictExcluded
	}
	var re redis.Error
	if errors.As(err, &re) {
		if faultText(re.Error()) {
			return VerdictFault
		}
		return VerdictSuccess
	}
	return VerdictFault
}

// ClassifyReply says whether a raw RESP reply is an error reply that marks
// the upstream as not serving: LOADING, BUSY (a script runs too long),
// MASTERDOWN, READONLY (a replica after failover), CLUSTERDOWN, MISCONF
// (writes refused), NOAUTH/WRONGPASS, and Upstash's quota texts ("ERR max
// daily request limit exceeded", "ERR max requests limit exceeded", "ERR max
// concurrent connections exceeded", "ERR DB capacity quota exceeded"), also
// Redis's "ERR max number of clients reached". Every other reply is a success.
func ClassifyReply(raw []byte) Verdict {
	if msg, ok := errorText(raw); ok && faultText(msg) {
		return VerdictFault
	}
	return VerdictSuccess
}

// errorText is the text of a simple ('-') or blob ('!') error reply.
func errorText(raw []byte) (string, bool) {
	if len(raw) < 3 {
		return "", false
	}
	switch raw[0] {
	case '-':
		return strings.TrimRight(string(raw[1:]), "\r\n"), true
	case '!':
		if i := strings.IndexByte(string(raw), '\n'); i > 0 {
			return strings.TrimRight(string(raw[i+1:]), "\r\n"), true
		}
	}
	return "", false
}

// faultText reports whether an error reply's text is one of an upstream that
// is not serving. BUSY must be the whole code: BUSYKEY and BUSYGROUP are
// ordinary replies to the caller.
func faultText(msg string) bool {
	code, rest, _ := strings.Cut(msg, " ")
	switch code {
	case "LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "MISCONF", "NOAUTH", "WRONGPASS":
		return true
	case "ERR":
		rest = strings.ToLower(rest)
		for _, p := range quotaTexts {
			if strings.HasPrefix(rest, p) {
				return true
			}
		}
		// Upstash's other limits read "max ... limit exceeded"; the size
		// limits ("max request size exceeded", "max key size exceeded") are
		// the caller's and do not match.
		return strings.HasPrefix(rest, "max ") && strings.Contains(rest, " limit exceeded")
	}
	return false
}

// quotaTexts are the lower-case texts after "ERR " of an upstream that
// refuses service: Upstash's quotas, Redis's maxclients, and the handshake's
// authentication errors of older servers.
var quotaTexts = []string{
	"max daily request limit exceeded",
	"max requests limit exceeded",
	"max concurrent connections exceeded",
	"db capacity quota exceeded",
	"max number of clients reached",
	"auth ", // "ERR AUTH <password> called without any password configured"
	"client sent auth",
	"invalid password",
}

// faultReply is an error reply that counts as a fault. It is a redis.Error,
// so FailureKind names it. Its text is the upstream's: never shown or logged.
type faultReply string

func (e faultReply) Error() string { return string(e) }
func (faultReply) RedisError()     {}

// outcomeOf is what the breaker records for a round trip: its error, or else
// the first reply that is a fault. It looks at one byte of each reply.
func outcomeOf[C redis.Cmder](err error, cmds []C) error {
	if err != nil {
		return err
	}
	for _, c := range cmds {
		rc, ok := any(c).(*redis.RawCmd)
		if !ok {
			continue
		}
		if err := replyFault(rc.Val()); err != nil {
			return err
		}
	}
	return nil
}

// replyFault is the breaker's view of one raw reply: an error reply that
// counts as the upstream's fault, or nil.
func replyFault(raw []byte) error {
	if len(raw) > 0 && (raw[0] == '-' || raw[0] == '!') && ClassifyReply(raw) == VerdictFault {
		msg, _ := errorText(raw)
		return faultReply(msg)
	}
	return nil
}

// isTimeout reports whether err is a round trip that ran out its deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// Breaker is the circuit breaker guarding the upstream (SPEC 5), a
// sony/gobreaker/v2 CircuitBreaker with roomproxy's rules around it:
//
//   - Client traffic never closes it. While it is not closed, client batches
//     fail at once with ErrUnavailable and never call into gobreaker, so they
//     can neither take the half-open slot nor be the success that closes it.
//     A probe goroutine, and only it, moves the breaker from open to
//     half-open (gobreaker changes state only when called) and on to closed,
//     with PINGs on its own connection.
//   - The closed fast path is one atomic load when a round trip starts and one
//     when it ends. Outcomes go to gobreaker only when they matter to its
//     decision: every fault, and the first success after faults (which ends a
//     run of consecutive faults). Other successes would change nothing.
//   - gobreaker calls OnStateChange under its lock. Ours only updates an
//     atomic and queues the change; a notifier goroutine logs and calls the
//     listeners outside any lock, in order.
//
// Lock order: gobreaker's mutex, then mu. Nothing holding mu calls gobreaker.
type Breaker struct {
	cfg     BreakerConfig
	timeout time.Duration // the upstream deadline, for probe PINGs
	log     *slog.Logger
	probe   func(context.Context) error
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]

	// word holds the state in its low 8 bits and an epoch above, bumped at
	// every transition: a round trip's outcome is recorded only if the word
	// has not changed since the round trip was admitted.
	word       atomic.Uint64
	faultRun   atomic.Int64 // faults recorded since the last recorded success
	timeoutRun atomic.Int64 // timeouts recorded since the last recorded success
	cause      atomic.Value // string: FailureKind of the last recorded fault
	recoverFn  atomic.Pointer[func(context.Context) error]

	transitions [NumBreakerStates][NumBreakerStates]atomic.Int64
	rejected    atomic.Int64
	faults      atomic.Int64
	excluded    atomic.Int64
	probes      atomic.Int64

	mu        sync.Mutex // protects since, lastCause, queue, listeners, closedCh
	since     time.Time
	lastCause string
	queue     []Transition
	listeners []func(Transition)
	closedCh  chan struct{} // closed while the breaker is closed

	kick   chan struct{} // wakes the notifier
	wake   chan struct{} // wakes the probe
	cancel context.CancelFunc
	wg     sync.WaitGroup // the probe and the notifier
}

const stateBits = 8

// newBreaker starts the probe and notifier goroutines; close stops them.
// probe asks the upstream once (a PING); timeout bounds each probe.
func newBreaker(cfg BreakerConfig, timeout time.Duration, log *slog.Logger, probe func(context.Context) error) *Breaker {
	cfg = cfg.withDefaults()
	b := &Breaker{cfg: cfg, timeout: timeout, log: log, probe: probe,
		since: time.Now(), closedCh: make(chan struct{}),
		kick: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	close(b.closedCh)
	b.cause.Store("")
	if cfg.OnRecover != nil {
		b.SetRecover(cfg.OnRecover)
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "upstream",
		MaxRequests: uint32(cfg.HalfOpenProbes),
		Timeout:     cfg.OpenTimeout,
		// Interval 0: closed-state counts are cleared only by a state
		// change; the rule looks at runs of faults, which successes end.
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= uint32(cfg.Failures) || b.timeoutRun.Load() >= int64(cfg.Timeouts)
		},
		OnStateChange: b.onStateChange,
		IsSuccessful:  func(err error) bool { return err == nil },
		IsExcluded:    func(err error) bool { return Classify(err) == VerdictExcluded },
	})
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.wg.Add(2)
	go b.run(ctx)
	go b.notify(ctx)
	return b
}

// State is the breaker's state now.
func (b *Breaker) State() BreakerState { return BreakerState(b.word.Load() & (1<<stateBits - 1)) }

// Closed returns a channel that is closed while the breaker is closed: wait
// on it to learn when traffic flows again.
func (b *Breaker) Closed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closedCh
}

// OnChange registers f to be called with every later transition, in order,
// from one goroutine that holds no lock. f must not block for long: later
// transitions wait for it.
func (b *Breaker) OnChange(f func(Transition)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.listeners = append(b.listeners[:len(b.listeners):len(b.listeners)], f)
}

// SetRecover sets (or with nil clears) the OnRecover hook; see
// BreakerConfig.OnRecover. It exists because the hook's owner (the room
// manager) is built after the upstream.
func (b *Breaker) SetRecover(f func(ctx context.Context) error) {
	if f == nil {
		b.recoverFn.Store(nil)
		return
	}
	b.recoverFn.Store(&f)
}

// Stats returns the counters.
func (b *Breaker) Stats() BreakerStats {
	s := BreakerStats{State: b.State(), Rejected: b.rejected.Load(), Faults: b.faults.Load(),
		Excluded: b.excluded.Load(), Probes: b.probes.Load()}
	for i := range b.transitions {
		for j := range b.transitions[i] {
			s.Transitions[i][j] = b.transitions[i][j].Load()
		}
	}
	b.mu.Lock()
	s.Since, s.LastCause = b.since, b.lastCause
	b.mu.Unlock()
	return s
}

// admit is the gate for client traffic: it reports whether a round trip may
// go upstream now and returns the ticket to record its outcome with.
func (b *Breaker) admit() (uint64, bool) {
	w := b.word.Load()
	return w, BreakerState(w&(1<<stateBits-1)) == BreakerClosed
}

// allows is admit without the ticket.
func (b *Breaker) allows() bool {
	_, ok := b.admit()
	return ok
}

// reject counts a client batch failed fast.
func (b *Breaker) reject() { b.rejected.Add(1) }

// record counts the outcome of a client round trip admitted with ticket.
func (b *Breaker) record(ticket uint64, err error) {
	switch Classify(err) {
	case VerdictSuccess:
		if b.faultRun.Load() == 0 {
			return // the fast path: nothing for gobreaker to learn
		}
		b.faultRun.Store(0)
		b.timeoutRun.Store(0)
		b.execute(ticket, nil)
	case VerdictExcluded:
		b.excluded.Add(1)
	case VerdictFault:
		b.faults.Add(1)
		if b.word.Load() != ticket {
			return // admitted before a transition: it says nothing about now
		}
		b.cause.Store(FailureKind(err))
		b.faultRun.Add(1)
		if isTimeout(err) {
			b.timeoutRun.Add(1)
		}
		b.execute(ticket, err)
	}
}

// execute hands gobreaker an outcome already known. If the breaker left the
// ticket's state meanwhile (gobreaker may even be half-open by now), the
// outcome turns into errStale, which gobreaker excludes, so that client
// traffic never counts outside the closed state.
func (b *Breaker) execute(ticket uint64, err error) {
	if b.word.Load() != ticket {
		return
	}
	done, aerr := b.cb.Allow()
	if aerr != nil {
		return // open, or half-open with the slot taken: not ours to count
	}
	if b.word.Load() != ticket {
		err = errStale
	}
	done(err)
}

// onStateChange is gobreaker's hook. It runs under gobreaker's lock: it must
// neither call the breaker nor block.
func (b *Breaker) onStateChange(_ string, _, to gobreaker.State) {
	switch to {
	case gobreaker.StateClosed:
		b.setState(BreakerClosed, "")
	case gobreaker.StateHalfOpen:
		b.setState(BreakerHalfOpen, "")
	case gobreaker.StateOpen:
		cause, _ := b.cause.Load().(string)
		b.setState(BreakerOpen, cause)
	}
}

// setState records a transition and queues it for the notifier.
func (b *Breaker) setState(to BreakerState, cause string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.word.Load()
	from := BreakerState(w & (1<<stateBits - 1))
	if from == to {
		return
	}
	b.word.Store((w>>stateBits+1)<<stateBits | uint64(to))
	b.transitions[from][to].Add(1)
	b.faultRun.Store(0)
	b.timeoutRun.Store(0)
	now := time.Now()
	b.since = now
	tr := Transition{From: from, To: to, At: now}
	if to == BreakerOpen {
		tr.Cause = cause
		b.lastCause = cause
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	switch {
	case to == BreakerClosed:
		close(b.closedCh)
	case from == BreakerClosed:
		b.closedCh = make(chan struct{})
	}
	b.queue = append(b.queue, tr)
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// run is the probe goroutine: idle while the breaker is closed, probing
// every ProbeInterval while it is not.
func (b *Breaker) run(ctx context.Context) {
	defer b.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		t := time.NewTicker(b.cfg.ProbeInterval)
		for b.State() != BreakerClosed && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-t.C:
				b.probeOnce(ctx)
			}
		}
		t.Stop()
	}
}

// probeOnce asks gobreaker for the half-open slot (which also moves an open
// breaker whose OpenTimeout has passed to half-open) and, if it gets it,
// PINGs the upstream. After the last PING needed, OnRecover runs before
// the success is reported, which closes the breaker.
func (b *Breaker) probeOnce(ctx context.Context) {
	done, err := b.cb.Allow()
	if err != nil {
		return // still open, or the half-open slot is taken: like open
	}
	b.probes.Add(1)
	pctx, cancel := context.WithTimeout(ctx, b.timeout)
	err = b.probe(pctx)
	cancel()
	if err == nil && b.cb.Counts().ConsecutiveSuccesses+1 >= uint32(b.cfg.HalfOpenProbes) {
		if f := b.recoverFn.Load(); f != nil {
			b.setState(BreakerRecovering, "")
			if rerr := (*f)(ctx); rerr != nil {
				err = errRecover
				if ctx.Err() != nil {
					err = ctx.Err()
				}
			}
		}
	}
	switch {
	case errors.Is(err, errRecover):
		b.cause.Store("recover")
	case err != nil:
		b.cause.Store(FailureKind(err))
	}
	done(err)
}

// notify delivers queued transitions to the log and the listeners.
func (b *Breaker) notify(ctx context.Context) {
	defer b.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		}
		b.mu.Lock()
		q, ls := b.queue, b.listeners
		b.queue = nil
		b.mu.Unlock()
		for _, tr := range q {
			switch tr.To {
			case BreakerOpen:
				b.log.Warn("upstream circuit breaker open: commands fail fast until the upstream answers again",
					"from", tr.From.String(), "cause", tr.Cause)
			case BreakerClosed:
				b.log.Info("upstream circuit breaker closed: the upstream answers again", "from", tr.From.String())
			default:
				b.log.Debug("upstream circuit breaker", "from", tr.From.String(), "to", tr.To.String())
			}
			for _, f := range ls {
				f(tr)
			}
		}
	}
}

// close stops the probe (cancelling a PING or OnRecover in progress) and the
// notifier, and waits for them.
func (b *Breaker) close() {
	b.cancel()
	b.wg.Wait()
}
