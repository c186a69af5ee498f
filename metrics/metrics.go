package metrics

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/roomproxy/roomproxy/proxy"
)

const namespace = "roomproxy"

// durationBuckets go from 50 µs: a local round trip takes well under a
// millisecond, a remote one several.
var durationBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// rejectReasons is the closed set of reasons for refused input.
var rejectReasons = []string{"protocol", "request_size", "timeout", "slow_consumer", "max_clients", "auth", "unknown_command", "tls"}

// Metrics holds roomproxy's Prometheus collectors, registered into the
// registry given to New. It implements proxy.Observer.
type Metrics struct {
	reg         *prometheus.Registry
	commands    *prometheus.CounterVec
	opDuration  *prometheus.HistogramVec
	hits        *prometheus.CounterVec
	misses      *prometheus.CounterVec
	writeErrors prometheus.Counter
	roundTrips  prometheus.Histogram
	clients     prometheus.Gauge
	connections prometheus.Counter
	rejected    *prometheus.CounterVec
	panics      prometheus.Counter

	flushDuration prometheus.Histogram
	pendingAge    prometheus.Histogram
}

// New creates the collectors and registers them, with the Go and process
// collectors, into reg.
func New(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		reg: reg,
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "commands_total",
			Help: "Client commands by command name and outcome (ok, error, upstream_error).",
		}, []string{"cmd", "outcome"}),
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "cache_operation_duration_seconds",
			Help:    "Time from receiving a client's batch to writing each command's reply, by kind (read, write, other).",
			Buckets: durationBuckets,
		}, []string{"kind"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_hits_total",
			Help: "Single-key reads answered with a value, by what answered (redis).",
		}, []string{"source"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_misses_total",
			Help: "Single-key reads Redis did not answer with a value, by what answered: redis (nil), pending (a debounced write not yet in Redis), mongodb (the room store: read-through or an outage).",
		}, []string{"source"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "cache_write_errors_total",
			Help: "Write commands answered with an error or not answered by the upstream.",
		}),
		roundTrips: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_roundtrip_duration_seconds",
			Help:    "Duration of upstream round trips (one pipeline each).",
			Buckets: durationBuckets,
		}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "connected_clients", Help: "Client connections open now.",
		}),
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "client_connections_total", Help: "Client connections accepted.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rejected_inputs_total",
			Help: "Client input refused, by reason.",
		}, []string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "panics_recovered_total", Help: "Panics recovered in connection handlers.",
		}),
	}
	m.flushDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "debounce_flush_duration_seconds",
		Help: "Duration of one room's flush to Redis.", Buckets: durationBuckets,
	})
	m.pendingAge = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "debounce_pending_age_seconds",
		Help:    "Age of the oldest write a flush carried to Redis: how long an acknowledged state write was held only by this process (the measured kill -9 loss bound).",
		Buckets: []float64{.1, .25, .5, .6, .75, 1, 1.5, 2, 5, 10, 30},
	})
	reg.MustRegister(m.flushDuration, m.pendingAge)
	for _, r := range rejectReasons {
		m.rejected.WithLabelValues(r)
	}
	reg.MustRegister(m.commands, m.opDuration, m.hits, m.misses, m.writeErrors, m.roundTrips, m.clients, m.connections, m.rejected, m.panics,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// UpstreamStats is what the upstream metrics are read from at scrape time.
type UpstreamStats struct {
	Commands   int64
	RoundTrips int64
	Failures   int64
	Conns      int
}

// RegisterUpstream exports the upstream's counters, read from fn at scrape time.
func (m *Metrics) RegisterUpstream(fn func() UpstreamStats) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_commands_total",
			Help: "Commands sent to the upstream Redis; each one is billed by Upstash.",
		}, func() float64 { return float64(fn().Commands) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_roundtrips_total",
			Help: "Pipelines sent to the upstream Redis.",
		}, func() float64 { return float64(fn().RoundTrips) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_roundtrip_failures_total",
			Help: "Upstream pipelines that failed (timeout, connection error).",
		}, func() float64 { return float64(fn().Failures) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "upstream_connections",
			Help: "Upstream connections open now.",
		}, func() float64 { return float64(fn().Conns) }),
	)
}

// UpstreamHealth is what the upstream's INFO said at the last poll.
type UpstreamHealth struct {
	OK              bool
	UsedMemory      int64
	MaxMemory       int64
	Keys            int64
	EvictedKeys     int64
	EvictionsPerMin float64
	ReplicationLag  int64
}

