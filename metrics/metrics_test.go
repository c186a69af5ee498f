package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
	obs := m.Command("get")
	obs.Observe(proxy.OutcomeOK)
	obs.Observe(proxy.OutcomeOK)
	obs.Observe(proxy.OutcomeUpstreamError)
	m.ConnOpened()
	m.Rejected("protocol")
	ready := true
	h := Handler(reg, func() bool { return ready })

	code, body := get(t, h, "/metrics")
	for _, want := range []string{
		`roomproxy_commands_total{cmd="get",outcome="ok"} 2`,
		`roomproxy_commands_total{cmd="get",outcome="upstream_error"} 1`,
		`roomproxy_upstream_commands_total 7`,
		`roomproxy_connected_clients 1`,
		`roomproxy_rejected_inputs_total{reason="protocol"} 1`,
		`roomproxy_rejected_inputs_total{reason="auth"} 0`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, `outcome="error"`) {
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
	if n, err := testutil.GatherAndCount(reg, "roomproxy_commands_total"); err != nil || n != 2 {
		t.Errorf("commands_total series = %d, %v", n, err)
	}
}
