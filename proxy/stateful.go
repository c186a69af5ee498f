package proxy

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/rooms"
)

// Lane is an upstream connection reserved for one session: for a transaction
// that WATCHes keys, and for blocking commands.
type Lane interface {
	// Exec runs the batch as one pipeline on the lane; ctx bounds it.
	Exec(ctx context.Context, b *batch.Batch)
	// Abort ends a blocked Exec from another goroutine.
	Abort()
	// Release gives the lane back; the session must have left it clean.
	Release()
}

// Subscriber is one session's subscription connection upstream.
type Subscriber interface {
	Subscribe(ctx context.Context, channels ...string) error
	PSubscribe(ctx context.Context, patterns ...string) error
	Unsubscribe(ctx context.Context, channels ...string) error
	PUnsubscribe(ctx context.Context, patterns ...string) error
	Messages() <-chan batch.Message
	Close() error
}

// txState is a MULTI in progress. Queued commands are held by the proxy and
// sent upstream as MULTI ... EXEC in one round trip, on one connection, when
// EXEC comes: nothing else can run inside the transaction upstream, and no
// upstream connection is held while the client builds it.
type txState struct {
	active bool
	dirty  bool // a queued command was refused: EXEC answers EXECABORT
	queued [][][]byte
	after  [][][]byte // room TTLs and key index for queued writes, sent after EXEC
	// landings are the room growth the queued writes were admitted with
	// (ROOM_MAX_BYTES), landed once EXEC has run or the transaction ended.
	landings []rooms.Admitted
}

var (
	argMulti   = [][]byte{[]byte("MULTI")}
	argExec    = [][]byte{[]byte("EXEC")}
	argUnwatch = [][]byte{[]byte("UNWATCH")}
)

// upstreamCtx bounds one round trip made from the session's goroutine.
func (s *session) upstreamCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.srv.lim.UpstreamTimeout)
}

// onLane runs args on the session's lane and writes the reply as a local
// answer. The batch is drained first so that replies keep their order.
func (s *session) onLane(ctx context.Context, cmds ...[][]byte) []batch.Reply {
	b := s.sideBatch(false, cmds)
	s.lane.Exec(ctx, b)
	return b.Replies
}

// sideBatch is a batch of cmds of their own, outside the session's batch.
func (s *session) sideBatch(readOnly bool, cmds [][][]byte) *batch.Batch {
	b := batch.New()
	b.Reset(s.proto)
	for _, c := range cmds {
		b.Add(c, readOnly)
	}
	return b
}

// viaPool sends cmds in a batch of their own through the upstream's pool
// and waits for their replies.
func (s *session) viaPool(readOnly bool, cmds ...[][]byte) []batch.Reply {
	b := s.sideBatch(readOnly, cmds)
	s.srv.up.Submit(b)
	b.Wait()
	return b.Replies
}

// localReply appends an upstream reply to the local answer of the command.
func (s *session) localReply(r batch.Reply) {
	if r.Err != nil {
		s.err(upstreamErrorText(r.Err))
		return
	}
	s.out = append(s.out, r.Raw...)
}

// queue adds a command to the open transaction, or refuses it as Redis does.
func (s *session) queue(sp *Spec, args [][]byte) {
	switch {
	case sp.Flags&FlagDenied != 0:
		s.tx.dirty = true
		s.err("NOPERM this user has no permissions to run the '" + sp.fullName() + "' command")
	case slices.Contains(sp.RedisFlags, "no-multi") ||
		(sp.Flags&FlagLocal != 0 && sp.Name != "ping" && sp.Name != "echo"):
		// Local commands change this session, not the upstream; run inside an
		// upstream transaction they would change a shared connection instead.
		s.tx.dirty = true
		s.err("ERR Command not allowed inside a transaction")
	case sp.Flags&FlagUnsupported != 0 && sp.Flags&FlagBlocking == 0:
		s.tx.dirty = true
		s.err("ERR '" + sp.fullName() + "' is not supported by roomproxy")
	case sp.Flags&FlagWrite != 0 && s.srv.cfg.Rooms != nil && s.touchesRoom(sp, args):
		ctx, cancel := s.upstreamCtx()
		p, err := s.srv.cfg.Rooms.Plan(ctx, sp.Name, args, sp.keys(args))
		cancel()
		if err != nil {
			s.tx.dirty = true
			s.err(planError(err))
			return
		}
		if p.Lifecycle {
			// Written through, a lifecycle write must reach MongoDB before
			// Redis; inside a transaction it cannot.
			s.tx.dirty = true
			s.err("ERR a room's lifecycle write (creating it, changing its status, deleting its keys) cannot run inside MULTI")
			return
		}
		if !(s.srv.cfg.Rooms.Degradable() && s.roomDegraded(sp, args)) {
			a, ok := s.admitRoomWrite(sp.Name, sp, args)
			if !ok {
				s.tx.dirty = true // refused at queue time: EXEC aborts, as in Redis
				return
			}
			if !a.Empty() {
				s.tx.landings = append(s.tx.landings, a)
			}
		}
		for _, c := range p.After {
			s.tx.after = append(s.tx.after, cloneArgs(c)) // they name the client's keys
		}
		s.tx.queued = append(s.tx.queued, cloneArgs(args))
		s.simple("QUEUED")
	default:
		s.tx.queued = append(s.tx.queued, cloneArgs(args))
		s.simple("QUEUED")
	}
}

