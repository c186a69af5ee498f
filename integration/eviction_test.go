package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/testsupport"
	"github.com/roomproxy/roomproxy/metrics"
	"github.com/roomproxy/roomproxy/proxy"
)

// TestEvictionStorm: with maxmemory set low on the upstream, writing through
// roomproxy evicts keys; /health/redis reports memory, keys and evictions,
// the eviction rate metric rises and the warning is logged.
func TestEvictionStorm(t *testing.T) {
	r := testredis.Start(t, testredis.Options{Args: []string{"--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"}})
	p := startProxy(t, backend.Config{URL: r.URL()}, proxy.Config{})
	var logs testsupport.SyncBuffer
	mon := p.Up.StartMonitor(backend.MonitorConfig{Interval: 200 * time.Millisecond, AlertPerMin: 10,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer mon.Stop()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.RegisterUpstreamHealth(func() metrics.UpstreamHealth {
		h := mon.Health()
		return metrics.UpstreamHealth{OK: h.OK, UsedMemory: h.UsedMemory, MaxMemory: h.MaxMemory, Keys: h.Keys,
			EvictedKeys: h.EvictedKeys, EvictionsPerMin: h.EvictionsPerMin, ReplicationLag: h.ReplicationLag}
	})

	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	value := strings.Repeat("v", 2048)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		c.Set(ctx, fmt.Sprint("storm:", i), value, 0)
		if i%500 == 0 && mon.Health().EvictionsPerMin > 0 && strings.Contains(logs.String(), "upstream is evicting keys") {
			break
		}
	}
	h := mon.Health()
	if !h.OK || h.EvictedKeys == 0 || h.EvictionsPerMin <= 0 || h.MaxMemory != 2<<20 || h.UsedMemory == 0 || h.Keys == 0 {
		t.Fatalf("health after the storm: %+v", h)
	}
	if !strings.Contains(logs.String(), "upstream is evicting keys") {
		t.Fatalf("no eviction warning logged:\n%s", logs.String())
	}
	if v := gaugeValue(t, reg, "roomproxy_upstream_eviction_rate_per_minute"); v <= 0 {
		t.Fatalf("eviction rate metric = %v", v)
	}

	rec := httptest.NewRecorder()
	metrics.Handler(reg, p.Srv.Ready, func() any { return map[string]any{"upstream": mon.Health()} }).
		ServeHTTP(rec, httptest.NewRequest("GET", "/health/redis", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	var got struct {
		Upstream struct {
			UsedMemory  int64 `json:"used_memory_bytes"`
			Keys        int64 `json:"keys"`
			EvictedKeys int64 `json:"evicted_keys"`
		} `json:"upstream"`
	}
	if err := json.Unmarshal(body, &got); err != nil || got.Upstream.UsedMemory == 0 || got.Upstream.Keys == 0 || got.Upstream.EvictedKeys == 0 {
		t.Fatalf("/health/redis = %s (%v)", body, err)
	}
	t.Logf("/health/redis: %s", body)
}

// gaugeValue reads one registered gauge by name.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
