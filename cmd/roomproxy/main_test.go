package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/internal/testcert"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/policy"
)

func TestConfigErrorsNameTheVariable(t *testing.T) {
	cases := map[string]map[string]string{
		"REDIS_TIMEOUT_MS":                 {"REDIS_TIMEOUT_MS": "soon"},
		"MAX_CLIENTS":                      {"MAX_CLIENTS": "0"},
		"PROXY_ADDR":                       {"PROXY_ADDR": "0.0.0.0:6380"}, // no password on a public address
		"REDIS_URL":                        {"REDIS_URL": "http://example:1"},
		"LOG_LEVEL":                        {"LOG_LEVEL": "loud"},
		"SHUTDOWN_TIMEOUT":                 {"SHUTDOWN_TIMEOUT": "-5s"},
		"MAX_REQUEST_BYTES":                {"MAX_REQUEST_BYTES": "12"},
		"PROXY_TLS_CERT and PROXY_TLS_KEY": {"PROXY_TLS_CERT": "server.crt"},
		"PROXY_TLS_CLIENT_CA":              {"PROXY_TLS_CLIENT_CA": "ca.crt"},
		"ROOM_STATUS_ALIASES":              {"ROOM_STATUS_ALIASES": "running=playing"},
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
	// The ACL file is read with the configuration: its errors name it, it
	// replaces PROXY_PASSWORD, and a non-loopback address needs its default
	// user to have a password.
	aclDir := t.TempDir()
	aclFile := func(text string) string {
		path := filepath.Join(aclDir, strconv.Itoa(len(text))+".acl")
		os.WriteFile(path, []byte(text), 0o600)
		return path
	}
	closed := aclFile("user default on >pw allkeys +@all\n")
	for want, env := range map[string]map[string]string{
		"PROXY_ACL_FILE: line 2: user a: unsupported rule": {"PROXY_ACL_FILE": aclFile("user default on nopass\nuser a on %R~x\n")},
		"PROXY_ACL_FILE: set either":                       {"PROXY_ACL_FILE": closed, "PROXY_PASSWORD": "pw"},
		"PROXY_ADDR: refusing":                             {"PROXY_ACL_FILE": aclFile("user default on nopass allkeys +@all\n"), "PROXY_ADDR": "0.0.0.0:6380"},
		"":                                                 {"PROXY_ACL_FILE": closed, "PROXY_ADDR": "0.0.0.0:6380"},
	} {
		_, err := loadConfig(nil, func(k string) string { return env[k] }, io.Discard)
		if (want == "" && err != nil) || (want != "" && (err == nil || !strings.HasPrefix(err.Error(), want))) {
			t.Errorf("%v: err = %v, want %q", env, err, want)
		}
	}
	// Certificate files are read before anything starts.
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for name, c := range map[string]*config{
		"PROXY_TLS_CERT / PROXY_TLS_KEY": {ProxyTLSCert: filepath.Join(dir, "missing.crt"), ProxyTLSKey: notPEM},
		"PROXY_TLS_CLIENT_CA":            {ProxyTLSCert: "", ProxyTLSCA: notPEM},
	} {
		if name == "PROXY_TLS_CLIENT_CA" {
			c.ProxyTLSCert, c.ProxyTLSKey = writeTestCert(t, dir)
		}
		if _, err := c.clientTLS(); err == nil || !strings.HasPrefix(err.Error(), name+":") {
			t.Errorf("clientTLS with %+v: %v, want an error naming %s", c, err, name)
		}
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

// writeTestCert writes a CA and a certificate it signed for localhost and
// 127.0.0.1 (good for a server and a client) into dir, and returns the
// certificate's and its key's files; the CA is dir/ca.crt.
func writeTestCert(t *testing.T, dir string) (crtFile, keyFile string) {
	ca, caKey := testredis.NewCA(t)
	der, key := testredis.Issue(t, ca, caKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	crtFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for path, b := range map[string][]byte{
		filepath.Join(dir, "ca.crt"): testcert.PEM("CERTIFICATE", ca.Raw),
		crtFile:                      testcert.PEM("CERTIFICATE", der),
		keyFile:                      key,
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return crtFile, keyFile
}

// TestTLSListenerWithRedisCLI: PROXY_TLS_CERT and PROXY_TLS_KEY make
// PROXY_ADDR a TLS listener that redis-cli --tls uses unchanged; with
// PROXY_TLS_CLIENT_CA a client must present a certificate the CA signed,
// and a plaintext client gets nothing.
func TestTLSListenerWithRedisCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	crt, key := writeTestCert(t, dir)
	caFile := filepath.Join(dir, "ca.crt")
	p := startBinary(t, "PROXY_TLS_CERT="+crt, "PROXY_TLS_KEY="+key, "PROXY_TLS_CLIENT_CA="+caFile)
	if log := strings.Join(p.log, "\n"); !strings.Contains(log, "tls=true") || !strings.Contains(log, "client_certs=true") {
		t.Errorf("the listening line should say TLS and client certificates are on:\n%s", log)
	}
	_, port, _ := strings.Cut(p.addrs["roomproxy"], ":")
	cli := func(extra ...string) (string, error) {
		args := append([]string{"-h", "127.0.0.1", "-p", port}, extra...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	tlsArgs := []string{"--tls", "--cacert", caFile, "--cert", crt, "--key", key}
	if out, err := cli(append(tlsArgs, "SET", "room:tls", `{"status":"waiting"}`)...); err != nil || out != "OK" {
		t.Fatalf("redis-cli --tls SET: %q, %v", out, err)
	}
	if out, err := cli(append(tlsArgs, "GET", "room:tls")...); err != nil || out != `{"status":"waiting"}` {
		t.Fatalf("redis-cli --tls GET: %q, %v", out, err)
	}
	if out, err := cli("--tls", "--cacert", caFile, "PING"); out == "PONG" || err == nil {
		t.Fatalf("a client without a certificate: %q, %v; want refused", out, err)
	}
	if out, err := cli("PING"); out == "PONG" || err == nil {
		t.Fatalf("a plaintext client: %q, %v; want refused", out, err)
	}
}

// TestACLFileWithClients: PROXY_ACL_FILE's users, through the binary, with
// go-redis (Username) and redis-cli (--user/--pass): a game user reaches its
// rooms and nothing else; the default user needs its password.
func TestACLFileWithClients(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	path := filepath.Join(t.TempDir(), "users.acl")
	os.WriteFile(path, []byte(`# users of the test
user default on >adminpw allkeys allchannels +@all
user game on >gpw ~room:* &chat:* +@read +@write +@pubsub +@connection -@dangerous
`), 0o600)
	p := startBinary(t, "PROXY_ACL_FILE="+path)
	if log := strings.Join(p.log, "\n"); !strings.Contains(log, "acl=true") || !strings.Contains(log, "auth=true") {
		t.Errorf("the listening line should say ACL and AUTH are on:\n%s", log)
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.addrs["roomproxy"], Username: "game", Password: "gpw"})
	defer c.Close()
	if err := c.Set(ctx, "room:acl", `{"status":"waiting"}`, 0).Err(); err != nil {
		t.Fatalf("game SET room:acl: %v", err)
	}
	if err := c.Get(ctx, "other").Err(); err == nil || err.Error() != "NOPERM this user has no permissions to access one of the keys used as arguments" {
		t.Fatalf("game GET other: %v", err)
	}
	if err := c.ConfigResetStat(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("game CONFIG RESETSTAT: %v", err)
	}
	_, port, _ := strings.Cut(p.addrs["roomproxy"], ":")
	cli := func(args ...string) string {
		out, _ := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", port, "--no-auth-warning"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	if got := cli("--user", "game", "--pass", "gpw", "GET", "room:acl"); got != `{"status":"waiting"}` {
		t.Fatalf("redis-cli --user game GET room:acl: %q", got)
	}
	if got := cli("GET", "room:acl"); !strings.Contains(got, "NOAUTH") {
		t.Fatalf("redis-cli without AUTH: %q", got)
	}
	if got := cli("-a", "adminpw", "GET", "other"); got != "" {
		t.Fatalf("redis-cli -a adminpw GET other (the default user, all keys): %q", got)
	}
}

// TestStatusAliases: ROOM_STATUS_ALIASES adds status texts: a room whose
// status is "running" is active (its keys get the active TTL), and the
// built-in texts still work.
func TestStatusAliases(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	c, err := loadConfig(nil, func(k string) string {
		return map[string]string{"ROOM_STATUS_ALIASES": " Running = ACTIVE, lobby2=waiting,"}[k]
	}, io.Discard)
	if err != nil || len(c.StatusAliases) != 2 || c.StatusAliases["running"] != policy.Active || c.StatusAliases["lobby2"] != policy.Waiting {
		t.Fatalf("parsed %v, %v", c.StatusAliases, err)
	}
	p := startBinary(t, "ROOM_STATUS_ALIASES=running=active")
	ctx := context.Background()
	rc := redis.NewClient(&redis.Options{Addr: p.addrs["roomproxy"]})
	defer rc.Close()
	for key, doc := range map[string]string{"room:alias": `{"status":"running"}`, "room:builtin": `{"status":"playing"}`} {
		if err := rc.Set(ctx, key, doc, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if ttl, err := rc.TTL(ctx, key).Result(); err != nil || ttl <= 1800*time.Second {
			t.Errorf("%s %s: TTL %v (%v), want the active room's 3600 s", key, doc, ttl, err)
		}
	}
}

// TestEverySettingIsDocumented: every variable roomproxy reads is in
// .env.example (as NAME=) and in the README's configuration table, so that
// neither falls behind the code.
func TestEverySettingIsDocumented(t *testing.T) {
	env, err := os.ReadFile("../../.env.example")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	c := &config{}
	for _, s := range append(settings(c), breakerSettings(c)...) {
		if !regexp.MustCompile(`(?m)^#? *` + s.env + `=`).Match(env) {
			t.Errorf(".env.example lacks %s", s.env)
		}
		if !strings.Contains(string(readme), "`"+s.env+"`") {
			t.Errorf("README.md lacks `%s`", s.env)
		}
	}
}
