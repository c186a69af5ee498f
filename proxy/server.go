package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomproxy/roomproxy/acl"
	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/internal/sockio"
	"github.com/roomproxy/roomproxy/rooms"
	"github.com/tidwall/redcon"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Upstream carries forwarded commands. Submit hands over a batch; the
// upstream fills every reply and calls the batch's Done, also on failure.
// Lane reserves a connection for one session (WATCH, blocking commands);
// Subscriber opens a subscription connection for one session.
type Upstream interface {
	Submit(b *batch.Batch)
	Lane(ctx context.Context, proto int) (Lane, error)
	Subscriber(proto int) Subscriber
}

// Outcome is how a command ended, for metrics.
type Outcome int

const (
	OutcomeOK            Outcome = iota // a normal reply
	OutcomeError                        // an error reply (Redis's or the proxy's)
	OutcomeUpstreamError                // the upstream could not answer
	NumOutcomes
)

func (o Outcome) String() string {
	return [...]string{"ok", "error", "upstream_error"}[o]
}

// Lookup is what a read found, for the cache hit and miss counters.
type Lookup int

const (
	LookupNone    Lookup = iota // not a read, or a read of several keys
	LookupHit                   // a read answered with a value
	LookupMiss                  // a read answered with nil: the key is not there
	LookupPending               // a read answered from a debounced write not yet in Redis
	LookupStore                 // a read Redis could not answer, answered from the room store (outage, read-through)
)

// CommandObserver records one command: its outcome, the time from receiving
// its batch to its reply being written, and for reads whether it found a
// value.
type CommandObserver interface {
	Observe(o Outcome, d time.Duration, l Lookup)
}

// Observer receives the proxy's events. Every label it is given comes from a
// closed set: command names from the table, fixed reasons.
type Observer interface {
	// Command returns the observer for one command name; called once per
	// command at start, never on the hot path. kind is "read", "write" or
	// "other".
	Command(name, kind string) CommandObserver
	ConnOpened()
	ConnClosed()
	// Rejected counts refused input by reason: "protocol", "request_size",
	// "timeout", "slow_consumer", "max_clients", "auth", "unknown_command",
	// "tls".
	Rejected(reason string)
	Panic()
}

// InfoSection is an extra INFO section supplied by another component.
type InfoSection struct {
	Name   string             // lower case, e.g. "upstream"
	Fields func() [][2]string // called on each INFO; must be safe for concurrent use
}

// Limits bound what clients can make the proxy do (SPEC section 7). The zero
// value of a field means its default.
type Limits struct {
	MaxClients      int           // connections at once; default 10000
	MaxRequestBytes int           // one command, encoded; default 10 MiB (Upstash's limit)
	MaxArgs         int           // arguments of one command; default 1<<20
	MaxInlineBytes  int           // one inline command or header line; default 64 KiB
	MaxPipeline     int           // commands sent upstream per client round trip; default 4096
	MaxKeyBytes     int           // one key; default 32 KiB (Upstash's limit)
	PreAuthMaxArgs  int           // before AUTH; default 10
	PreAuthMaxBulk  int           // before AUTH, bytes of one argument; default 16 KiB
	IdleTimeout     time.Duration // close a client idle this long; default 0 (never)
	FrameTimeout    time.Duration // a started command must be complete within; default 30 s
	AuthTimeout     time.Duration // AUTH must come within, when a password is set; default 10 s
	OutputTimeout   time.Duration // a client must take its replies within (at least half of it: see session.flush); default 30 s
	UpstreamTimeout time.Duration // round trips the session makes itself (WATCH, EXEC, SUBSCRIBE); default 5 s
	StoreTimeout    time.Duration // a room command served from the room store during an outage; default 5 s
}

func (l *Limits) withDefaults() Limits {
	d := *l
	def := func(v *int, x int) {
		if *v <= 0 {
			*v = x
		}
	}
	defd := func(v *time.Duration, x time.Duration) {
		if *v == 0 {
			*v = x
		}
	}
	def(&d.MaxClients, 10000)
	def(&d.MaxRequestBytes, 10<<20)
	def(&d.MaxArgs, 1<<20)
	def(&d.MaxInlineBytes, 64<<10)
	def(&d.MaxPipeline, 4096)
	def(&d.MaxKeyBytes, 32<<10)
	def(&d.PreAuthMaxArgs, 10)
	def(&d.PreAuthMaxBulk, 16<<10)
	defd(&d.FrameTimeout, 30*time.Second)
	defd(&d.AuthTimeout, 10*time.Second)
	defd(&d.OutputTimeout, 30*time.Second)
	defd(&d.UpstreamTimeout, 5*time.Second)
	defd(&d.StoreTimeout, 5*time.Second)
	return d
}

