// Command roomproxy is a Redis-protocol proxy for multiplayer game backends.
// With no configuration it runs a complete system on one machine; see the
// README for the variables that point it at Upstash.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/wiring"
	"github.com/roomproxy/roomproxy/metrics"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/proxy"
	"github.com/roomproxy/roomproxy/rooms"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// The heap is small and short-lived (parsed commands, replies); a
		// higher GC target trades a little memory for less GC CPU on the hot
		// path. GOGC in the environment still wins.
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// A proxy shares its machine (with the game server as a sidecar, or
		// with other services): half the CPUs, at least one. Measured on two
		// cores, one scheduler thread avoids cross-thread wake-ups and spinning
		// that cost more than the parallelism gains (see bench/README.md).
		// GOMAXPROCS in the environment still wins.
		runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)/2))
	}
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr, nil))
}

// run starts roomproxy and blocks until SIGTERM or SIGINT; it returns the exit
// code. ready, if not nil, receives the client listener's address once
// serving (for tests).
func run(args []string, getenv func(string) string, stderr io.Writer, ready chan<- string) int {
	cfg, err := loadConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "roomproxy:", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	if err := serve(ctx, cfg, log, ready); err != nil {
		log.Error("roomproxy stopped", "err", err)
		return 1
	}
	return 0
}

