package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/roomproxy/roomproxy/acl"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/proxy"
)

// config is everything roomproxy reads from its environment and flags. Only
// this package reads the environment.
type config struct {
	ProxyAddr       string
	ProxyPassword   string
	ProxyTLSCert    string
	ProxyTLSKey     string
	ProxyTLSCA      string
	ProxyACLFile    string
	users           *acl.Set // PROXY_ACL_FILE's, read by validate
	RedisURL        string
	RedisTLSCA      string
	RedisMaxRetries int
	RedisRetryDelay time.Duration
	RedisTimeout    time.Duration
	UpstreamConns   int
	PipelineWait    time.Duration
	Stream          string
	MaxBlocking     int
	PubSubPing      time.Duration
	ScriptsEnabled  bool
	InfoInterval    time.Duration
	EvictionAlert   int

	MongoURL        string
	MongoDB         string
	MongoRetention  time.Duration
	RoomStorePath   string
	RoomPrefix      string
	RoomStatusField string
	StatusAliases   map[string]policy.State
	TTLActive       time.Duration
	TTLWaiting      time.Duration
	RoomMaxBytes    int
	WarmUpPerSec    int
	ResyncPerSec    int
	DebounceWindow  time.Duration
	PersistInterval time.Duration
	PersistEveryN   int
	PendingRooms    int
	PendingBytes    int
	MetricsAddr     string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
	Pprof           bool

	MaxClients      int
	MaxRequestBytes int
	MaxKeyBytes     int
	MaxArgs         int
	MaxInlineBytes  int
	MaxPipeline     int
	IdleTimeout     time.Duration
	FrameTimeout    time.Duration
	AuthTimeout     time.Duration
	OutputTimeout   time.Duration

	Breaker backend.BreakerConfig // BREAKER_* (breaker.go)
}

// setting is one variable: its environment name, its flag (the same name in
// lower case with dashes), its default and how to parse it.
type setting struct {
	env, def, help string
	set            func(string) error
}