// RegisterUpstreamHealth exports the upstream's memory, keys, evictions and
// replication lag, read from fn (the INFO poller's last result) at scrape time.
func (m *Metrics) RegisterUpstreamHealth(fn func() UpstreamHealth) {
	g := func(name, help string, v func(UpstreamHealth) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help},
			func() float64 { return v(fn()) })
	}
	m.reg.MustRegister(
		g("upstream_up", "1 if the last INFO poll of the upstream succeeded.", func(h UpstreamHealth) float64 {
			if h.OK {
				return 1
			}
			return 0
		}),
		g("upstream_used_memory_bytes", "Upstream used_memory at the last INFO poll.", func(h UpstreamHealth) float64 { return float64(h.UsedMemory) }),
		g("upstream_maxmemory_bytes", "Upstream maxmemory (0: no limit).", func(h UpstreamHealth) float64 { return float64(h.MaxMemory) }),
		g("upstream_keys", "Keys in the upstream's keyspace.", func(h UpstreamHealth) float64 { return float64(h.Keys) }),
		g("upstream_eviction_rate_per_minute", "Keys the upstream evicted per minute between the last two polls.", func(h UpstreamHealth) float64 { return h.EvictionsPerMin }),
		g("upstream_replication_lag_seconds", "The largest replica lag the upstream reports.", func(h UpstreamHealth) float64 { return float64(h.ReplicationLag) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: "upstream_evicted_keys_total",
			Help: "The upstream's evicted_keys counter."}, func() float64 { return float64(fn().EvictedKeys) }),
	)
}

// RoomStats are the room manager's counters.
type RoomStats struct {
	LifecycleWrites, StoreErrors, RoomsRestored, KeysRestored int64
	SizeChecks, TooLarge, ScriptReloads, NotLanded            int64
}

// counterOf exports one counter of a stats snapshot that fn reads at
// scrape time.
func counterOf[S any](fn func() S, name, help string, v func(S) int64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help},
		func() float64 { return float64(v(fn())) })
}

// gaugeOf exports one gauge of a stats snapshot that fn reads at scrape
// time.
func gaugeOf[S any](fn func() S, name, help string, v func(S) int64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help},
		func() float64 { return float64(v(fn())) })
}

// RegisterRooms exports the room manager's counters, read from fn at scrape time.
func (m *Metrics) RegisterRooms(fn func() RoomStats) {
	c := func(name, help string, v func(RoomStats) int64) prometheus.Collector {
		return counterOf(fn, name, help, v)
	}
	m.reg.MustRegister(
		c("room_lifecycle_writes_total", "Lifecycle writes (room created, status changed, keys deleted) stored in the room store before Redis.", func(s RoomStats) int64 { return s.LifecycleWrites }),
		c("room_store_errors_total", "Lifecycle writes refused because the room store could not take them.", func(s RoomStats) int64 { return s.StoreErrors }),
		c("room_restores_total", "Rooms whose missing keys were restored into Redis from the room store (read-through, warm-up).", func(s RoomStats) int64 { return s.RoomsRestored }),
		c("room_restored_keys_total", "Keys restored into Redis from the room store.", func(s RoomStats) int64 { return s.KeysRestored }),
		c("room_size_checks_total", "Rooms measured on a fresh snapshot to admit a write against ROOM_MAX_BYTES.", func(s RoomStats) int64 { return s.SizeChecks }),
		c("room_too_large_total", "Writes refused with 'room document too large': the room would exceed ROOM_MAX_BYTES.", func(s RoomStats) int64 { return s.TooLarge }),
		c("room_script_reloads_total", "Room script calls the upstream answered NOSCRIPT (its script cache was emptied), sent again as EVAL.", func(s RoomStats) int64 { return s.ScriptReloads }),
		c("room_lifecycle_not_landed_total", "Lifecycle writes the room store took whose round trip to Redis failed; their rooms were marked dirty and are served from the store until re-synced.", func(s RoomStats) int64 { return s.NotLanded }),
	)
}

// DebounceStats mirror rooms.DebounceStats (metrics does not import rooms).
type DebounceStats struct {
	Coalesced, WriteThrough, Flushes, FlushedKeys, FlushErrors, Overruns int64
	Snapshots, SnapshotErrors, PendingReads                              int64
	PendingRooms, PendingKeys, PendingBytes                              int64
	MaxAgeMs                                                             int64
}