// cloneArgs copies a command out of the guard's buffer, for a command kept
// after its batch (see frameGuard): one allocation for all its bytes.
func cloneArgs(args [][]byte) [][]byte {
	n := 0
	for _, a := range args {
		n += len(a)
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, len(args))
	for i, a := range args {
		buf = append(buf, a...)
		out[i] = buf[len(buf)-len(a) : len(buf) : len(buf)]
	}
	return out
}

func cmdMulti(s *session, _ [][]byte) {
	if s.tx.active {
		s.err("ERR MULTI calls can not be nested")
		return
	}
	s.tx = txState{active: true}
	s.simple("OK")
}

func cmdDiscard(s *session, _ [][]byte) {
	if !s.tx.active {
		s.err("ERR DISCARD without MULTI")
		return
	}
	s.endTx()
	s.tx = txState{}
	s.unpin()
	s.simple("OK")
}

// unpin ends a WATCH: the lane is cleaned with UNWATCH and given back.
func (s *session) unpin() {
	if s.lane == nil {
		return
	}
	s.drain()
	ctx, cancel := s.upstreamCtx()
	defer cancel()
	s.onLane(ctx, argUnwatch)
	s.lane.Release()
	s.lane = nil
}

// cmdExec runs the queued transaction. Without WATCH it joins the session's
// pipeline as MULTI, the commands and EXEC, of which only EXEC's reply is
// sent to the client (the others are +OK and +QUEUED, already answered). With
// WATCH it runs on the pinned lane, where the watches are.
func cmdExec(s *session, _ [][]byte) {
	if !s.tx.active {
		s.err("ERR EXEC without MULTI")
		return
	}
	// The queued writes' room growth lands once they are in the batch (or
	// ran on the lane): settleCmds may drain before that.
	defer s.endTx()
	tx := s.tx
	s.tx = txState{landings: tx.landings}
	if tx.dirty {
		s.unpin()
		s.err("EXECABORT Transaction discarded because of previous errors.")
		return
	}
	if !s.settleCmds(tx.queued) {
		s.unpin()
		return
	}
	if s.lane != nil {
		s.drain()
		ctx, cancel := s.upstreamCtx()
		defer cancel()
		cmds := append(append([][][]byte{argMulti}, tx.queued...), argExec)
		replies := s.onLane(ctx, append(cmds, tx.after...)...)
		var again [][][]byte
		for i, c := range tx.after {
			again = reloadOf(again, c, replies[len(cmds)+i])
		}
		s.reloadScripts(again)
		s.localReply(replies[len(cmds)-1])
		s.lane.Release() // EXEC, even aborted, ends the WATCH
		s.lane = nil
		return
	}
	s.batch.Tx = true
	s.hidden(argMulti)
	for _, q := range tx.queued {
		s.hidden(q)
	}
	s.forwardNext = argExec
	s.afterForward = tx.after
}

// hidden forwards a command whose reply the client must not see.
func (s *session) hidden(args [][]byte) {
	s.slots = append(s.slots, slot{fwd: int32(s.batch.Add(args, false)), hidden: true})
}