func settings(c *config) []setting {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	num := func(p *int, lo int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			if n < lo {
				return fmt.Errorf("%d is below the minimum %d", n, lo)
			}
			*p = n
			return nil
		}
	}
	ms := func(p *time.Duration) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not a number of milliseconds", v)
			}
			*p = time.Duration(n) * time.Millisecond
			return nil
		}
	}
	dur := func(p *time.Duration) func(string) error {
		return func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				if n, nerr := strconv.Atoi(v); nerr == nil {
					d, err = time.Duration(n)*time.Second, nil
				}
			}
			if err != nil || d < 0 {
				return fmt.Errorf("%q is not a duration (30s, 1m) or a number of seconds", v)
			}
			*p = d
			return nil
		}
	}
	secs := func(p *time.Duration) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("%q is not a positive number of seconds", v)
			}
			*p = time.Duration(n) * time.Second
			return nil
		}
	}
	boolean := func(p *bool) func(string) error {
		return func(v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			*p = b
			return nil
		}
	}
	oneOf := func(p *string, allowed ...string) func(string) error {
		return func(v string) error {
			v = strings.ToLower(v)
			for _, a := range allowed {
				if v == a {
					*p = v
					return nil
				}
			}
			return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
		}
	}
	return []setting{
		{"PROXY_ADDR", "127.0.0.1:6380", "address clients connect to", str(&c.ProxyAddr)},
		{"PROXY_PASSWORD", "", "password clients must give with AUTH or HELLO (empty: no AUTH; loopback only)", str(&c.ProxyPassword)},
		{"PROXY_ACL_FILE", "", "users file in a subset of Redis ACL syntax (user NAME on >password ~room:* +@read +@write -@dangerous); instead of PROXY_PASSWORD", str(&c.ProxyACLFile)},
		{"PROXY_TLS_CERT", "", "PEM certificate (chain) of a TLS listener for clients; set, PROXY_ADDR speaks TLS 1.2+ only", str(&c.ProxyTLSCert)},
		{"PROXY_TLS_KEY", "", "PEM private key of PROXY_TLS_CERT", str(&c.ProxyTLSKey)},
		{"PROXY_TLS_CLIENT_CA", "", "PEM CA bundle; set, clients must present a certificate it signed", str(&c.ProxyTLSCA)},
		{"REDIS_URL", "", "upstream: rediss://user:pass@host:port (Upstash) or redis://host:port; empty: embedded in-process Redis", str(&c.RedisURL)},
		{"REDIS_TLS_CA", "", "extra PEM CA bundle trusted for the upstream's certificate", str(&c.RedisTLSCA)},
		{"REDIS_MAX_RETRIES", "10", "retries of a read-only upstream round trip after a connection failure", num(&c.RedisMaxRetries, 0)},
		{"REDIS_RETRY_DELAY_MS", "100", "pause before such a retry, in milliseconds", ms(&c.RedisRetryDelay)},
		{"REDIS_TIMEOUT_MS", "5000", "deadline of one upstream round trip, in milliseconds", ms(&c.RedisTimeout)},
		{"UPSTREAM_CONNS", "4", "upstream connections per RESP version (round trips in flight)", num(&c.UpstreamConns, 1)},
		{"UPSTREAM_PIPELINE_WAIT", "200us", "how long a batch waits for a round trip in flight before another connection starts one", dur(&c.PipelineWait)},
		{"UPSTREAM_STREAM", "auto", "full-duplex streaming to the upstream: auto (when the round trip exceeds 2 ms), always or never", oneOf(&c.Stream, "auto", "always", "never")},
		{"MAX_BLOCKING", "128", "dedicated upstream connections per RESP version for blocking commands and WATCH", num(&c.MaxBlocking, 1)},
		{"PUBSUB_PING_INTERVAL", "30s", "PING an idle subscription connection this often to detect a dead upstream (billed; 0 turns it off)", dur(&c.PubSubPing)},
		{"SCRIPTS_ENABLED", "true", "forward EVAL, EVALSHA, SCRIPT LOAD|EXISTS, FCALL; false refuses them with -NOPERM", boolean(&c.ScriptsEnabled)},
		{"UPSTREAM_INFO_INTERVAL", "15s", "how often the upstream's INFO is polled for memory, keys and evictions (one billed command each)", dur(&c.InfoInterval)},
		{"EVICTION_ALERT_PER_MIN", "100", "log a warning when the upstream evicts more keys per minute than this (0: never)", num(&c.EvictionAlert, 0)},
		{"MONGO_URL", "", "MongoDB for the room store (mongodb://...); empty: an embedded on-disk store at ROOM_STORE_PATH", str(&c.MongoURL)},
		{"MONGO_DB", "roomproxy", "MongoDB database of the rooms collection", str(&c.MongoDB)},
		{"MONGO_COMPLETED_RETENTION", "168h", "how long completed rooms are kept in the store", dur(&c.MongoRetention)},
		{"ROOM_STORE_PATH", "roomproxy-rooms.db", "file of the embedded room store (without MONGO_URL)", str(&c.RoomStorePath)},
		{"ROOM_KEY_PREFIX", "room:", "keys with this prefix belong to rooms", str(&c.RoomPrefix)},
		{"ROOM_STATUS_FIELD", "status", "the field of a room's state document that holds its status", str(&c.RoomStatusField)},
		{"ROOM_STATUS_ALIASES", "", "more status texts, as text=state pairs separated by commas (state: waiting, active or completed), on top of the built-in ones (playing, in_progress, finished, ended, closed, ...)", aliases(&c.StatusAliases)},
		{"REDIS_TTL_ACTIVE_GAME", "3600", "TTL of every key of an active room, in seconds", secs(&c.TTLActive)},
		{"REDIS_TTL_WAITING_ROOM", "1800", "TTL of every key of a waiting room, in seconds", secs(&c.TTLWaiting)},
		{"ROOM_MAX_BYTES", "1048576", "most bytes a room's keys may hold together (larger writes: -ERR room document too large)", num(&c.RoomMaxBytes, 1024)},
		{"ROOM_WARMUP_PER_SEC", "200", "at start, waiting and active rooms missing in Redis are restored from the store at most this many a second", num(&c.WarmUpPerSec, 1)},
		{"ROOM_RESYNC_PER_SEC", "500", "after an outage, rooms written meanwhile are written back to Redis from the store at most this many a second", num(&c.ResyncPerSec, 1)},
		{"DEBOUNCE_WINDOW_MS", "500", "state writes to a room key reach Redis at most once per this many milliseconds (0: not debounced, written at once)", ms(&c.DebounceWindow)},
		{"PERSIST_INTERVAL_MS", "5000", "a room with writes has its snapshot stored in the room store at most this often, in milliseconds (debouncing on or off)", ms(&c.PersistInterval)},
		{"PERSIST_EVERY_N", "100", "... or after this many writes, whichever comes first", num(&c.PersistEveryN, 1)},
		{"PENDING_MAX_ROOMS", "10000", "most rooms with debounced writes not yet in Redis; beyond it writes go straight through (backpressure)", num(&c.PendingRooms, 1)},
		{"PENDING_MAX_BYTES", "67108864", "most bytes of debounced writes not yet in Redis; beyond it writes go straight through (backpressure)", num(&c.PendingBytes, 1024)},
		{"METRICS_ADDR", "127.0.0.1:9380", "address of /metrics, /healthz, /readyz and /health/redis (empty: off)", str(&c.MetricsAddr)},
		{"LOG_LEVEL", "info", "debug, info, warn or error", oneOf(&c.LogLevel, "debug", "info", "warn", "error")},
		{"LOG_FORMAT", "", "json or text (default: json with REDIS_URL set, text without)", oneOf(&c.LogFormat, "", "json", "text")},
		{"PPROF", "false", "serve Go's /debug/pprof on METRICS_ADDR (for profiling; off in production)", boolean(&c.Pprof)},
		{"SHUTDOWN_TIMEOUT", "30s", "time SIGTERM gives clients and pending work to finish", dur(&c.ShutdownTimeout)},
		{"MAX_CLIENTS", "10000", "client connections at once", num(&c.MaxClients, 1)},
		{"MAX_REQUEST_BYTES", "10485760", "largest command, encoded (Upstash: 10 MB)", num(&c.MaxRequestBytes, 1024)},
		{"MAX_KEY_BYTES", "32768", "longest key (Upstash: 32 KB); longer: -ERR max key size exceeded", num(&c.MaxKeyBytes, 1)},
		{"MAX_ARGS", "1048576", "most arguments in one command", num(&c.MaxArgs, 1)},
		{"MAX_INLINE_BYTES", "65536", "longest inline command or header line", num(&c.MaxInlineBytes, 256)},
		{"MAX_PIPELINE", "4096", "commands of one client sent upstream in one round trip", num(&c.MaxPipeline, 1)},
		{"IDLE_TIMEOUT", "0", "close clients idle this long (0: never)", dur(&c.IdleTimeout)},
		{"FRAME_TIMEOUT", "30s", "a started command must be complete within this", dur(&c.FrameTimeout)},
		{"AUTH_TIMEOUT", "10s", "with a password, AUTH must come within this", dur(&c.AuthTimeout)},
		{"OUTPUT_TIMEOUT", "30s", "a client must read its replies within this (at least half of it) or be disconnected", dur(&c.OutputTimeout)},
	}
}

