package main

import (
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/internal/testredis"
)

// faultTraffic runs a little of everything through the proxy and returns
// every reply and error text, then INFO, /metrics and /health/redis.
func faultTraffic(t *testing.T, p *running) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: p.addrs["roomproxy"], MaxRetries: -1})
	defer c.Close()
	var out strings.Builder
	note := func(v any, err error) {
		out.WriteString(strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(
			strings.TrimSpace(strings.Join([]string{toString(v), errString(err)}, " ")), "\n", " "), "\r", "")))
		out.WriteString("\n")
	}
	note(c.Set(ctx, "room:s1", `{"status":"active","n":1}`, 0).Result())
	note(c.Get(ctx, "room:s1").Result())
	note(c.HSet(ctx, "room:s1:p", "a", "1").Result())
	note(c.HGetAll(ctx, "room:s1:p").Result())
	note(c.Set(ctx, "plain", "x", 0).Result())
	note(c.Get(ctx, "plain").Result())
	note(c.Publish(ctx, "ch", "x").Result())
	note(c.Do(ctx, "ROOM.GET", "s1").Result())
	note(c.Info(ctx).Result())
	for _, path := range []string{"/metrics", "/health/redis"} {
		resp, err := http.Get("http://" + p.addrs["metrics"] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out.Write(body)
	}
	return out.String()
}

func toString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case map[string]string:
		var b strings.Builder
		for k, v := range x {
			b.WriteString(k + "=" + v + " ")
		}
		return b.String()
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestUpstreamSecretsStayHidden: the upstream's host, port, user and
// password appear in no client reply, log line or metric while the upstream
// is killed and restarted, when its password is wrong (a rotation) and
// when its certificate is not trusted.
func TestUpstreamSecretsStayHidden(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	const pw = "Sup3r-s3cret-upstream-pw"
	r := testredis.Start(t, testredis.Options{TLS: true, Password: pw})
	upstream := "localhost:" + strconv.Itoa(r.Port)
	secrets := []string{pw, "wr0ng-rotated-pw", upstream, "127.0.0.1:" + strconv.Itoa(r.Port)}
	var seen strings.Builder
	check := func(what, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				i := strings.Index(text, s)
				t.Errorf("%s shows %q: ...%s...", what, s, text[max(i-80, 0):min(i+len(s)+80, len(text))])
			}
		}
		seen.WriteString(text)
	}
	stop := func(p *running) string {
		p.cmd.Process.Signal(syscall.SIGTERM)
		log := p.rest()
		p.cmd.Wait()
		return log
	}

	// Killed and restarted.
	p := startBinary(t, "REDIS_URL=rediss://default:"+pw+"@"+upstream, "REDIS_TLS_CA="+r.CAFile, "LOG_FORMAT=text")
	check("replies before the fault", faultTraffic(t, p))
	r.Kill()
	time.Sleep(1500 * time.Millisecond)
	check("replies while the upstream is down", faultTraffic(t, p))
	r.Restart()
	time.Sleep(2500 * time.Millisecond)
	check("replies after the restart", faultTraffic(t, p))
	check("the log", stop(p))

	// A wrong password (rotated upstream side).
	p = startBinary(t, "REDIS_URL=rediss://default:wr0ng-rotated-pw@"+upstream, "REDIS_TLS_CA="+r.CAFile, "LOG_FORMAT=text")
	check("replies with a wrong password", faultTraffic(t, p))
	check("the log with a wrong password", stop(p))

	// A certificate signed by a CA the proxy does not trust.
	ca, _ := testredis.NewCA(t)
	other := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p = startBinary(t, "REDIS_URL=rediss://default:"+pw+"@"+upstream, "REDIS_TLS_CA="+other, "LOG_FORMAT=text")
	check("replies with an untrusted certificate", faultTraffic(t, p))
	check("the log with an untrusted certificate", stop(p))

	// The faults were real: clients saw them, in generic words.
	all := seen.String()
	for _, want := range []string{"TRYAGAIN upstream", "breaker_state:open", "breaker_last_cause:tls"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q anywhere: the fault did not happen as planned", want)
		}
	}
}
