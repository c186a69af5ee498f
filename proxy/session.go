package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/roomproxy/roomproxy/acl"
	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/rooms"
	"github.com/tidwall/redcon"
)

// slot is one command's place in the reply order: a local answer held in
// s.local[start:end], or the index of a forwarded command in s.batch.
type slot struct {
	fwd        int32 // -1 for a local answer
	start, end int32
	quiet      bool // CLIENT REPLY OFF or SKIP: run it, send nothing
	hidden     bool // MULTI and queued commands sent with EXEC: their replies were given already
	roomRead   bool // a single-key read of a room key: a nil reply is read through from the room store
	pending    bool // a read answered from a debounced write
	fromStore  bool // a read answered from the room store
	roomCmd    bool // a forwarded read of room keys: served from the store if the upstream fails it
	spec       *Spec
}

// Client reply modes (CLIENT REPLY).
const (
	replyOn = iota
	replyOff
	replySkip
)

// session is one client connection. Everything in it is owned by the
// connection's goroutine, except the fields marked atomic, which INFO and
// Shutdown read from other goroutines.
type session struct {
	srv   *Server
	nc    net.Conn
	ctx   context.Context
	stop  context.CancelFunc
	guard *frameGuard
	specs specMemo // the session goroutine's command lookups
	wr    *redcon.Writer

	id        int64
	addr      string
	laddr     string
	created   time.Time
	proto     int
	authed    bool
	user      *acl.User // with an ACL file: whose rules apply (nil until AUTH, or without a file)
	name      string
	libName   string
	libVer    string
	replyMode int
	noEvict   bool
	noTouch   bool
	quit      bool // QUIT ran: write what is due, then close
	quietNow  bool // set by CLIENT REPLY OFF|SKIP: its own reply is not sent

	authFailures int

	tx           txState
	lane         Lane             // pinned by WATCH, or held for a blocking command
	forwardNext  [][]byte         // set by a local handler: forward this as the command's own reply
	afterForward [][][]byte       // hidden commands to send right after forwardNext (room TTLs after EXEC)
	afterDrain   []func()         // run once the current batch has reached the upstream (room locks)
	landings     []rooms.Admitted // room writes' growth, landed when the batch drains (inFlight)

	sub        Subscriber // from the first SUBSCRIBE on
	channels   map[string]bool
	patterns   map[string]bool
	inbox      chan readResult
	ack        chan struct{}
	readerDone chan struct{}
	needAck    bool // the reader waits for the go-ahead to read the next batch

	lastCmd atomic.Int64 // unix nanoseconds of the last command, for CLIENT INFO

	// unflushed counts bytes written to wr since the last flush (redcon's
	// Writer.Buffer copies, so it is not asked).
	unflushed int

	batchStart    time.Time // when the current batch was read
	writeDeadline time.Time // the socket's write deadline (see flush)

	// Per-batch scratch, reused.
	cmds  [][][]byte // the batch's commands: arguments sliced from the guard's buffer
	argv  [][]byte   // storage for cmds' argument lists
	out   []byte     // where local handlers append their reply
	local []byte     // local replies of the current batch
	slots []slot
	batch *batch.Batch
}

func (s *session) authenticated() bool { return s.authed }

// handshake runs a TLS client's handshake, bounded by the frame deadline
// (a client that connects and stays silent cannot hold it longer) and ended
// by Shutdown's nudge or Close.
func (s *session) handshake(tc *tls.Conn) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.lim.FrameTimeout)
	defer cancel()
	return tc.HandshakeContext(ctx)
}