// pubsubPing maps PUBSUB_PING_INTERVAL=0 (off) to the backend's "negative
// means off".
func pubsubPing(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// expireCompleted removes completed rooms older than the retention, now and
// every hour, until ctx ends. MongoDB's TTL index does the same; FerretDB and
// the embedded store have none.
func expireCompleted(ctx context.Context, store fallback.Store, retention time.Duration, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		n, err := store.Expire(ctx, time.Now().Add(-retention))
		if err != nil && ctx.Err() == nil {
			log.Warn("expiring completed rooms failed", "err", err)
		} else if n > 0 {
			log.Info("expired completed rooms", "rooms", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// openStore opens the room store: MongoDB with MONGO_URL, else the embedded
// on-disk store.
func openStore(cfg *config, log *slog.Logger) (fallback.Store, error) {
	if cfg.MongoURL == "" {
		st, err := fallback.OpenEmbedded(cfg.RoomStorePath)
		if err != nil {
			return nil, fmt.Errorf("ROOM_STORE_PATH: %w", err)
		}
		log.Warn("room store: embedded on-disk store (MONGO_URL is not set); set MONGO_URL for production", "path", cfg.RoomStorePath)
		return st, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := fallback.OpenMongo(ctx, fallback.MongoConfig{URL: cfg.MongoURL, DB: cfg.MongoDB, Retention: cfg.MongoRetention})
	if err != nil {
		return nil, errors.New("MONGO_URL: cannot reach MongoDB or create the rooms indexes")
	}
	return st, nil
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "" {
		format = "text"
		if cfg.RedisURL != "" {
			format = "json"
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, cfg *config, log *slog.Logger, ready chan<- string) error {
	clientTLS, err := cfg.clientTLS() // before anything starts: a bad certificate stops startup
	if err != nil {
		return err
	}
	redisURL := cfg.RedisURL
	if redisURL == "" {
		emb, err := backend.StartEmbedded()
		if err != nil {
			return fmt.Errorf("start embedded redis: %w", err)
		}
		defer emb.Close()
		redisURL = emb.URL()
		log.Warn("zero-configuration mode: REDIS_URL is not set, forwarding to an embedded in-process Redis whose data lives in memory only; set REDIS_URL for production")
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	up, err := backend.New(backend.Config{
		OnRoundTrip: m.RoundTrip,
		URL:         redisURL, TLSCAFile: cfg.RedisTLSCA, Timeout: cfg.RedisTimeout,
		Conns: cfg.UpstreamConns, PipelineWait: cfg.PipelineWait, Stream: cfg.Stream, MaxLanes: cfg.MaxBlocking, PubSubPing: pubsubPing(cfg.PubSubPing), MaxRetries: cfg.RedisMaxRetries, RetryDelay: cfg.RedisRetryDelay,
		Logger: log, Breaker: cfg.Breaker,
	})
	if err != nil {
		return err
	}
	m.RegisterBreaker(breakerMetrics(up))

	mon := up.StartMonitor(backend.MonitorConfig{Interval: cfg.InfoInterval, AlertPerMin: float64(cfg.EvictionAlert), Logger: log})
	defer mon.Stop()
	m.RegisterUpstreamHealth(func() metrics.UpstreamHealth {
		h := mon.Health()
		return metrics.UpstreamHealth{OK: h.OK, UsedMemory: h.UsedMemory, MaxMemory: h.MaxMemory, Keys: h.Keys,
			EvictedKeys: h.EvictedKeys, EvictionsPerMin: h.EvictionsPerMin, ReplicationLag: h.ReplicationLag}
	})
	m.RegisterUpstream(func() metrics.UpstreamStats {
		s := up.Stats()
		return metrics.UpstreamStats{Commands: s.Commands, RoundTrips: s.RoundTrips, Failures: s.Failures, Conns: s.Conns + s.StreamConns + s.Lanes}
	})
	store, err := openStore(cfg, log)
	if err != nil {
		up.Close()
		return err
	}
	defer store.Close()
	rules := policy.DefaultRules()
	rules.Prefix, rules.StatusField = cfg.RoomPrefix, cfg.RoomStatusField
	for text, state := range cfg.StatusAliases {
		rules.Aliases[text] = state
	}
	rules.TTLActive, rules.TTLWaiting, rules.MaxBytes = cfg.TTLActive, cfg.TTLWaiting, cfg.RoomMaxBytes
	roomMgr := rooms.New(rules, m.TimeStore(store), wiring.Exec(up), nil)
	scratch, err := backend.NewScratch()
	if err != nil {
		up.Close()
		return fmt.Errorf("start the scratch server for outages: %w", err)
	}
	defer scratch.Close()
	stopResync := wiring.ServeRoomsDuringOutages(up, roomMgr, scratch, cfg.ResyncPerSec, log)
	defer stopResync()
	m.RegisterFallback(fallbackMetrics(roomMgr))
	window := cfg.DebounceWindow
	if window == 0 {
		window = -1 // DEBOUNCE_WINDOW_MS=0: written at once
	}
	debounce := roomMgr.NewDebouncer(rooms.DebounceConfig{
		Window: window, PersistInterval: cfg.PersistInterval, PersistEveryN: cfg.PersistEveryN,
		MaxRooms: cfg.PendingRooms, MaxBytes: cfg.PendingBytes, Logger: log, OnFlush: m.DebounceFlush,
	})
	m.RegisterDebounce(func() metrics.DebounceStats { return metrics.DebounceStats(debounce.Stats()) })
	flushCtx, stopFlush := context.WithCancel(context.Background())
	flushDone := make(chan struct{})
	go func() { defer close(flushDone); debounce.Run(flushCtx) }()
	defer func() { stopFlush(); <-flushDone }()

	m.RegisterRooms(func() metrics.RoomStats {
		st := roomMgr.Stats()
		return metrics.RoomStats{LifecycleWrites: st.LifecycleWrites, StoreErrors: st.StoreErrors,
			RoomsRestored: st.RoomsRestored, KeysRestored: st.KeysRestored, SizeChecks: st.SizeChecks, TooLarge: st.TooLarge, ScriptReloads: st.ScriptReloads,
			NotLanded: st.NotLanded}
	})
	srv := proxy.New(wiring.Upstream(up), proxy.Config{
		Rooms:          roomMgr,
		Password:       cfg.ProxyPassword,
		Users:          cfg.users,
		DisableScripts: !cfg.ScriptsEnabled,
		TLS:            clientTLS,
		Logger:         log,
		Observer:       m,
		Limits: proxy.Limits{
			MaxClients: cfg.MaxClients, MaxRequestBytes: cfg.MaxRequestBytes, MaxKeyBytes: cfg.MaxKeyBytes, MaxArgs: cfg.MaxArgs,
			MaxInlineBytes: cfg.MaxInlineBytes, MaxPipeline: cfg.MaxPipeline,
			IdleTimeout: cfg.IdleTimeout, FrameTimeout: cfg.FrameTimeout,
			AuthTimeout: cfg.AuthTimeout, OutputTimeout: cfg.OutputTimeout,
		},
		Info: []proxy.InfoSection{{Name: "rooms", Fields: func() [][2]string {
			st := roomMgr.Stats()
			return [][2]string{
				{"room_store", storeKind(cfg)},
				{"rooms_known", strconv.FormatInt(st.Known, 10)},
				{"room_lifecycle_writes", strconv.FormatInt(st.LifecycleWrites, 10)},
				{"room_store_errors", strconv.FormatInt(st.StoreErrors, 10)},
				{"room_restores", strconv.FormatInt(st.RoomsRestored, 10)},
				{"room_restored_keys", strconv.FormatInt(st.KeysRestored, 10)},
				{"room_size_checks", strconv.FormatInt(st.SizeChecks, 10)},
				{"room_too_large", strconv.FormatInt(st.TooLarge, 10)},
				{"room_script_reloads", strconv.FormatInt(st.ScriptReloads, 10)},
				{"room_lifecycle_not_landed", strconv.FormatInt(st.NotLanded, 10)},
			}
		}}, {Name: "debounce", Fields: func() [][2]string {
			st := debounce.Stats()
			i := func(n int64) string { return strconv.FormatInt(n, 10) }
			return [][2]string{
				{"debounce_enabled", boolDigit(debounce.Enabled())},
				{"debounce_window_ms", i(max(debounce.Window().Milliseconds(), 0))},
				{"debounce_coalesced_writes", i(st.Coalesced)},
				{"debounce_write_through", i(st.WriteThrough)},
				{"debounce_reads_from_pending", i(st.PendingReads)},
				{"debounce_flushes", i(st.Flushes)},
				{"debounce_flushed_keys", i(st.FlushedKeys)},
				{"debounce_flush_errors", i(st.FlushErrors)},
				{"debounce_flush_overruns", i(st.Overruns)},
				{"debounce_max_pending_age_ms", i(st.MaxAgeMs)},
				{"debounce_snapshots", i(st.Snapshots)},
				{"debounce_snapshot_errors", i(st.SnapshotErrors)},
				{"pending_rooms", i(st.PendingRooms)},
				{"pending_keys", i(st.PendingKeys)},
				{"pending_bytes", i(st.PendingBytes)},
			}
		}}, {Name: "upstream", Fields: func() [][2]string {
			s, h := up.Stats(), mon.Health()
			mode := "remote"
			if cfg.RedisURL == "" {
				mode = "embedded"
			}
			return [][2]string{
				{"upstream_mode", mode},
				{"upstream_commands", strconv.FormatInt(s.Commands, 10)},
				{"upstream_roundtrips", strconv.FormatInt(s.RoundTrips, 10)},
				{"upstream_roundtrip_failures", strconv.FormatInt(s.Failures, 10)},
				{"upstream_retries", strconv.FormatInt(s.Retries, 10)},
				{"upstream_connections", strconv.Itoa(s.Conns + s.StreamConns)},
				{"upstream_pooled_connections", strconv.Itoa(s.Conns)},
				{"upstream_stream_connections", strconv.Itoa(s.StreamConns)},
				{"upstream_streaming", boolDigit(s.Streaming)},
				{"upstream_dedicated_connections", strconv.Itoa(s.Lanes)},
				{"upstream_dials", strconv.FormatInt(s.Dials, 10)},
				{"upstream_used_memory", strconv.FormatInt(h.UsedMemory, 10)},
				{"upstream_keys", strconv.FormatInt(h.Keys, 10)},
				{"upstream_evicted_keys", strconv.FormatInt(h.EvictedKeys, 10)},
				{"upstream_evictions_per_minute", strconv.FormatFloat(h.EvictionsPerMin, 'f', 1, 64)},
			}
		}}, breakerInfo(up), fallbackInfo(roomMgr, storeKind(cfg))},
	})

	ln, err := net.Listen("tcp", cfg.ProxyAddr)
	if err != nil {
		up.Close()
		return fmt.Errorf("PROXY_ADDR: %w", err)
	}
	var hs *http.Server
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			up.Close()
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		var h http.Handler = metrics.Handler(reg, srv.Ready, func() any {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return map[string]any{
				"upstream": mon.Health(),
				"breaker":  up.Breaker().State().String(),
				"room_store": map[string]any{
					"kind":      storeKind(cfg),
					"reachable": store.Ping(ctx) == nil,
				},
			}
		})
		if cfg.Pprof {
			mux := http.NewServeMux()
			mux.Handle("/", h)
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace) // go tool trace: scheduling, not only CPU
			h = mux
		}
		hs = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(mln)
		log.Info("metrics listening", "addr", mln.Addr().String())
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	// Warm-up runs beside client traffic and stops with the shutdown.
	warmCtx, stopWarm := context.WithCancel(context.Background())
	warmed := make(chan struct{})
	go func() {
		defer close(warmed)
		roomMgr.WarmUp(warmCtx, cfg.WarmUpPerSec, log)
		expireCompleted(warmCtx, store, cfg.MongoRetention, log)
	}()
	defer func() { stopWarm(); <-warmed }()
	log.Info("roomproxy listening", "addr", ln.Addr().String(), "auth", proxy.AuthRequired(cfg.ProxyPassword, cfg.users), "acl", cfg.users != nil, "tls", clientTLS != nil, "client_certs", cfg.ProxyTLSCA != "", "version", proxy.Version)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	// A second signal exits at once.
	second := make(chan os.Signal, 1)
	signal.Notify(second, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(second)
	go func() {
		if _, ok := <-second; ok {
			log.Error("second signal: exiting without draining")
			os.Exit(1)
		}
	}()

	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timeout ran out; remaining clients closed", "err", err)
	}
	// Clients are gone: every pending write goes to Redis and every room's
	// snapshot to the store before the upstream closes (SPEC 11).
	stopFlush()
	<-flushDone
	if err := debounce.Drain(sctx); err == nil {
		log.Info("pending room writes flushed")
	}
	if err := up.Close(); err != nil {
		log.Warn("closing upstream", "err", err)
	}
	if hs != nil {
		hs.Shutdown(sctx)
	}
	log.Info("stopped")
	if serveErr != nil && !errors.Is(serveErr, proxy.ErrServerClosed) {
		return serveErr
	}
	return nil
}

// storeKind names the room store: mongodb or embedded.
func storeKind(cfg *config) string {
	if cfg.MongoURL != "" {
		return "mongodb"
	}
	return "embedded"
}
