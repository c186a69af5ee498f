package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/batch"
)

// ErrNoLane is returned when every dedicated upstream connection is taken and
// none came free within the upstream timeout.
var ErrNoLane = errors.New("no dedicated upstream connection available")

// Lane is an upstream connection reserved for one client while it needs a
// connection of its own: a transaction that WATCHes keys (WATCH state lives on
// the connection) and blocking commands (BLPOP and friends, which would stall
// every client behind them on a shared connection).
//
// A Lane is used by one goroutine at a time, except Abort, which may be called
// from any goroutine to end a blocked call.
type Lane struct {
	u      *Upstream
	proto  int
	opt    *redis.Options
	client *redis.Client // PoolSize 1: exactly one upstream connection
	nc     atomic.Pointer[net.Conn]
	pipe   redis.Pipeliner
	// aborted is set by Abort: the Exec it interrupts ended because the
	// client went away, which the breaker does not count.
	aborted atomic.Bool
	// unclean is set when the breaker refused an Exec: the session may have
	// left state on the connection (WATCH) that the refused command would
	// have cleared, so Release drops the connection.
	unclean bool
	// inExec is set while an Exec may be waiting for the upstream, so that
	// the breaker opening can abort it (abortInFlight).
	inExec atomic.Bool
	// lost is set by abortInFlight: the lane's connection, and any WATCH or
	// MULTI on it, is gone, so every later Exec fails until Release, instead
	// of running the rest of a transaction on a new connection.
	lost atomic.Bool
}

// lanePool holds the idle lanes of one RESP version and counts the rest.
type lanePool struct {
	mu     sync.Mutex // protects idle, all, total, closed and the clients of released lanes
	idle   []*Lane
	all    []*Lane
	total  int
	closed bool          // closeLanes ran: lanes released later are dropped
	free   chan struct{} // a token is sent when a lane is released
}

// AcquireLane reserves a dedicated upstream connection for the caller. Lanes
// are created on demand up to Config.MaxLanes per RESP version and reused
// after Release; when all are taken it waits up to the upstream timeout.
// While the circuit breaker is not closed it fails at once with
// ErrUnavailable.
func (u *Upstream) AcquireLane(ctx context.Context, proto int) (*Lane, error) {
	if !u.breaker.allows() {
		u.breaker.reject()
		return nil, ErrUnavailable
	}
	p := &u.lanes[0]
	if proto == 3 {
		p = &u.lanes[1]
	}
	timer := time.NewTimer(u.cfg.Timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errClosed
		}
		if n := len(p.idle); n > 0 {
			l := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			return l, nil
		}
		if p.total < u.cfg.MaxLanes {
			p.total++
			p.mu.Unlock()
			l, err := u.newLane(proto)
			p.mu.Lock()
			if err != nil {
				p.total--
			} else {
				p.all = append(p.all, l)
			}
			p.mu.Unlock()
			return l, err
		}
		p.mu.Unlock()
		select {
		case <-p.free:
		case <-timer.C:
			return nil, ErrNoLane
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (u *Upstream) newLane(proto int) (*Lane, error) {
	opt, err := u.cfg.Options(proto)
	if err != nil {
		return nil, err
	}
	l := &Lane{u: u, proto: proto}
	opt.PoolSize = 1
	opt.MaxActiveConns = 1
	opt.ReadTimeout = -1 // blocking commands wait as long as they ask; callers set deadlines by context
	tlsCfg := opt.TLSConfig
	timeout := u.cfg.Timeout
	// Own dialer, so that Abort can close the socket under a blocked read.
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second}
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tlsCfg != nil {
			tc := tls.Client(nc, tlsCfg.Clone())
			if err := tc.HandshakeContext(ctx); err != nil {
				nc.Close()
				return nil, err
			}
			nc = tc
		}
		l.nc.Store(&nc)
		return nc, nil
	}
	opt.OnConnect = func(context.Context, *redis.Conn) error {
		u.dials.Add(1)
		return nil
	}
	l.opt = opt
	l.client = redis.NewClient(opt)
	l.pipe = l.client.Pipeline()
	return l, nil
}

// renew replaces the lane's go-redis client, whose connection Abort closed,
// with a new one that dials when next used. go-redis notices a closed plain
// TCP socket before reusing it, but not a closed TLS connection (Upstash's):
// without this, the next client on the lane got an upstream error.
func (l *Lane) renew() {
	l.client.Close()
	l.nc.Store(nil)
	l.client = redis.NewClient(l.opt)
	l.pipe = l.client.Pipeline()
}