func flagName(env string) string { return strings.ReplaceAll(strings.ToLower(env), "_", "-") }

// loadConfig reads defaults, then the environment, then flags. Every error
// names the variable it is about.
func loadConfig(args []string, getenv func(string) string, out io.Writer) (*config, error) {
	c := &config{}
	ss := append(settings(c), breakerSettings(c)...)
	fs := flag.NewFlagSet("roomproxy", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(out, "usage: roomproxy [flags]\n\nEach flag is also an environment variable (flag -proxy-addr is PROXY_ADDR); flags win.")
		fs.PrintDefaults()
	}
	for _, s := range ss {
		fs.Func(flagName(s.env), s.help+" ("+s.env+")", func(v string) error {
			if err := s.set(v); err != nil {
				return fmt.Errorf("%s: %w", s.env, err)
			}
			return nil
		})
	}
	for _, s := range ss {
		v, ok := getenvOK(getenv, s.env)
		if !ok {
			v = s.def
		}
		if err := s.set(v); err != nil {
			return nil, fmt.Errorf("%s: %w", s.env, err)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.validate()
}

func getenvOK(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

func (c *config) validate() error {
	host, _, err := net.SplitHostPort(c.ProxyAddr)
	if err != nil {
		return fmt.Errorf("PROXY_ADDR: %w", err)
	}
	if c.ProxyACLFile != "" {
		if c.ProxyPassword != "" {
			return errors.New("PROXY_ACL_FILE: set either PROXY_PASSWORD or PROXY_ACL_FILE (give the default user a password in the file)")
		}
		if c.users, err = acl.ParseFile(c.ProxyACLFile); err != nil {
			return fmt.Errorf("PROXY_ACL_FILE: %w", err)
		}
	}
	if !proxy.AuthRequired(c.ProxyPassword, c.users) && !isLoopback(host) {
		return errors.New("PROXY_ADDR: refusing to listen on a non-loopback address without PROXY_PASSWORD (or a PROXY_ACL_FILE whose default user needs a password)")
	}
	if (c.ProxyTLSCert == "") != (c.ProxyTLSKey == "") {
		return errors.New("PROXY_TLS_CERT and PROXY_TLS_KEY: set both or neither")
	}
	if c.ProxyTLSCA != "" && c.ProxyTLSCert == "" {
		return errors.New("PROXY_TLS_CLIENT_CA: needs PROXY_TLS_CERT and PROXY_TLS_KEY (client certificates are checked by the TLS listener)")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			return errors.New("REDIS_URL: want redis://host:port or rediss://user:password@host:port")
		}
	}
	if c.RoomPrefix == "" {
		return errors.New("ROOM_KEY_PREFIX: must not be empty")
	}
	if c.InfoInterval < time.Second {
		return errors.New("UPSTREAM_INFO_INTERVAL: must be at least 1s (each poll is billed)")
	}
	if c.PersistInterval == 0 {
		return errors.New("PERSIST_INTERVAL_MS: must be above 0")
	}
	if c.RedisTimeout == 0 {
		return errors.New("REDIS_TIMEOUT_MS: must be above 0")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// aliases parses ROOM_STATUS_ALIASES: "text=state,text=state".
func aliases(p *map[string]policy.State) func(string) error {
	return func(v string) error {
		*p = map[string]policy.State{}
		canonical := map[string]policy.State{"waiting": policy.Waiting, "active": policy.Active, "completed": policy.Completed}
		for _, pair := range strings.Split(v, ",") {
			if strings.TrimSpace(pair) == "" {
				continue
			}
			text, state, ok := strings.Cut(pair, "=")
			text, state = strings.ToLower(strings.TrimSpace(text)), strings.ToLower(strings.TrimSpace(state))
			s, known := canonical[state]
			if !ok || text == "" || !known {
				return fmt.Errorf("%q: want text=state with state waiting, active or completed", pair)
			}
			(*p)[text] = s
		}
		return nil
	}
}

// clientTLS is the TLS configuration of the client listener, or nil without
// PROXY_TLS_CERT.
func (c *config) clientTLS() (*tls.Config, error) {
	if c.ProxyTLSCert == "" {
		return nil, nil
	}
	crt, err := tls.LoadX509KeyPair(c.ProxyTLSCert, c.ProxyTLSKey)
	if err != nil {
		return nil, fmt.Errorf("PROXY_TLS_CERT / PROXY_TLS_KEY: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{crt}, MinVersion: tls.VersionTLS12}
	if c.ProxyTLSCA != "" {
		pemBytes, err := os.ReadFile(c.ProxyTLSCA)
		if err != nil {
			return nil, fmt.Errorf("PROXY_TLS_CLIENT_CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, errors.New("PROXY_TLS_CLIENT_CA: no PEM certificate found")
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