// Config configures a Server. The zero value works: no password, default
// limits, no metrics, logs discarded.
type Config struct {
	Password string // PROXY_PASSWORD; empty means AUTH is not required
	// Users, when set, are the users of PROXY_ACL_FILE (instead of Password):
	// AUTH and HELLO AUTH pick one, and every command, key and channel a
	// client uses is checked against its rules (see permitted).
	Users    *acl.Set
	Limits   Limits
	Logger   *slog.Logger
	Observer Observer
	Info     []InfoSection
	// Rooms applies the room rules to writes of room keys and answers ROOM.*;
	// nil turns rooms off (keys are forwarded like any other).
	Rooms *rooms.Manager
	// DisableScripts refuses EVAL, EVALSHA, SCRIPT, FCALL and FUNCTION with
	// -NOPERM (SCRIPTS_ENABLED=false).
	DisableScripts bool
	// TLS, when set, makes every connection a TLS server connection
	// (PROXY_TLS_CERT): no plaintext is served. The handshake must finish
	// within Limits.FrameTimeout; a failed one closes the connection and
	// counts as rejected input ("tls").
	TLS *tls.Config

	ordinaryReads bool // tests: sessions never use serveRaw
}

// Server is a RESP server in front of an Upstream. Serve may be called for
// several listeners; Shutdown drains them all.
type Server struct {
	cfg   Config
	lim   Limits
	log   *slog.Logger
	obs   Observer
	up    Upstream
	table *Table
	start time.Time

	nextID   atomic.Int64
	draining atomic.Bool
	accepted atomic.Int64
	refused  atomic.Int64
	commands atomic.Int64
	batches  atomic.Int64 // client batches sent upstream
	blocked  atomic.Int64 // sessions in a blocking command now

	mu        sync.Mutex // protects listeners, sessions and closed
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	closed    bool
	wg        sync.WaitGroup // one per serving connection
}

// New returns a Server forwarding to up.
func New(up Upstream, cfg Config) *Server {
	s := &Server{
		cfg: cfg, lim: cfg.Limits.withDefaults(), log: cfg.Logger, obs: cfg.Observer,
		up: up, table: NewTable(), start: time.Now(),
		listeners: make(map[net.Listener]struct{}), sessions: make(map[*session]struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	s.table.walk(func(sp *Spec) {
		sp.obs = s.obs.Command(sp.Name, sp.kind())
		if cfg.DisableScripts && sp.Flags&FlagScript != 0 {
			sp.Flags = sp.Flags&^(FlagForward|FlagLocal) | FlagDenied
		}
	})
	if cfg.Users != nil {
		var cmds []acl.Command
		s.table.walk(func(sp *Spec) { cmds = append(cmds, acl.Command{Name: sp.Name, Categories: sp.Categories}) })
		for _, r := range cfg.Users.Compile(cmds) {
			s.log.Warn("ACL rule names no command or category roomproxy knows", "rule", r)
		}
	}
	return s
}

func (s *Server) authRequired() bool { return AuthRequired(s.cfg.Password, s.cfg.Users) }

// AuthRequired reports whether clients must authenticate before anything
// else: with a password (PROXY_PASSWORD), or with users (PROXY_ACL_FILE)
// whose "default" user is not open (on and nopass).
func AuthRequired(password string, users *acl.Set) bool {
	return password != "" || (users != nil && users.Default() == nil)
}

// defaultUser is the user a new or reset connection is: the ACL file's open
// "default" user, or nil (no ACL file, or AUTH needed first).
func (s *Server) defaultUser() *acl.User {
	if s.cfg.Users == nil {
		return nil
	}
	return s.cfg.Users.Default()
}

// Table is the server's command table.
func (s *Server) Table() *Table { return s.table }

// Serve accepts connections on ln until Shutdown or Close. Temporary accept
// errors back off from 5 ms doubling to 1 s, as net/http does.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; backing off", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.accept(nc)
	}
}

func (s *Server) accept(nc net.Conn) {
	s.accepted.Add(1)
	s.mu.Lock()
	if s.closed || s.draining.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if len(s.sessions) >= s.lim.MaxClients {
		s.mu.Unlock()
		s.refused.Add(1)
		s.obs.Rejected("max_clients")
		if s.cfg.TLS == nil { // a TLS client could not read it before a handshake, which the accept loop does not wait for
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write([]byte("-ERR max number of clients reached\r\n"))
		}
		nc.Close()
		return
	}
	if s.cfg.TLS != nil {
		nc = tls.Server(nc, s.cfg.TLS) // the handshake runs in the session's goroutine
	}
	ctx, cancel := context.WithCancel(context.Background())
	sess := &session{
		srv: s, nc: nc, ctx: ctx, stop: cancel,
		id: s.nextID.Add(1), addr: nc.RemoteAddr().String(), laddr: nc.LocalAddr().String(),
		created: time.Now(), proto: 2, authed: !s.authRequired(), user: s.defaultUser(),
		batch: batch.New(),
	}
	sess.lastCmd.Store(sess.created.UnixNano())
	// Reads of the ordinary loop and every write: raw system calls on Linux
	// TCP (internal/sockio); the raw read loop makes its own.
	sc := sockio.Wrap(nc)
	sess.guard = newFrameGuard(sc, &s.lim, sess.authenticated)
	sess.wr = redcon.NewWriter(sc)
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.obs.ConnOpened()
	go sess.serve()
}