// serve runs the connection until the client leaves, sends bad input, or the
// server drains.
func (s *session) serve() {
	defer func() {
		if r := recover(); r != nil {
			s.srv.obs.Panic()
			s.srv.log.Error("recovered panic in client connection", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		s.close()
	}()
	if tc, ok := s.nc.(*tls.Conn); ok {
		if err := s.handshake(tc); err != nil {
			s.srv.obs.Rejected("tls")
			s.srv.log.Debug("client TLS handshake failed", "client", s.addr, "err", err)
			return
		}
	}
	var handoff [][][]byte // a batch serveRaw could not run
	if rc := s.rawConn(); rc != nil {
		var err error
		if handoff, err = s.serveRaw(rc); err != nil {
			s.readFailed(err)
			return
		}
		if handoff == nil {
			return // QUIT, draining, or a client that stopped reading
		}
	}
	for !s.quit {
		var cmds [][][]byte
		var err error
		if handoff != nil {
			cmds, handoff = handoff, nil
		} else if s.sub == nil {
			cmds, err = s.readBatch()
		} else if cmds, err = s.await(); cmds == nil && err == nil {
			continue // messages were delivered
		}
		if err != nil {
			s.readFailed(err)
			return
		}
		s.handle(cmds)
		if !s.flush() {
			return
		}
		if s.srv.draining.Load() {
			return
		}
	}
}

// readBatch returns every complete command already received, up to the
// pipeline limit, so that a client's whole pipeline goes upstream together;
// it reads the socket only when none is. The commands of the previous batch
// are released first: their arguments must not be used after this.
func (s *session) readBatch() ([][][]byte, error) {
	for {
		cmds, err := s.ready()
		if len(cmds) > 0 || err != nil {
			return cmds, err
		}
		if err := s.guard.more(); err != nil {
			return nil, err
		}
	}
}

// ready releases the previous batch and returns the complete commands the
// guard holds, up to the pipeline limit, without reading the socket. An
// input error is returned once no command is left before it.
func (s *session) ready() ([][][]byte, error) {
	s.guard.release()
	clear(s.cmds)
	s.cmds = s.cmds[:0]
	clear(s.argv)
	s.argv = s.argv[:0]
	if cap(s.argv) > 64<<10 {
		s.argv = nil // a huge pipeline or MSET took it: give it back
	}
	if s.guard.r == s.guard.rdy {
		s.guard.advance() // before AUTH, the next frame is scanned only now
	}
	for len(s.cmds) < s.srv.lim.MaxPipeline {
		if cap(s.argv)-len(s.argv) < 16 {
			// A new block: earlier commands keep the old one.
			s.argv = make([][]byte, 0, max(256, 2*cap(s.argv)))
		}
		free := s.argv[len(s.argv):cap(s.argv)]
		args, err := s.guard.next(free[:0])
		if err != nil && len(s.cmds) == 0 {
			return nil, err
		}
		if err != nil || args == nil {
			break // an error is returned again by the next call
		}
		if len(args) <= len(free) && &args[0] == &free[0] {
			s.argv = s.argv[:len(s.argv)+len(args)] // they took these slots
		}
		s.cmds = append(s.cmds, args)
	}
	if len(s.cmds) == 0 && s.guard.err != nil {
		return nil, s.guard.err // every frame before it was taken
	}
	return s.cmds, nil
}

// serveRaw runs the session inside the socket's RawConn.Read. After writing
// a batch's replies the ordinary loop reads the socket at once, and at -P 1
// that read nearly always fails with EAGAIN (the client is still reading its
// reply) before the goroutine parks: a wasted system call per command, about
// 0.7 µs of the 9 µs a command costs the proxy. Inside RawConn.Read the
// session can park without that read: the callback returns false and Go's
// poller calls it again once the socket is readable. The poller's readiness
// mark is reset only when a RawConn.Read starts, not between calls of its
// callback, so bytes that arrive after a read mark the socket ready again.
// What a read leaves behind is told by TCP_INQ (readRaw): bytes still queued,
// or an end of stream that came with the last data and would wake nobody;
// then the session reads again before it parks.
//
// A batch whose commands read the socket from another goroutine (a blocking
// command's watcher, the subscription reader) cannot run inside the
// callback, which holds the socket's read lock: serveRaw returns it, and the
// session continues on the ordinary loop. It also returns (nil, nil) when
// the session should end: QUIT, draining, or a client that stopped reading.
func (s *session) serveRaw(rc syscall.RawConn) ([][][]byte, error) {
	var handoff [][][]byte
	var ioErr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			more, err := s.guard.readRaw(int(fd))
			if err != nil && err != syscall.EAGAIN {
				ioErr = err
				return true
			}
			s.guard.advance()
			for {
				cmds, err := s.ready()
				if err != nil {
					ioErr = err
					return true
				}
				if len(cmds) == 0 {
					break
				}
				if s.needsSocket(cmds) {
					handoff = cmds
					return true
				}
				s.handle(cmds)
				if !s.flush() || s.quit || s.srv.draining.Load() {
					return true
				}
			}
			if !more {
				s.guard.setDeadline()
				return false // park until the socket is readable
			}
		}
	})
	if err == nil {
		err = ioErr
	}
	return handoff, err
}

// needsSocket reports whether a batch holds a command that reads the client
// socket from another goroutine (see serveRaw).
func (s *session) needsSocket(cmds [][][]byte) bool {
	for _, args := range cmds {
		sp := s.specs.lookup(s.srv.table, args[0])
		if sp == nil {
			continue
		}
		if blocks(sp, args) || sp.Name == "subscribe" || sp.Name == "psubscribe" {
			return true
		}
	}
	return false
}

