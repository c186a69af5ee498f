// Package integration tests roomproxy end to end against real servers:
// redis-server (plain, with a password, with TLS), redis-cli and
// redis-benchmark, go-redis clients. Nothing here is mocked.
package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/internal/resptest"
	"github.com/roomproxy/roomproxy/internal/wiring"
	"github.com/roomproxy/roomproxy/proxy"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// proxyUnderTest is roomproxy wired as cmd/roomproxy wires it, in process.
type proxyUnderTest struct {
	Addr string
	Srv  *proxy.Server
	Up   *backend.Upstream
}

func startProxy(t *testing.T, bcfg backend.Config, pcfg proxy.Config) *proxyUnderTest {
	t.Helper()
	if bcfg.Timeout == 0 {
		bcfg.Timeout = 2 * time.Second
	}
	up, err := backend.New(bcfg)
	if err != nil {
		t.Fatalf("backend.New: %v", err)
	}
	srv := proxy.New(wiring.Upstream(up), pcfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
		up.Close()
	})
	return &proxyUnderTest{Addr: ln.Addr().String(), Srv: srv, Up: up}
}

// rawConn sends RESP and reads raw replies.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) reply() (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	return resptest.ReadReply(c.br)
}

func (c *rawConn) do(args ...string) string {
	c.t.Helper()
	c.send(encode(args...))
	r, err := c.reply()
	if err != nil {
		c.t.Fatalf("%q: %v", args, err)
	}
	return r
}

func encode(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}
