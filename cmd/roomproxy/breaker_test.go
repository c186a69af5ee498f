package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/metrics"
)

func TestBreakerConfig(t *testing.T) {
	c, err := loadConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := backend.BreakerConfig{Failures: 5, Timeouts: 2, OpenTimeout: time.Second, ProbeInterval: 250 * time.Millisecond, HalfOpenProbes: 1}
	if c.Breaker.Failures != want.Failures || c.Breaker.Timeouts != want.Timeouts || c.Breaker.OpenTimeout != want.OpenTimeout ||
		c.Breaker.ProbeInterval != want.ProbeInterval || c.Breaker.HalfOpenProbes != want.HalfOpenProbes {
		t.Fatalf("defaults %+v, want %+v", c.Breaker, want)
	}
	env := map[string]string{"BREAKER_FAILURES": "3", "BREAKER_OPEN_MS": "2500", "BREAKER_PROBE_MS": "100"}
	c, err = loadConfig([]string{"-breaker-timeouts", "1"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Breaker.Failures != 3 || c.Breaker.Timeouts != 1 || c.Breaker.OpenTimeout != 2500*time.Millisecond || c.Breaker.ProbeInterval != 100*time.Millisecond {
		t.Fatalf("config %+v", c.Breaker)
	}
	for name, v := range map[string]string{"BREAKER_FAILURES": "0", "BREAKER_TIMEOUTS": "x", "BREAKER_OPEN_MS": "5", "BREAKER_PROBE_MS": "-1", "BREAKER_HALF_OPEN_PROBES": "0"} {
		_, err := loadConfig(nil, func(k string) string { return map[string]string{name: v}[k] }, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), name+":") {
			t.Errorf("%s=%s: err = %v, want one naming %s", name, v, err, name)
		}
	}
}

// TestBreakerInfoAndMetrics: INFO breaker and the breaker's metrics read
// the upstream's breaker.
func TestBreakerInfoAndMetrics(t *testing.T) {
	up, err := backend.New(backend.Config{URL: "redis://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	fields := map[string]string{}
	for _, f := range breakerInfo(up).Fields() {
		fields[f[0]] = f[1]
	}
	if fields["breaker_state"] != "closed" || fields["breaker_opened"] != "0" || fields["breaker_rejected_batches"] != "0" {
		t.Errorf("INFO breaker %v", fields)
	}
	reg := prometheus.NewRegistry()
	metrics.New(reg).RegisterBreaker(breakerMetrics(up))
	want := `
# HELP roomproxy_breaker_state 1 for the upstream circuit breaker's current state, 0 for the others.
# TYPE roomproxy_breaker_state gauge
roomproxy_breaker_state{state="closed"} 1
roomproxy_breaker_state{state="half-open"} 0
roomproxy_breaker_state{state="open"} 0
roomproxy_breaker_state{state="recovering"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "roomproxy_breaker_state"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "roomproxy_breaker_transitions_total"); err != nil || n != 7 {
		t.Errorf("%d transition series, %v", n, err)
	}
}