// forget removes a finished session.
func (s *Server) forget(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.obs.ConnClosed()
	s.wg.Done()
}

// Shutdown stops accepting, lets every client finish the batch it is in,
// closes clients between commands, and returns when all are gone or ctx ends;
// then it closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.closeListeners()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		// A client blocked reading is woken by a past deadline; one busy with a
		// batch sees draining when it is done. Nudged again on each tick
		// because the connection's goroutine resets its deadline before reads.
		s.nudge()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.Close()
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (s *Server) nudge() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sess := range s.sessions {
		sess.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
}

// Close closes listeners and every connection at once.
func (s *Server) Close() error {
	s.draining.Store(true)
	s.closeListeners()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

// UpstreamBatches is the number of client batches handed to the upstream.
func (s *Server) UpstreamBatches() int64 { return s.batches.Load() }

// Ready reports whether the server accepts clients: false once draining.
func (s *Server) Ready() bool { return !s.draining.Load() }

// Clients is the number of connected clients.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// info renders INFO for the requested sections, in Redis's text format.
func (s *Server) info(args [][]byte) []byte {
	want := map[string]bool{}
	all := len(args) == 0
	for _, a := range args {
		switch n := strings.ToLower(string(a)); n {
		case "all", "everything", "default":
			all = true
		default:
			want[n] = true
		}
	}
	var b strings.Builder
	section := func(name string, fields [][2]string) {
		if !all && !want[name] {
			return
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(name[:1]) + name[1:] + "\r\n")
		for _, kv := range fields {
			b.WriteString(kv[0] + ":" + kv[1] + "\r\n")
		}
	}
	up := time.Since(s.start)
	port := ""
	s.mu.Lock()
	for ln := range s.listeners {
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			port = strconv.Itoa(a.Port)
		}
	}
	clients := len(s.sessions)
	s.mu.Unlock()
	section("server", [][2]string{
		{"redis_version", redisVersion},
		{"redis_mode", "standalone"},
		{"roomproxy_version", Version},
		{"os", runtime.GOOS + " " + runtime.GOARCH},
		{"arch_bits", strconv.Itoa(strconv.IntSize)},
		{"go_version", runtime.Version()},
		{"process_id", strconv.Itoa(os.Getpid())},
		{"tcp_port", port},
		{"uptime_in_seconds", strconv.FormatInt(int64(up.Seconds()), 10)},
		{"uptime_in_days", strconv.FormatInt(int64(up.Hours()/24), 10)},
		{"loading", "0"},
	})
	section("clients", [][2]string{
		{"connected_clients", strconv.Itoa(clients)},
		{"maxclients", strconv.Itoa(s.lim.MaxClients)},
		{"blocked_clients", strconv.FormatInt(s.blocked.Load(), 10)},
	})
	section("persistence", [][2]string{{"loading", "0"}})
	section("stats", [][2]string{
		{"total_connections_received", strconv.FormatInt(s.accepted.Load(), 10)},
		{"total_commands_processed", strconv.FormatInt(s.commands.Load(), 10)},
		{"client_batches_forwarded", strconv.FormatInt(s.batches.Load(), 10)},
		{"rejected_connections", strconv.FormatInt(s.refused.Load(), 10)},
	})
	section("replication", [][2]string{{"role", "master"}, {"connected_slaves", "0"}})
	section("proxy", [][2]string{
		{"draining", boolInt(s.draining.Load())},
		{"auth_required", boolInt(s.authRequired())},
		{"max_request_bytes", strconv.Itoa(s.lim.MaxRequestBytes)},
		{"max_pipeline", strconv.Itoa(s.lim.MaxPipeline)},
		{"goroutines", strconv.Itoa(runtime.NumGoroutine())},
	})
	for _, sec := range s.cfg.Info {
		section(sec.Name, sec.Fields())
	}
	return []byte(b.String())
}

func boolInt(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Version is roomproxy's release, reported by INFO.
var Version = "0.1.0-dev"

type nopObserver struct{}

func (nopObserver) Command(string, string) CommandObserver { return nopCommand{} }
func (nopObserver) ConnOpened()                            {}
func (nopObserver) ConnClosed()                            {}
func (nopObserver) Rejected(string)                        {}
func (nopObserver) Panic()                                 {}

type nopCommand struct{}

func (nopCommand) Observe(Outcome, time.Duration, Lookup) {}
