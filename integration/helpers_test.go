// Package integration tests roomproxy end to end against real servers:
// redis-server (plain, with a password, with TLS), redis-cli and
// redis-benchmark, go-redis clients. Nothing here is mocked.
package integration

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/resptest"
	"github.com/roomproxy/roomproxy/internal/testmongo"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/testsupport"
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

func startProxy(t testing.TB, bcfg backend.Config, pcfg proxy.Config) *proxyUnderTest {
	return startProxyWith(t, bcfg, func(*backend.Upstream) proxy.Config { return pcfg })
}

// startProxyWith builds the proxy's configuration once the upstream exists
// (the room manager needs it).
func startProxyWith(t testing.TB, bcfg backend.Config, mk func(*backend.Upstream) proxy.Config) *proxyUnderTest {
	t.Helper()
	if bcfg.Timeout == 0 {
		bcfg.Timeout = 2 * time.Second
	}
	up, err := backend.New(bcfg)
	if err != nil {
		t.Fatalf("backend.New: %v", err)
	}
	srv := proxy.New(wiring.Upstream(up), mk(up))
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

type rawConn = resptest.Conn

// forEachStreamMode runs f with the upstream's batches on the pooled
// workers ("never", a local Redis's path) and on the full-duplex streams
// ("always", the path a remote upstream such as Upstash takes; UPSTREAM_STREAM
// auto switches to it above 2 ms round trips, which loopback never has).
// The two run in parallel, each against servers of its own.
func forEachStreamMode(t *testing.T, f func(t *testing.T, stream string)) {
	for _, stream := range []string{"never", "always"} {
		t.Run("stream="+stream, func(t *testing.T) {
			t.Parallel()
			f(t, stream)
		})
	}
}

func dialRaw(t *testing.T, addr string) *rawConn { return resptest.Dial(t, addr) }

func encode(args ...string) string { return resptest.Encode(args...) }

func leakCheck(t *testing.T) { testsupport.LeakCheck(t) }

// startStore starts a MongoDB-wire server (FerretDB) and opens the room
// store on database db with the given operation timeout; both end with the
// test.
func startStore(t *testing.T, db string, timeout time.Duration) (*fallback.Mongo, *testmongo.Server) {
	t.Helper()
	mdb := testmongo.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	store, err := fallback.OpenMongo(ctx, fallback.MongoConfig{URL: mdb.URL, DB: db, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store, mdb
}

// mustOK ends the test at an unexpected error.
func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// openClients opens a client of the proxy and one of redis-server itself,
// closed when the test ends.
func openClients(t *testing.T, p *proxyUnderTest, r *testredis.Server) (c, direct *redis.Client) {
	c = redis.NewClient(&redis.Options{Addr: p.Addr})
	direct = redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close(); direct.Close() })
	return c, direct
}