// RegisterDebounce exports the debouncer's counters and gauges, read from fn
// at scrape time.
func (m *Metrics) RegisterDebounce(fn func() DebounceStats) {
	c := func(name, help string, v func(DebounceStats) int64) prometheus.Collector {
		return counterOf(fn, name, help, v)
	}
	g := func(name, help string, v func(DebounceStats) int64) prometheus.Collector {
		return gaugeOf(fn, name, help, v)
	}
	m.reg.MustRegister(
		c("debounce_coalesced_writes_total", "State writes acknowledged at once and held for the next flush.", func(s DebounceStats) int64 { return s.Coalesced }),
		c("debounce_write_through_total", "State writes sent straight to Redis because the pending set was full or the hash's fields were not known.", func(s DebounceStats) int64 { return s.WriteThrough }),
		c("debounce_pending_reads_total", "Reads answered from a pending write (a cache miss answered by the proxy, not Redis).", func(s DebounceStats) int64 { return s.PendingReads }),
		c("debounce_flushes_total", "Room flushes to Redis (one script call each).", func(s DebounceStats) int64 { return s.Flushes }),
		c("debounce_flushed_keys_total", "Keys written to Redis by flushes.", func(s DebounceStats) int64 { return s.FlushedKeys }),
		c("debounce_flush_errors_total", "Room flushes that failed; their writes stay pending and are retried.", func(s DebounceStats) int64 { return s.FlushErrors }),
		c("debounce_flush_overruns_total", "Flushes whose oldest write was older than twice the window: the kill -9 loss bound was exceeded.", func(s DebounceStats) int64 { return s.Overruns }),
		c("room_snapshots_total", "Room snapshots stored in the room store after state writes.", func(s DebounceStats) int64 { return s.Snapshots }),
		c("room_snapshot_errors_total", "Room snapshots the room store could not take; retried.", func(s DebounceStats) int64 { return s.SnapshotErrors }),
		g("pending_rooms", "Rooms with acknowledged state writes not yet in both Redis and the room store.", func(s DebounceStats) int64 { return s.PendingRooms }),
		g("pending_keys", "Keys with acknowledged state writes not yet in both Redis and the room store.", func(s DebounceStats) int64 { return s.PendingKeys }),
		g("pending_bytes", "Bytes of acknowledged state writes held until Redis and the room store both have them (capped by PENDING_MAX_BYTES).", func(s DebounceStats) int64 { return s.PendingBytes }),
	)
}

// DebounceFlush records one room flush: how long it took, and how old its
// oldest write was (the time an acknowledged write was held only by this
// process: what kill -9 would have lost).
func (m *Metrics) DebounceFlush(took, age time.Duration) {
	m.flushDuration.Observe(took.Seconds())
	m.pendingAge.Observe(age.Seconds())
}

// Command returns the observer of one command. Its counter series are
// created on first use, so /metrics lists only commands that were used.
func (m *Metrics) Command(name, kind string) proxy.CommandObserver {
	c := &commandObserver{vec: m.commands, name: name, duration: m.opDuration.WithLabelValues(kind),
		hits: m.hits.WithLabelValues("redis"), misses: m.misses.WithLabelValues("redis"),
		pending: m.misses.WithLabelValues("pending"), store: m.misses.WithLabelValues("mongodb")}
	if kind == "write" {
		c.writeErrors = m.writeErrors
	}
	return c
}

type commandObserver struct {
	vec         *prometheus.CounterVec
	name        string
	c           [proxy.NumOutcomes]atomic.Pointer[prometheus.Counter]
	duration    prometheus.Observer
	hits        prometheus.Counter
	misses      prometheus.Counter
	pending     prometheus.Counter
	store       prometheus.Counter
	writeErrors prometheus.Counter // nil unless a write command
}

func (c *commandObserver) Observe(o proxy.Outcome, d time.Duration, l proxy.Lookup) {
	p := c.c[o].Load()
	if p == nil {
		ctr := c.vec.WithLabelValues(c.name, o.String())
		p = &ctr
		c.c[o].Store(p)
	}
	(*p).Inc()
	c.duration.Observe(d.Seconds())
	switch l {
	case proxy.LookupHit:
		c.hits.Inc()
	case proxy.LookupMiss:
		c.misses.Inc()
	case proxy.LookupPending:
		c.pending.Inc()
	case proxy.LookupStore:
		c.store.Inc()
	}
	if c.writeErrors != nil && o != proxy.OutcomeOK {
		c.writeErrors.Inc()
	}
}

// RoundTrip records one upstream round trip.
func (m *Metrics) RoundTrip(d time.Duration) { m.roundTrips.Observe(d.Seconds()) }

// ConnOpened counts a new client connection.
func (m *Metrics) ConnOpened() { m.clients.Inc(); m.connections.Inc() }

// ConnClosed counts a closed client connection.
func (m *Metrics) ConnClosed() { m.clients.Dec() }

// Rejected counts refused input; reason is one of rejectReasons.
func (m *Metrics) Rejected(reason string) { m.rejected.WithLabelValues(reason).Inc() }

// Panic counts a recovered panic.
func (m *Metrics) Panic() { m.panics.Inc() }

// Handler serves /metrics, /healthz (the process is alive), /readyz (200
// while accepting clients, 503 once draining has begun) and, when
// redisHealth is not nil, /health/redis (its value as JSON).
func Handler(reg *prometheus.Registry, ready func() bool, redisHealth func() any) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	if redisHealth != nil {
		mux.HandleFunc("GET /health/redis", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(redisHealth())
		})
	}
	return mux
}
