package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"time"

	"github.com/roomproxy/roomproxy/internal/race"
	"github.com/tidwall/redcon"
)

// protoError is a malformed-input error. Its text is Redis's own, so a client
// sees "-ERR Protocol error: ..." exactly as redis-server would send it; the
// connection is closed after it.
type protoError struct{ msg string }

func (e *protoError) Error() string { return "Protocol error: " + e.msg }

var (
	errTooBigRequest = errors.New("max request size exceeded")

	errBigInline      = &protoError{"too big inline request"}
	errBigMbulkString = &protoError{"too big mbulk count string"}
	errBigBulkString  = &protoError{"too big bulk count string"}
	errMbulkLength    = &protoError{"invalid multibulk length"}
	errBulkLength     = &protoError{"invalid bulk length"}
	errUnauthMbulk    = &protoError{"unauthenticated multibulk length"}
	errUnauthBulk     = &protoError{"unauthenticated bulk length"}
)

// Guard scan states.
const (
	stFrame      = iota // at the first byte of a frame
	stBulkHeader        // expecting "$<len>\r\n" of the next argument
	stBulkBody          // inside an argument's bytes and its CRLF
	stInline            // inside an inline command, looking for its newline
)

// frameGuard reads the client socket and cuts complete frames out of it for
// redcon's parser. redcon parses whatever it is given, trusting declared
// lengths: "$9223372036854775807" overflows its index arithmetic (a panic) and
// "*9223372036854775807" makes it loop that many times (a spinning CPU); it
// also re-scans an incomplete frame from its start on every read, so a large
// frame trickled in costs quadratic time. The guard scans each byte once,
// checks every declared count and length against the limits before anything
// is allocated for it, and hands redcon only complete frames, each parsed
// once, in place: a command's arguments are slices of the guard's buffer.
//
// Those slices stay valid until release, which the session calls before it
// reads its next batch. Until then the buffer is only appended to (inject)
// or replaced, never compacted or overwritten, so a batch in flight upstream
// still reads its own bytes. Whatever must outlive the batch (a queued MULTI
// command) is copied.
//
// Not safe for concurrent use: it belongs to its connection's goroutine.
type frameGuard struct {
	nc  net.Conn
	lim *Limits

	buf  []byte
	held int // start of the bytes of commands handed out and not released yet
	r    int // next byte to parse
	w    int // end of bytes read from the socket
	rdy  int // end of the complete frames scanned so far (r <= rdy <= w)
	scan int // next byte to scan (rdy <= scan <= w)

	state     int
	frameAt   int   // start of the frame being scanned
	argsLeft  int64 // arguments still expected in the current multibulk
	bulkLeft  int64 // body bytes (with CRLF) still expected in the current argument
	declared  int64 // bytes the current frame has declared so far
	err       error // first input error; returned once the frames before it are consumed
	authed    func() bool
	frameSeen time.Time // when the unfinished frame's first byte arrived
	// noDeadline: the socket's read deadline is known to be none. Whoever
	// else sets one (a blocking command's watcher) clears it.
	noDeadline bool
	raw        rawReader // session.serveRaw's reads (rawread_linux.go)
}

func newFrameGuard(nc net.Conn, lim *Limits, authed func() bool) *frameGuard {
	return &frameGuard{nc: nc, lim: lim, buf: make([]byte, 16<<10), authed: authed}
}

// next parses the complete frame at r, if there is one, and returns its
// arguments: slices of the guard's buffer, valid until release. argsbuf is
// storage the arguments may be appended to. It returns nil, nil when no
// complete frame is buffered (see more).
func (g *frameGuard) next(argsbuf [][]byte) ([][]byte, error) {
	for g.r < g.rdy {
		frame := g.buf[g.r:g.rdy]
		if frame[0] == '*' {
			complete, args, _, left, err := redcon.ReadNextCommand(frame, argsbuf)
			if err != nil {
				return nil, err
			}
			if !complete { // the scan saw it complete: a bug, not input
				return nil, &protoError{"incomplete frame"}
			}
			g.r = g.rdy - len(left)
			return args, nil
		}
		// Inline form: one line, split as redcon splits it (quotes and
		// escapes); a line of nothing but spaces is skipped, as by Redis.
		line := frame[:bytes.IndexByte(frame, '\n')+1]
		text := bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
		if len(bytes.Trim(text, " ")) == 0 {
			g.r += len(line)
			continue
		}
		cmd, err := redcon.Parse(line)
		if err != nil {
			return nil, err
		}
		g.r += len(line)
		return cmd.Args, nil
	}
	return nil, nil
}