func cmdWatch(s *session, args [][]byte) {
	if s.tx.active {
		s.err("ERR WATCH inside MULTI is not allowed")
		return
	}
	if s.srv.cfg.Rooms != nil && !s.settle(args[1:], false) { // WATCH sees this proxy's pending writes
		return
	}
	if !s.pin() {
		return
	}
	ctx, cancel := s.upstreamCtx()
	defer cancel()
	s.localReply(s.onLane(ctx, args)[0])
}

func cmdUnwatch(s *session, _ [][]byte) {
	if s.lane == nil {
		s.simple("OK")
		return
	}
	s.unpin()
	s.simple("OK")
}

// pin reserves a lane for the session, after what is already batched has run.
func (s *session) pin() bool {
	if s.lane != nil {
		return true
	}
	s.drain()
	ctx, cancel := s.upstreamCtx()
	defer cancel()
	l, err := s.srv.up.Lane(ctx, s.proto)
	if err != nil {
		s.err("TRYAGAIN no upstream connection free for WATCH or a blocking command")
		return false
	}
	s.lane = l
	return true
}

// blocks reports whether a command may block upstream: BLPOP and friends,
// WAIT, and XREAD / XREADGROUP with a BLOCK option.
func blocks(sp *Spec, args [][]byte) bool {
	if sp.Flags&FlagBlocking == 0 && sp.Name != "wait" && sp.Name != "waitaof" {
		return false
	}
	if sp.Name == "xread" || sp.Name == "xreadgroup" {
		for _, a := range args[1:] {
			if strings.EqualFold(string(a), "block") {
				return true
			}
		}
		return false
	}
	return true
}

// blocking runs a blocking command on a lane with no deadline: it waits as
// long as the command asks. Meanwhile a watcher reads the client socket; if
// the client goes away, the call is aborted at once. Bytes the client sends
// meanwhile (a pipelined next command) are kept for the next read.
func (s *session) blocking(args [][]byte) {
	owned := s.lane == nil
	if !s.pin() {
		return
	}
	s.srv.blocked.Add(1)
	defer s.srv.blocked.Add(-1)
	gone := make(chan struct{})
	watched := make(chan []byte, 1)
	s.nc.SetReadDeadline(time.Time{})
	go func() {
		// Keep reading until stopped, so a disconnect is seen even after the
		// client pipelined more commands; at most 1 MiB is held, the rest
		// waits in the socket.
		var got []byte
		buf := make([]byte, 4096)
		for len(got) < 1<<20 {
			n, err := s.nc.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					close(gone)
					s.lane.Abort()
				}
				break
			}
		}
		watched <- got
	}()
	replies := s.onLane(s.ctx, args)
	s.nc.SetReadDeadline(time.Unix(1, 0)) // stop the watcher
	s.guard.noDeadline = false
	early := <-watched
	s.guard.inject(early)
	select {
	case <-gone:
		s.quit = true
	default:
		s.localReply(replies[0])
	}
	if owned {
		if s.quit || replies[0].Err != nil {
			s.lane.Abort() // the connection's state is unknown: dial a new one next time
		}
		s.lane.Release()
		s.lane = nil
	}
}

// Pub/sub. A session that subscribes gets its own upstream subscription
// connection (go-redis PubSub, which restores subscriptions after a
// reconnect), so PUBSUB NUMSUB counts every client of every proxy exactly.
// From the first SUBSCRIBE on, a reader goroutine hands the session its
// commands while the session's goroutine also waits for messages; it alone
// writes to the client.

// subscribed is the number of channels and patterns the session listens to.
func (s *session) subscribed() int { return len(s.channels) + len(s.patterns) }

func (s *session) subReply(kind string, name *string) {
	s.pushHeader(3)
	s.bulkString(kind)
	if name == nil {
		s.null()
	} else {
		s.bulkString(*name)
	}
	s.integer(int64(s.subscribed()))
}

// startSubscriber opens the upstream subscription and the reader goroutine.
func (s *session) startSubscriber() {
	if s.sub != nil {
		return
	}
	s.sub = s.srv.up.Subscriber(s.proto)
	s.channels, s.patterns = map[string]bool{}, map[string]bool{}
	s.inbox = make(chan readResult)
	s.ack = make(chan struct{})
	s.readerDone = make(chan struct{})
	s.needAck = true
	go s.reader()
}

