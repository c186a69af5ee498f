// Package sockio reads and writes TCP sockets with plain non-blocking system
// calls, made without the Go runtime's system-call bookkeeping.
//
// A net.TCPConn's Read and Write go through syscall.Syscall, which enters and
// leaves the runtime's system-call state on every call. With the proxy's one
// scheduler thread (GOMAXPROCS 1 of 2), that state costs more than the call:
// entering it wakes the runtime's sysmon thread whenever sysmon had gone to
// sleep because the process was idle, and sysmon then polls every 20 µs and
// hands the scheduler to another thread whenever a call spans one of its
// ticks (a loopback write that wakes the reader often does). Under
// redis-benchmark -P 16 that was about 4,000 sysmon wakeups a second and a
// scheduler passed between three threads. A non-blocking socket call never
// blocks, so it needs none of that: Conn makes it with syscall.RawSyscall
// inside the socket's RawConn, whose poller still parks the goroutine when
// the socket is not ready and still honours deadlines.
package sockio

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a TCP connection whose Read and Write are raw non-blocking system
// calls (see the package comment). Everything else is the wrapped
// connection's.
type Conn struct {
	net.Conn
	rc       syscall.RawConn
	lastRead atomic.Int64 // when a Read last returned bytes, as time.Since(epoch)
	closed   atomic.Bool
	rd, wr   op // the Read and the Write in progress
}

// op is one direction's call in progress: its buffer, how far it got, its
// error, and the callback the RawConn runs, made once in Wrap. A callback
// made per call would capture its buffer and results and cost three heap
// allocations a call (one write per client batch, the proxy's most frequent
// call). mu serializes calls in one direction, as the socket's own read and
// write locks would.
type op struct {
	mu  sync.Mutex
	p   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// run makes one call through f (the RawConn's Read or Write) with o.fn.
func (o *op) run(f func(func(fd uintptr) bool) error, p []byte) (int, error) {
	o.mu.Lock()
	o.p, o.n, o.err = p, 0, nil
	err := f(o.fn)
	n, cause := o.n, o.err
	o.p, o.err = nil, nil
	o.mu.Unlock()
	if cause != nil {
		return n, cause
	}
	return n, err
}

var _ net.Conn = (*Conn)(nil)

var epoch = time.Now()

// Wrap returns nc as a Conn where raw system calls are supported (Linux TCP
// sockets), and nc itself otherwise.
func Wrap(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok || !supported {
		return nc
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{Conn: nc, rc: rc}
	c.rd.fn, c.wr.fn = c.rd.read, c.wr.write
	c.lastRead.Store(int64(time.Since(epoch)))
	return c
}

// Read reads into p, waiting in Go's poller until the socket is readable or
// the read deadline passes.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.rd.run(c.rc.Read, p)
	if n > 0 {
		c.lastRead.Store(int64(time.Since(epoch)))
	}
	if err != nil {
		return n, c.opError("read", err)
	}
	return n, nil
}

// Write writes all of p, waiting in Go's poller while the socket's buffer is
// full, until the write deadline passes.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.wr.run(c.rc.Write, p)
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// opError shapes errors as net.TCPConn's are: a *net.OpError around the
// cause (the poller's deadline and close errors come already wrapped by
// RawConn, and io.EOF is returned as it is).
func (c *Conn) opError(op string, err error) error {
	if _, ok := err.(*net.OpError); ok || err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// checkIdle is how long a connection must have gone without reading
// anything before SyscallConn lets go-redis's health check look at it. A
// variable for tests.
var checkIdle = time.Second

// SyscallConn is there for go-redis's pool, which peeks at a pooled
// connection's socket (a MSG_PEEK recvfrom, made through syscall.Syscall)
// before every reuse, to find connections the server closed while they sat
// idle. That is one more costly system call per round trip, and it alone
// kept the runtime's sysmon thread busy. The RawConn returned here runs a
// Read callback only when the connection has read nothing for checkIdle or
// more, when the check has something to find. For a connection that read a
// reply within the last checkIdle it returns nil without calling back, which
// go-redis takes as healthy with nothing unread; once the connection is
// closed it returns net.ErrClosed. Control and Write are the socket's own.
//
// (go-redis skips the check for connections it cannot look into, which is
// every TLS connection: Upstash connections are never checked at all.)
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return idleCheck{c}, nil }

type idleCheck struct{ c *Conn }

func (k idleCheck) Control(f func(fd uintptr)) error    { return k.c.rc.Control(f) }
func (k idleCheck) Write(f func(fd uintptr) bool) error { return k.c.rc.Write(f) }

func (k idleCheck) Read(f func(fd uintptr) bool) error {
	if k.c.closed.Load() {
		return net.ErrClosed
	}
	if time.Since(epoch)-time.Duration(k.c.lastRead.Load()) < checkIdle {
		return nil
	}
	return k.c.rc.Read(f)
}