// more waits until at least one complete frame is buffered, reading the
// socket as needed (session.ready has scanned what was there). It returns
// the first input error once every frame before it has been parsed.
func (g *frameGuard) more() error {
	for g.rdy == g.r {
		if g.err != nil {
			return g.err
		}
		if err := g.fill(); err != nil {
			return err
		}
		g.advance()
	}
	return nil
}

// release ends the life of every argument handed out so far: their bytes may
// be reused. Race-enabled builds (every test run) overwrite them first, so
// that a command kept past its batch without a copy shows up as garbage.
func (g *frameGuard) release() {
	if race.Enabled {
		for i := g.held; i < g.r; i++ {
			g.buf[i] = '~'
		}
	}
	g.held = g.r
	if g.r == g.w {
		g.reset()
	}
}

// inject appends bytes read from the socket by someone else (the watcher of
// a blocking command, while the command's arguments are in use) as if fill
// had read them. It never moves bytes already in the buffer.
func (g *frameGuard) inject(b []byte) {
	if len(b) == 0 {
		return
	}
	if len(g.buf)-g.w < len(b) {
		// A new buffer: the old one may still hold the arguments in use.
		nb := make([]byte, g.w+len(b)+len(g.buf))
		copy(nb, g.buf[:g.w])
		g.buf = nb
	}
	g.w += copy(g.buf[g.w:], b)
	g.advance()
}

// reset rewinds an empty buffer, giving back memory a large frame took.
func (g *frameGuard) reset() {
	g.held, g.r, g.w, g.rdy, g.scan, g.frameAt = 0, 0, 0, 0, 0, 0
	if len(g.buf) > 64<<10 {
		g.buf = make([]byte, 16<<10)
	}
}

