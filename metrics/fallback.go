package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/roomproxy/roomproxy/fallback"
)

// FallbackStats are the counters of rooms served from the room store during
// upstream outages.
type FallbackStats struct {
	Reads, Writes, Errors, Dirty, Resynced int64
}

// RegisterFallback exports them, read from fn at scrape time.
func (m *Metrics) RegisterFallback(fn func() FallbackStats) {
	c := func(name, help string, v func(FallbackStats) int64) prometheus.Collector {
		return counterOf(fn, name, help, v)
	}
	m.reg.MustRegister(
		c("fallback_reads_total", "Room reads answered from the room store while the upstream was unavailable or the room not yet re-synced.", func(s FallbackStats) int64 { return s.Reads }),
		c("fallback_writes_total", "Room writes applied to the room store while the upstream was unavailable or the room not yet re-synced.", func(s FallbackStats) int64 { return s.Writes }),
		c("fallback_errors_total", "Room commands the room store could not serve during an outage.", func(s FallbackStats) int64 { return s.Errors }),
		c("resync_rooms_total", "Rooms written back to Redis from the room store after an outage.", func(s FallbackStats) int64 { return s.Resynced }),
		gaugeOf(fn, "dirty_rooms", "Rooms written during an outage and not yet written back to Redis (served from the room store meanwhile).",
			func(s FallbackStats) int64 { return s.Dirty }),
	)
}

// storeOps is the closed set of room store operations, the op label.
var storeOps = []string{"get", "put", "list", "list_dirty", "expire", "ping"}

// TimeStore wraps a room store so that each operation's duration is
// observed in roomproxy_mongodb_operation_duration_seconds{op} (also for the
// embedded store, under the same name).
func (m *Metrics) TimeStore(s fallback.Store) fallback.Store {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "mongodb_operation_duration_seconds",
		Help:    "Duration of room store operations (MongoDB, or the embedded store in zero-configuration mode), by operation.",
		Buckets: durationBuckets,
	}, []string{"op"})
	for _, op := range storeOps {
		h.WithLabelValues(op)
	}
	m.reg.MustRegister(h)
	return timedStore{Store: s, h: h}
}

type timedStore struct {
	fallback.Store
	h *prometheus.HistogramVec
}

func (t timedStore) since(op string, start time.Time) {
	t.h.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (t timedStore) Put(ctx context.Context, r fallback.Room) error {
	defer t.since("put", time.Now())
	return t.Store.Put(ctx, r)
}

func (t timedStore) Get(ctx context.Context, id string) (fallback.Room, bool, error) {
	defer t.since("get", time.Now())
	return t.Store.Get(ctx, id)
}

func (t timedStore) List(ctx context.Context, statuses []string, limit int) ([]fallback.Room, error) {
	defer t.since("list", time.Now())
	return t.Store.List(ctx, statuses, limit)
}

func (t timedStore) ListDirty(ctx context.Context) ([]fallback.Room, error) {
	defer t.since("list_dirty", time.Now())
	return t.Store.ListDirty(ctx)
}

func (t timedStore) Expire(ctx context.Context, before time.Time) (int, error) {
	defer t.since("expire", time.Now())
	return t.Store.Expire(ctx, before)
}

func (t timedStore) Ping(ctx context.Context) error {
	defer t.since("ping", time.Now())
	return t.Store.Ping(ctx)
}
