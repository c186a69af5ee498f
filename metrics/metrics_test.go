package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roomproxy/roomproxy/proxy"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.RegisterUpstream(func() UpstreamStats { return UpstreamStats{Commands: 7, RoundTrips: 2, Conns: 1} })
	obs := m.Command("get", "read")
	obs.Observe(proxy.OutcomeOK, 200*time.Microsecond, proxy.LookupHit)
	obs.Observe(proxy.OutcomeOK, 300*time.Microsecond, proxy.LookupMiss)
	obs.Observe(proxy.OutcomeUpstreamError, time.Second, proxy.LookupNone)
	set := m.Command("set", "write")
	set.Observe(proxy.OutcomeError, time.Millisecond, proxy.LookupNone)
	m.RoundTrip(150 * time.Microsecond)
	m.ConnOpened()
	m.Rejected("protocol")
	ready := true
	h := Handler(reg, func() bool { return ready }, nil)

	code, body := get(t, h, "/metrics")
	for _, want := range []string{
		`roomproxy_commands_total{cmd="get",outcome="ok"} 2`,
		`roomproxy_commands_total{cmd="get",outcome="upstream_error"} 1`,
		`roomproxy_upstream_commands_total 7`,
		`roomproxy_connected_clients 1`,
		`roomproxy_rejected_inputs_total{reason="protocol"} 1`,
		`roomproxy_rejected_inputs_total{reason="auth"} 0`,
		`roomproxy_cache_hits_total{source="redis"} 1`,
		`roomproxy_cache_misses_total{source="redis"} 1`,
		`roomproxy_cache_write_errors_total 1`,
		`roomproxy_cache_operation_duration_seconds_bucket{kind="read",le="0.00025"} 1`,
		`roomproxy_cache_operation_duration_seconds_count{kind="write"} 1`,
		`roomproxy_upstream_roundtrip_duration_seconds_count 1`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, `cmd="get",outcome="error"`) {
		t.Errorf("series are created on first use only:\n%s", body)
	}
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := get(t, h, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	ready = false
	if code, _ := get(t, h, "/readyz"); code != 503 {
		t.Errorf("/readyz while draining = %d, want 503", code)
	}
	if n, err := testutil.GatherAndCount(reg, "roomproxy_commands_total"); err != nil || n != 3 {
		t.Errorf("commands_total series = %d, %v", n, err)
	}
}