type readResult struct {
	cmds [][][]byte
	err  error
}

// reader reads client commands for a subscribed session, one batch at a
// time: it waits for the session to finish a batch before reading the next,
// so the guard is never used by two goroutines at once, and a batch's
// arguments are released only once it is done. It starts by waiting too:
// the batch that subscribed is still running.
func (s *session) reader() {
	defer close(s.readerDone)
	for {
		select {
		case <-s.ack:
		case <-s.ctx.Done():
			return
		}
		cmds, err := s.readBatch()
		select {
		case s.inbox <- readResult{cmds, err}:
		case <-s.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func cmdSubscribe(s *session, args [][]byte) {
	pattern := strings.EqualFold(string(args[0]), "psubscribe")
	s.drain()
	s.startSubscriber()
	names := make([]string, 0, len(args)-1)
	for _, a := range args[1:] {
		names = append(names, string(a))
	}
	ctx, cancel := s.upstreamCtx()
	defer cancel()
	var err error
	kind := "subscribe"
	if pattern {
		kind = "psubscribe"
		err = s.sub.PSubscribe(ctx, names...)
	} else {
		err = s.sub.Subscribe(ctx, names...)
	}
	if err == nil {
		err = s.awaitConfirmations(ctx, kind, names)
	}
	if err != nil {
		s.err(upstreamErrorText(err))
		return
	}
	for i := range names {
		if pattern {
			s.patterns[names[i]] = true
		} else {
			s.channels[names[i]] = true
		}
		s.subReply(kind, &names[i])
	}
}

// awaitConfirmations waits until the upstream has confirmed each name, so
// that a message published after the client saw its confirmation is never
// missed. Messages that arrive meanwhile are written in order.
func (s *session) awaitConfirmations(ctx context.Context, kind string, names []string) error {
	want := map[string]int{}
	for _, n := range names {
		want[n]++
	}
	left := len(names)
	for left > 0 {
		select {
		case m, ok := <-s.sub.Messages():
			if !ok {
				return errors.New("subscription closed")
			}
			if m.Kind == kind && want[m.Channel] > 0 {
				want[m.Channel]--
				left--
				continue
			}
			s.deliver(m)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func cmdUnsubscribe(s *session, args [][]byte) {
	pattern := strings.EqualFold(string(args[0]), "punsubscribe")
	kind, set := "unsubscribe", s.channels
	if pattern {
		kind, set = "punsubscribe", s.patterns
	}
	var names []string
	for _, a := range args[1:] {
		names = append(names, string(a))
	}
	if len(args) == 1 {
		for n := range set {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	if s.sub != nil && (len(names) > 0 || len(args) == 1) {
		ctx, cancel := s.upstreamCtx()
		defer cancel()
		if pattern {
			s.sub.PUnsubscribe(ctx, names...)
		} else {
			s.sub.Unsubscribe(ctx, names...)
		}
	}
	if len(names) == 0 {
		s.subReply(kind, nil)
		return
	}
	for i := range names {
		delete(set, names[i])
		s.subReply(kind, &names[i])
	}
}

// deliver writes one published message, unless the session has stopped
// listening to it (a message can cross an UNSUBSCRIBE on the wire).
func (s *session) deliver(m batch.Message) {
	switch {
	case m.Kind == "message" && s.channels[m.Channel]:
		s.push("message", m.Channel, m.Payload)
	case m.Kind == "pmessage" && s.patterns[m.Pattern]:
		s.push("pmessage", m.Pattern, m.Channel, m.Payload)
	}
}

// push writes one pub/sub frame straight to the client's output.
func (s *session) push(fields ...string) {
	mark := len(s.out)
	s.pushHeader(len(fields))
	for _, f := range fields {
		s.bulkString(f)
	}
	s.writeRaw(s.out[mark:])
	s.out = s.out[:mark]
}

// subscriberModeAllows is Redis's rule for RESP2 clients with subscriptions.
func subscriberModeAllows(name string) bool {
	switch name {
	case "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ssubscribe", "sunsubscribe", "ping", "quit", "reset":
		return true
	}
	return false
}

// closeSubscriber ends the subscription connection and the reader.
func (s *session) closeSubscriber() {
	if s.sub == nil {
		return
	}
	s.sub.Close()
	<-s.readerDone
}
