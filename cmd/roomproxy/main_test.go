package main

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestConfigErrorsNameTheVariable(t *testing.T) {
	cases := map[string]map[string]string{
		"REDIS_TIMEOUT_MS":  {"REDIS_TIMEOUT_MS": "soon"},
		"MAX_CLIENTS":       {"MAX_CLIENTS": "0"},
		"PROXY_ADDR":        {"PROXY_ADDR": "0.0.0.0:6380"}, // no password on a public address
		"REDIS_URL":         {"REDIS_URL": "http://example:1"},
		"LOG_LEVEL":         {"LOG_LEVEL": "loud"},
		"SHUTDOWN_TIMEOUT":  {"SHUTDOWN_TIMEOUT": "-5s"},
		"MAX_REQUEST_BYTES": {"MAX_REQUEST_BYTES": "12"},
	}
	for name, env := range cases {
		_, err := loadConfig(nil, func(k string) string { return env[k] }, io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), name+":") {
			t.Errorf("%v: err = %v, want one naming %s", env, err, name)
		}
	}
	_, err := loadConfig([]string{"-max-pipeline", "x"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "MAX_PIPELINE") {
		t.Errorf("flag error = %v, want one naming MAX_PIPELINE", err)
	}
}

func TestConfigDefaultsAndPrecedence(t *testing.T) {
	env := map[string]string{"PROXY_ADDR": "127.0.0.1:7000", "REDIS_TIMEOUT_MS": "250"}
	c, err := loadConfig([]string{"-proxy-addr", "127.0.0.1:7001"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxyAddr != "127.0.0.1:7001" || c.RedisTimeout != 250*time.Millisecond || c.MetricsAddr != "127.0.0.1:9380" ||
		c.RedisMaxRetries != 10 || c.MaxRequestBytes != 10<<20 || c.ShutdownTimeout != 30*time.Second {
		t.Fatalf("config = %+v", c)
	}
	if _, err := loadConfig(nil, func(k string) string {
		return map[string]string{"PROXY_ADDR": "0.0.0.0:6380", "PROXY_PASSWORD": "pw"}[k]
	}, io.Discard); err != nil {
		t.Fatalf("a public address with a password is allowed: %v", err)
	}
}

// TestZeroConfiguration builds the real binary, runs it with an empty
// environment, uses it with go-redis, and stops it with SIGTERM.
func TestZeroConfiguration(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Ports 0 so that tests never collide; everything else is the default.
	p := startBinary(t)
	addrs := p.addrs
	if !strings.Contains(strings.Join(p.log, "\n"), "zero-configuration mode") {
		t.Errorf("the zero-configuration mode should be logged clearly:\n%s", strings.Join(p.log, "\n"))
	}
	c := redis.NewClient(&redis.Options{Addr: addrs["roomproxy"]})
	if err := c.Set(ctx, "room:zero", "works", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "room:zero").Result(); err != nil || v != "works" {
		t.Fatalf("GET = %q, %v", v, err)
	}
	// room:zero created a room: written through to the embedded store.
	if info, err := c.Info(ctx, "rooms").Result(); err != nil || !strings.Contains(info, "room_lifecycle_writes:1") || !strings.Contains(info, "room_store:embedded") {
		t.Fatalf("INFO rooms = %q, %v", info, err)
	}
	if ttl, err := c.TTL(ctx, "room:zero").Result(); err != nil || ttl <= 0 {
		t.Fatalf("room:zero TTL = %v, %v", ttl, err)
	}
	// ROOM_MAX_BYTES (1 MiB) holds for the room's keys together.
	if err := c.Set(ctx, "room:zero:a", strings.Repeat("a", 700<<10), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "room:zero:b", strings.Repeat("b", 700<<10), 0).Err(); err == nil || err.Error() != "ERR room document too large" {
		t.Fatalf("second 700 KiB key of one room: %v", err)
	}
	if info, err := c.Info(ctx, "rooms").Result(); err != nil || !strings.Contains(info, "room_too_large:1") || !strings.Contains(info, "room_size_checks:") ||
		!strings.Contains(info, "room_script_reloads:") {
		t.Fatalf("INFO rooms after a refused write = %q, %v", info, err)
	}
	c.Close()
	// redis-cli reads INFO, whole and by section.
	_, port, _ := strings.Cut(addrs["roomproxy"], ":")
	out, err := exec.Command("redis-cli", "-p", port, "INFO").CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli INFO: %v %s", err, out)
	}
	for _, sec := range []string{"# Server", "# Clients", "# Stats", "# Proxy", "# Upstream", "# Breaker", "# Debounce", "# Fallback", "# Rooms", "loading:0"} {
		if !strings.Contains(string(out), sec) {
			t.Errorf("redis-cli INFO lacks %q", sec)
		}
	}
	out, err = exec.Command("redis-cli", "-p", port, "INFO", "breaker").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "breaker_state:closed") || strings.Contains(string(out), "# Server") {
		t.Errorf("redis-cli INFO breaker = %q, %v", out, err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/health/redis"} {
		resp, err := http.Get("http://" + addrs["metrics"] + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, err, resp)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if path == "/metrics" && (!strings.Contains(string(body), `roomproxy_commands_total{cmd="set",outcome="ok"} 2`) ||
			!strings.Contains(string(body), "roomproxy_room_too_large_total 1")) {
			t.Errorf("/metrics lacks the SET count or the refused write:\n%s", body)
		}
		if path == "/health/redis" && !strings.Contains(string(body), `"used_memory_bytes"`) {
			t.Errorf("/health/redis: %s", body)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.rest()
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}
