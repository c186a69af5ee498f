package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/testsupport"
)

// TestSecondSignalExitsAtOnce (SPEC 11): after SIGTERM the proxy drains:
// /readyz answers 503 and the listener refuses new clients, while a command
// in flight (a BLPOP that never ends) keeps the drain waiting within
// SHUTDOWN_TIMEOUT (here a minute). A second SIGTERM ends the process at
// once, with status 1.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary, starts redis-server")
	}
	r := testredis.Start(t, testredis.Options{})
	p := startBinary(t, "REDIS_URL="+r.URL(), "LOG_FORMAT=text", "SHUTDOWN_TIMEOUT=60s")
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	c := redis.NewClient(&redis.Options{Addr: p.addrs["roomproxy"], ReadTimeout: -1, MaxRetries: -1})
	defer c.Close()
	ctx := context.Background()
	blocked := make(chan error, 1)
	go func() { blocked <- c.BLPop(ctx, 0, "shutdown:never").Err() }()
	testsupport.Eventually(t, 10*time.Second, "the BLPOP blocked in redis-server", func() bool {
		info, _ := direct.Info(ctx, "clients").Result()
		return strings.Contains(info, "blocked_clients:1\r")
	})

	readyz := "http://" + p.addrs["metrics"] + "/readyz"
	if code := httpStatus(readyz); code != http.StatusOK {
		t.Fatalf("/readyz %d before the signal", code)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	testsupport.Eventually(t, 10*time.Second, "/readyz 503 while draining", func() bool { return httpStatus(readyz) == http.StatusServiceUnavailable })
	testsupport.Eventually(t, 10*time.Second, "the listener refusing new clients", func() bool {
		conn, err := net.DialTimeout("tcp", p.addrs["roomproxy"], time.Second)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case err := <-blocked:
		t.Fatalf("the BLPOP in flight ended during the drain: %v", err)
	default:
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	// The log up to the process's exit (its stderr closes), before Wait:
	// Wait closes the pipe, and a line not read yet would be lost.
	logged := make(chan string, 1)
	go func() { logged <- p.rest() }()
	var log string
	select {
	case log = <-logged:
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10 s after the second SIGTERM (SHUTDOWN_TIMEOUT 60 s)")
	}
	var ee *exec.ExitError
	if err := p.cmd.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit after the second signal: %v, want status 1", err)
	}
	if !strings.Contains(log, "second signal") {
		t.Errorf("the second signal is not logged:\n%s", log)
	}
}

// httpStatus is the status of a GET of url, or 0 if it failed.
func httpStatus(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