// Exec runs b as one pipeline on the lane. With a deadline in ctx the
// round trip is bounded by it; without one (blocking commands) it waits until
// the upstream answers or Abort is called. While the circuit breaker is not
// closed, and after its opening aborted a call on the lane (abortInFlight),
// every reply is ErrUnavailable and nothing is sent.
func (l *Lane) Exec(ctx context.Context, b *batch.Batch) {
	br := l.u.breaker
	l.inExec.Store(true) // before the admission: see engine.roundTrip
	defer l.inExec.Store(false)
	ticket, ok := br.admit()
	if !ok || l.lost.Load() {
		br.reject()
		l.unclean = true
		for i := range b.Replies {
			b.Replies[i] = batch.Reply{Err: ErrUnavailable}
		}
		return
	}
	l.aborted.Store(false)
	cmds := make([]*redis.RawCmd, 0, b.Len())
	ia := argsFor(argCount(b.Cmds))
	for _, args := range b.Cmds {
		c := redis.NewRawCmd(ctx, ia.next(args)...)
		cmds = append(cmds, c)
		l.pipe.Process(ctx, c)
	}
	_, err := l.pipe.Exec(ctx)
	l.u.account(len(cmds), err)
	if l.aborted.Load() {
		br.excluded.Add(1)
	} else {
		br.record(ticket, outcomeOf(err, cmds))
	}
	for i, c := range cmds {
		b.Replies[i] = replyOf(c, err)
	}
}

// Abort closes the lane's socket: a call blocked on it returns with an error
// at once. The lane dials again when next used.
func (l *Lane) Abort() {
	l.aborted.Store(true)
	if p := l.nc.Load(); p != nil {
		(*p).Close()
	}
}

// Release gives the lane back. The caller must have left the connection
// clean (no WATCH, no MULTI, no subscription), unless the breaker refused a
// call (see unclean). A lane that was aborted or left unclean gets a new
// go-redis client here, which dials when next used; a lane whose call failed
// otherwise is redialed by go-redis, which drops a connection after an error.
func (l *Lane) Release() {
	p := &l.u.lanes[0]
	if l.proto == 3 {
		p = &l.u.lanes[1]
	}
	p.mu.Lock()
	if p.closed {
		// closeLanes closed the lane's client already.
		p.mu.Unlock()
		return
	}
	if l.unclean || l.aborted.Load() || l.lost.Load() {
		l.unclean = false
		l.aborted.Store(false)
		l.lost.Store(false)
		l.Abort()
		l.renew()
	}
	p.idle = append(p.idle, l)
	p.mu.Unlock()
	select {
	case p.free <- struct{}{}:
	default:
	}
}

// abortInFlight aborts the lanes with a call waiting for the upstream: the
// breaker opened, and a blocking command with no deadline (BLPOP key 0) or a
// transaction would otherwise wait for a blackholed upstream until TCP
// keepalive gave up on it, minutes later. Their clients get an error now;
// the breaker does not count it (see aborted).
func (u *Upstream) abortInFlight() {
	for i := range u.lanes {
		p := &u.lanes[i]
		p.mu.Lock()
		for _, l := range p.all {
			if l.inExec.Load() {
				l.lost.Store(true)
				l.Abort()
			}
		}
		p.mu.Unlock()
	}
}

// closeLanes closes every lane; a lane still in use fails its next call.
func (u *Upstream) closeLanes() {
	for i := range u.lanes {
		p := &u.lanes[i]
		p.mu.Lock()
		for _, l := range p.all {
			l.Abort()
			l.client.Close()
		}
		p.idle, p.all = nil, nil
		p.closed = true
		p.mu.Unlock()
	}
}

// argSpace turns a round trip's arguments into go-redis arguments with two
// allocations for the whole round trip instead of one per argument: each
// argument is a *string (which go-redis writes as a bulk string, and which
// fits in an interface without boxing) pointing at a string that shares the
// argument's bytes. The bytes are the client's parsed command, which nobody
// changes until the round trip is over.
type argSpace struct {
	strs []string
	ifs  []interface{}
}

// argCount is the number of arguments of cmds, to size an argSpace.
func argCount(cmds [][][]byte) int {
	n := 0
	for _, args := range cmds {
		n += len(args)
	}
	return n
}

func argsFor(n int) *argSpace {
	return &argSpace{strs: make([]string, 0, n), ifs: make([]interface{}, 0, n)}
}

func (a *argSpace) next(args [][]byte) []interface{} {
	start := len(a.ifs)
	for _, b := range args {
		s := ""
		if len(b) > 0 {
			s = unsafe.String(&b[0], len(b))
		}
		a.strs = append(a.strs, s)
		a.ifs = append(a.ifs, &a.strs[len(a.strs)-1])
	}
	return a.ifs[start:len(a.ifs):len(a.ifs)]
}