// fill reads more bytes from the socket, making room first. It is called
// only when every argument handed out has been released (held == r), so
// compacting moves nothing in use.
func (g *frameGuard) fill() error {
	if err := g.makeRoom(); err != nil {
		return err
	}
	g.setDeadline()
	n, err := g.nc.Read(g.buf[g.w:])
	g.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// makeRoom makes space at the end of the buffer for a read.
func (g *frameGuard) makeRoom() error {
	if g.w == len(g.buf) {
		if g.r > 0 {
			n := copy(g.buf, g.buf[g.r:g.w])
			g.shift(g.r)
			g.w = n
		} else {
			limit := g.lim.MaxRequestBytes + g.lim.MaxInlineBytes
			if len(g.buf) >= limit {
				// Unreachable while the scan checks declared sizes; kept as the last
				// line of defence for the memory bound.
				return errTooBigRequest
			}
			nb := make([]byte, min(2*len(g.buf), limit))
			copy(nb, g.buf[:g.w])
			g.buf = nb
		}
	}
	return nil
}

// shift moves every index down by d after the buffer was compacted.
func (g *frameGuard) shift(d int) {
	g.held -= d
	g.r -= d
	g.rdy -= d
	g.scan -= d
	g.frameAt -= d
}

// setDeadline picks the read deadline for what the connection is waiting for:
// the rest of a started frame, the AUTH of a new client, or the next command.
func (g *frameGuard) setDeadline() {
	var d time.Duration
	switch {
	case g.w > g.rdy && g.lim.FrameTimeout > 0:
		if g.frameSeen.IsZero() {
			g.frameSeen = time.Now()
		}
		g.nc.SetReadDeadline(g.frameSeen.Add(g.lim.FrameTimeout))
		g.noDeadline = false
		return
	case !g.authed() && g.lim.AuthTimeout > 0:
		d = g.lim.AuthTimeout
	default:
		d = g.lim.IdleTimeout
	}
	switch {
	case d > 0:
		g.nc.SetReadDeadline(time.Now().Add(d))
		g.noDeadline = false
	case !g.noDeadline:
		// Without an idle timeout most reads need no deadline, and setting
		// none again costs a runtime timer update per read (2 % of the CPU
		// at -P 1): it is set only when it may have changed.
		g.nc.SetReadDeadline(time.Time{})
		g.noDeadline = true
	}
}

// advance scans new bytes, moving rdy past each frame that is complete. Before
// authentication it stops after one frame, so the limits for unauthenticated
// clients apply until AUTH has actually run.
func (g *frameGuard) advance() {
	for g.err == nil && g.scan < g.w {
		if !g.step() {
			return
		}
		if g.state == stFrame && g.scan == g.rdy {
			continue
		}
	}
}

// step consumes what it can at the scan position; it returns false when it
// needs more input or found an error.
func (g *frameGuard) step() bool {
	switch g.state {
	case stFrame:
		g.frameAt = g.scan
		g.declared = 0
		if g.buf[g.scan] != '*' {
			g.state = stInline
			return g.inline()
		}
		n, ok := g.line(g.scan+1, errBigMbulkString)
		if !ok {
			return false
		}
		count, valid := parseLen(g.buf[g.scan+1 : n-1])
		if !valid || count > int64(g.lim.MaxArgs) {
			return g.fail(errMbulkLength)
		}
		if count > int64(g.lim.PreAuthMaxArgs) && !g.authed() {
			return g.fail(errUnauthMbulk)
		}
		if count <= 0 {
			// Redis skips "*0" and "*-1" silently, so the header is cut out
			// of the buffer here.
			g.cut(g.scan, n+1)
			return true
		}
		g.declared = int64(n + 1 - g.frameAt)
		g.argsLeft = count
		g.scan = n + 1
		g.state = stBulkHeader
		return true
	case stBulkHeader:
		if g.buf[g.scan] != '$' {
			return g.fail(&protoError{"expected '$', got '" + string(g.buf[g.scan]) + "'"})
		}
		n, ok := g.line(g.scan+1, errBigBulkString)
		if !ok {
			return false
		}
		size, valid := parseLen(g.buf[g.scan+1 : n-1])
		if !valid || size < 0 {
			return g.fail(errBulkLength)
		}
		if size > int64(g.lim.PreAuthMaxBulk) && !g.authed() {
			return g.fail(errUnauthBulk)
		}
		g.declared += int64(n+1-g.scan) + size + 2
		if size > int64(g.lim.MaxRequestBytes) || g.declared > int64(g.lim.MaxRequestBytes) {
			return g.fail(errTooBigRequest)
		}
		g.bulkLeft = size + 2
		g.scan = n + 1
		g.state = stBulkBody
		return true
	case stInline:
		return g.inline()
	default: // stBulkBody
		avail := int64(g.w - g.scan)
		if avail < g.bulkLeft {
			g.scan = g.w
			g.bulkLeft -= avail
			return false
		}
		g.scan += int(g.bulkLeft)
		if g.buf[g.scan-2] != '\r' || g.buf[g.scan-1] != '\n' {
			return g.fail(errBulkLength)
		}
		g.argsLeft--
		if g.argsLeft > 0 {
			g.state = stBulkHeader
			return true
		}
		return g.complete()
	}
}

// inline handles a frame in the inline (telnet) form: one line.
func (g *frameGuard) inline() bool {
	for i := g.scan; i < g.w; i++ {
		if g.buf[i] == '\n' {
			g.scan = i + 1
			return g.complete()
		}
	}
	if g.w-g.frameAt > g.lim.MaxInlineBytes {
		return g.fail(errBigInline)
	}
	g.scan = g.w
	return false
}

// line finds the end of a header line that starts at from; it returns the
// index of its '\n'. A header with no newline within the inline limit is an
// error, as in Redis.
func (g *frameGuard) line(from int, tooBig error) (int, bool) {
	for i := from; i < g.w; i++ {
		if g.buf[i] == '\n' {
			if g.buf[i-1] != '\r' {
				if tooBig == errBigMbulkString {
					g.fail(errMbulkLength)
				} else {
					g.fail(errBulkLength)
				}
				return 0, false
			}
			return i, true
		}
	}
	if g.w-from > g.lim.MaxInlineBytes {
		g.fail(tooBig)
	}
	return 0, false
}

// complete marks the frame ending at scan as ready to parse.
func (g *frameGuard) complete() bool {
	g.state = stFrame
	g.rdy = g.scan
	g.frameSeen = time.Time{}
	// Before AUTH, one frame at a time: the next frame is scanned only after
	// this one has run, with the authentication it may have granted.
	return g.authed()
}

// cut removes buf[from:to], which lies after every ready byte.
func (g *frameGuard) cut(from, to int) {
	n := copy(g.buf[from:], g.buf[to:g.w])
	g.w = from + n
	if g.w == g.rdy {
		g.frameSeen = time.Time{}
	}
}

func (g *frameGuard) fail(err error) bool {
	g.err = err
	return false
}

// parseLen reads a decimal length as Redis's string2ll does: an optional '-',
// digits, no leading '+' or spaces, no overflow.
func parseLen(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (1<<63-1-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}
