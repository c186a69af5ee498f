package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
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

// TestRealPrometheusScrapes starts a real Prometheus scraping roomproxy,
// runs a workload, and asks Prometheus's HTTP API for the series an operator
// needs. It also runs promtool on the exposition and on the shipped alert
// rules.
func TestRealPrometheusScrapes(t *testing.T) {
	for _, bin := range []string{"prometheus", "promtool"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: apt-get install -y prometheus (scripts/deps.sh does)", bin)
		}
	}
	r := testredis.Start(t, testredis.Options{})
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	p := startProxy(t, backend.Config{URL: r.URL(), OnRoundTrip: m.RoundTrip}, proxy.Config{Observer: m})
	m.RegisterUpstream(func() metrics.UpstreamStats {
		s := p.Up.Stats()
		return metrics.UpstreamStats{Commands: s.Commands, RoundTrips: s.RoundTrips, Failures: s.Failures, Conns: s.Conns}
	})
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: metrics.Handler(reg, p.Srv.Ready, nil)}
	go hs.Serve(mln)
	defer hs.Close()

	// A scripted workload: hits, misses, writes, an error.
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	for i := range 200 {
		c.Set(ctx, fmt.Sprint("prom:", i), i, 0)
		c.Get(ctx, fmt.Sprint("prom:", i))
		c.Get(ctx, fmt.Sprint("prom:missing:", i))
	}
	c.Do(ctx, "nosuchcommand")

	// promtool on the exposition.
	resp, err := http.Get("http://" + mln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	expo, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(expo)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	_, file, _, _ := runtime.Caller(0)
	rules := filepath.Join(filepath.Dir(file), "..", "deploy", "prometheus", "alerts.yml")
	if out, err := exec.Command("promtool", "check", "rules", rules).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}

	// A real Prometheus, scraping every second.
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: roomproxy\n    static_configs:\n      - targets: ['%s']\n", mln.Addr())
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	port := testredis.FreePort(t)
	pctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prom := exec.CommandContext(pctx, "prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
	var plog testsupport.SyncBuffer
	prom.Stdout, prom.Stderr = &plog, &plog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); prom.Wait() }()
	api := "http://127.0.0.1:" + strconv.Itoa(port)
	for _, q := range []string{
		"roomproxy_cache_hits_total",
		`sum(roomproxy_cache_misses_total)`, // one series per source
		"roomproxy_upstream_commands_total",
		`roomproxy_cache_operation_duration_seconds_count{kind="read"}`,
		`roomproxy_commands_total{cmd="set",outcome="ok"}`,
	} {
		v, ok := pollQuery(api, q, 60*time.Second)
		if !ok || v <= 0 {
			t.Fatalf("Prometheus has no positive %s (got %v); its log:\n%s", q, v, plog.String())
		}
		t.Logf("%s = %v", q, v)
	}
}

// pollQuery asks Prometheus for an instant query until it returns a sample.
func pollQuery(api, q string, within time.Duration) (float64, bool) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp, err := http.Get(api + "/api/v1/query?query=" + url.QueryEscape(q))
		if err == nil {
			var body struct {
				Data struct {
					Result []struct {
						Value [2]any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if err == nil && len(body.Data.Result) > 0 {
				if s, ok := body.Data.Result[0].Value[1].(string); ok {
					if v, err := strconv.ParseFloat(s, 64); err == nil && v > 0 {
						return v, true
					}
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return 0, false
}