// rawConn is the socket's RawConn for serveRaw, or nil where serveRaw
// cannot be used (not TCP, TLS, not Linux, TCP_INQ refused; test settings).
func (s *session) rawConn() syscall.RawConn {
	if s.srv.cfg.ordinaryReads {
		return nil
	}
	return enableRaw(s.nc)
}

// await is the read step of a subscribed session: it waits for either the
// next client batch or upstream messages, which it writes at once.
func (s *session) await() ([][][]byte, error) {
	if s.needAck {
		s.ack <- struct{}{}
		s.needAck = false
	}
	select {
	case in := <-s.inbox:
		s.needAck = true
		return in.cmds, in.err
	case m, ok := <-s.sub.Messages():
		if !ok {
			return nil, errors.New("subscription closed")
		}
		s.deliver(m)
		for range 63 {
			select {
			case m, ok := <-s.sub.Messages():
				if ok {
					s.deliver(m)
				}
			default:
			}
		}
		if !s.flush() {
			return nil, errors.New("client gone")
		}
		return nil, nil
	}
}

// readFailed answers a protocol error as Redis does, then the caller closes.
func (s *session) readFailed(err error) {
	var pe *protoError
	switch {
	case errors.As(err, &pe) || strings.HasPrefix(err.Error(), "Protocol error"):
		s.srv.obs.Rejected("protocol")
		s.writeError("ERR " + err.Error())
	case errors.Is(err, errTooBigRequest):
		s.srv.obs.Rejected("request_size")
		s.writeError("ERR " + err.Error())
	case errors.Is(err, os.ErrDeadlineExceeded):
		if !s.srv.draining.Load() {
			s.srv.obs.Rejected("timeout")
		}
		return
	default: // EOF, reset: the client left
		return
	}
	s.flush()
}

// flush sends buffered replies, bounded by the output timeout: a client that
// does not read its replies is disconnected.
func (s *session) flush() bool {
	if s.unflushed == 0 {
		return true
	}
	s.unflushed = 0
	if t := s.srv.lim.OutputTimeout; t > 0 {
		// Moved forward only once half of it is used: a runtime timer
		// update per flush is a cost every -P 1 command pays, and a client
		// still gets between t/2 and t to take each batch of replies.
		if now := time.Now(); s.writeDeadline.Sub(now) < t/2 {
			s.writeDeadline = now.Add(t)
			s.nc.SetWriteDeadline(s.writeDeadline)
		}
	}
	if err := s.wr.Flush(); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.srv.obs.Rejected("slow_consumer")
		}
		return false
	}
	return true
}

func (s *session) close() {
	s.stop()
	s.nc.Close()
	if s.lane != nil {
		s.lane.Abort() // WATCH or a blocked call may be left on it
		s.lane.Release()
		s.lane = nil
	}
	s.closeSubscriber()
	s.landAll()
	s.srv.forget(s)
}

// handle runs one client batch: local answers are computed in order as they
// come, everything forwarded goes upstream as one pipeline, and the replies
// are written in request order.
func (s *session) handle(cmds [][][]byte) {
	now := time.Now()
	s.batchStart = now
	s.lastCmd.Store(now.UnixNano())
	s.srv.commands.Add(int64(len(cmds)))
	s.batch.Reset(s.proto)
	for i := range cmds {
		if s.quit {
			break
		}
		s.dispatch(cmds[i])
		if s.batch.Len() >= s.srv.lim.MaxPipeline {
			s.drain()
		}
	}
	s.drain()
}

// dispatch classifies one command and either answers it into a local slot or
// adds it to the upstream batch.
func (s *session) dispatch(args [][]byte) {
	sl := slot{fwd: -1}
	before := s.replyMode
	s.out = s.local
	start := len(s.out)
	sp := s.specs.lookup(s.srv.table, args[0])
	switch {
	case sp == nil:
		s.unknown(args)
	case !sp.arityOK(len(args)) && !(sp.Subs != nil && len(args) >= 2):
		s.err("ERR wrong number of arguments for '" + sp.fullName() + "' command")
	default:
		if sp.Subs != nil && len(args) >= 2 {
			parent := sp
			if sp = parent.sub(args[1]); sp == nil {
				s.err(fmt.Sprintf("ERR unknown subcommand '%.128s'. Try %s HELP.", args[1], strings.ToUpper(parent.Name)))
				break
			}
			if !sp.arityOK(len(args)) {
				s.err("ERR wrong number of arguments for '" + sp.fullName() + "' command")
				break
			}
		}
		sl.spec = sp
		s.run(sp, args, &sl)
	}
	// CLIENT REPLY: OFF silences until ON (whose own +OK is sent); SKIP
	// silences the next command only.
	switch {
	case s.quietNow:
		sl.quiet, s.quietNow = true, false
	case before == replySkip:
		sl.quiet = true
		if s.replyMode == replySkip {
			s.replyMode = replyOn
		}
	case before == replyOff && s.replyMode == replyOff:
		sl.quiet = true
	}
	if sl.spec == nil && s.tx.active {
		s.tx.dirty = true // Redis discards a transaction with a refused command
	}
	if sl.fwd < 0 {
		s.local = s.out
		sl.start, sl.end = int32(start), int32(len(s.out))
		if sl.spec == nil {
			s.srv.obs.Rejected("unknown_command")
		}
	}
	s.slots = append(s.slots, sl)
}

// keyTooLarge reports whether a key of the command is longer than
// MAX_KEY_BYTES (Upstash's 32 KiB): such a command is refused here, with
// Upstash's text, instead of being acknowledged by the debouncer and then
// refused at every flush.
func (s *session) keyTooLarge(sp *Spec, args [][]byte) bool {
	limit, big := s.srv.lim.MaxKeyBytes, false
	sp.eachKeyAll(args, func(k []byte) bool { big = len(k) > limit; return !big })
	return big
}

// run applies the access rules and carries out a known command.
func (s *session) run(sp *Spec, args [][]byte, sl *slot) {
	f := sp.Flags
	switch {
	case !s.authed && f&FlagNoAuth == 0:
		s.err("NOAUTH Authentication required.")
	case s.user != nil && f&FlagNoAuth == 0 && !s.permitted(sp, args):
		if s.tx.active {
			s.tx.dirty = true // Redis discards a transaction with a refused command
		}
	case s.keyTooLarge(sp, args):
		s.err("ERR max key size exceeded")
		if s.tx.active {
			s.tx.dirty = true
		}
	case s.proto == 2 && s.sub != nil && s.subscribed() > 0 && !subscriberModeAllows(sp.Name):
		s.err("ERR Can't execute '" + sp.fullName() + "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
	case s.tx.active && f&FlagTx == 0:
		s.queue(sp, args)
	case f&FlagDenied != 0:
		s.err("NOPERM this user has no permissions to run the '" + sp.fullName() + "' command")
	case f&FlagUnsupported != 0:
		s.err("ERR '" + sp.fullName() + "' is not supported by roomproxy: " + sp.reason)
	case f&FlagLocal != 0:
		s.local1(sp, args)
		if s.forwardNext != nil {
			sl.fwd = int32(s.batch.Add(s.forwardNext, false))
			s.forwardNext = nil
			for _, c := range s.afterForward {
				s.hidden(c)
			}
			s.afterForward = nil
		}
	case blocks(sp, args):
		if s.srv.cfg.Rooms != nil && s.touchesRoom(sp, args) {
			if !s.settle(sp.keys(args), f&FlagWrite != 0) {
				return
			}
			if f&FlagWrite != 0 {
				s.noteWrites(sp.keys(args))
			}
		}
		s.blocking(args)
	case f&FlagWrite != 0 && s.srv.cfg.Rooms != nil && s.touchesRoom(sp, args):
		s.roomWrite(sp, args, sl)
	case f&FlagScript != 0 && s.srv.cfg.Rooms != nil && s.roomScript(args, sl):
	case s.srv.cfg.Rooms != nil && sp.First > 0 && s.touchesRoom(sp, args):
		keys := sp.keys(args)
		s.touchRooms(keys)
		settled := false
		if f&FlagRead != 0 {
			var answered bool
			if answered, settled = s.readPending(sp.Name, args); answered {
				sl.pending = true // answered from a pending write
				return
			}
		}
		if s.srv.cfg.Rooms.Degradable() && s.roomDegraded(sp, args) {
			s.fromStore(sp, args, f&FlagWrite != 0)
			sl.fromStore = f&FlagRead != 0
			return
		}
		if !settled && !s.settle(keys, f&FlagWrite != 0) {
			return
		}
		sl.fwd = int32(s.batch.Add(args, f&FlagRead != 0))
		sl.roomRead = f&FlagRead != 0 && sp.First == sp.Last
		sl.roomCmd = true
	default:
		sl.fwd = int32(s.batch.Add(args, f&FlagRead != 0))
	}
}

// local1 runs a local handler with a recover of its own: a bug in one
// handler answers that command with an error and the connection goes on.
func (s *session) local1(sp *Spec, args [][]byte) {
	mark := len(s.out)
	defer func() {
		if r := recover(); r != nil {
			s.srv.obs.Panic()
			s.srv.log.Error("recovered panic in command handler", "command", sp.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.out = s.out[:mark]
			s.err("ERR internal error")
		}
	}()
	sp.handler(s, args)
}

// drain sends the pending upstream batch, waits for it, and writes every
// slot's reply in order into the output buffer.
func (s *session) drain() {
	if s.batch.Len() > 0 {
		s.srv.batches.Add(1)
		if s.lane != nil {
			// WATCH pinned a connection: everything goes there until EXEC.
			ctx, cancel := s.upstreamCtx()
			s.lane.Exec(ctx, s.batch)
			cancel()
		} else {
			s.srv.up.Submit(s.batch)
			s.batch.Wait()
		}
		if s.srv.cfg.Rooms != nil {
			var again [][][]byte
			for i := range s.slots {
				if sl := &s.slots[i]; sl.hidden && sl.fwd >= 0 {
					again = reloadOf(again, s.batch.Cmds[sl.fwd], s.batch.Replies[sl.fwd])
				}
			}
			s.reloadScripts(again)
		}
	}
	elapsed := time.Since(s.batchStart)
	for _, unlock := range s.afterDrain {
		unlock()
	}
	s.land()
	if s.srv.cfg.Rooms != nil {
		if s.srv.cfg.Rooms.Degradable() {
			s.rescueReads()
		}
		s.readThrough()
	}
	clear(s.afterDrain)
	s.afterDrain = s.afterDrain[:0]
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.hidden {
			continue
		}
		var outcome Outcome
		lookup := LookupNone
		if sl.fwd >= 0 {
			r := s.batch.Replies[sl.fwd]
			switch {
			case r.Err != nil:
				outcome = OutcomeUpstreamError
				if !sl.quiet {
					s.writeError(upstreamErrorText(r.Err))
				}
			default:
				outcome = OutcomeOK
				if len(r.Raw) > 0 && (r.Raw[0] == '-' || r.Raw[0] == '!') {
					outcome = OutcomeError
				} else if sl.fromStore {
					lookup = LookupStore
				} else if sl.spec != nil && sl.spec.Flags&FlagRead != 0 && sl.spec.First > 0 && sl.spec.First == sl.spec.Last {
					lookup = LookupHit
					if isNull(r.Raw) {
						lookup = LookupMiss
					}
				}
				if !sl.quiet {
					s.writeRaw(r.Raw)
				}
			}
		} else {
			raw := s.local[sl.start:sl.end]
			outcome = OutcomeOK
			switch {
			case sl.pending:
				lookup = LookupPending
			case sl.fromStore:
				lookup = LookupStore
			}
			if len(raw) > 0 && raw[0] == '-' {
				outcome = OutcomeError
			}
			if !sl.quiet {
				s.writeRaw(raw)
			}
		}
		if sl.spec != nil && sl.spec.obs != nil {
			sl.spec.obs.Observe(outcome, elapsed, lookup)
		}
		// Bound the output buffer: large replies go out as they are ready.
		if s.unflushed > 64<<10 && !s.flush() {
			s.quit = true
		}
	}
	clear(s.slots)
	s.slots = s.slots[:0]
	s.local = s.local[:0]
	s.batch.Reset(s.proto)
}

// isNull reports whether a raw reply is Redis's nil in either protocol.
func isNull(raw []byte) bool {
	switch string(raw) {
	case "$-1\r\n", "*-1\r\n", "_\r\n":
		return true
	}
	return false
}

func (s *session) writeRaw(b []byte) {
	s.wr.WriteRaw(b)
	s.unflushed += len(b)
}

func (s *session) writeError(msg string) {
	s.wr.WriteError(msg)
	s.unflushed += len(msg) + 3
}

// upstreamErrorText is the one place where an upstream failure becomes a
// client reply. Driver text, addresses and credentials never reach a client.
func upstreamErrorText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return "TRYAGAIN upstream timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "TRYAGAIN upstream timeout"
	}
	return "TRYAGAIN upstream unavailable"
}

// unknown answers a command roomproxy does not know, in Redis's words.
func (s *session) unknown(args [][]byte) {
	var b strings.Builder
	for _, a := range args[1:] {
		if b.Len() >= 128 {
			break
		}
		fmt.Fprintf(&b, "'%.*s' ", 128-b.Len(), a)
	}
	msg := fmt.Sprintf("ERR unknown command '%.128s', with args beginning with: %s", args[0], b.String())
	s.err(strings.NewReplacer("\r", " ", "\n", " ").Replace(msg))
}
