package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/resptest"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/wiring"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/proxy"
	"github.com/roomproxy/roomproxy/rooms"
)

// errorLog keeps the proxy's error-level log lines (a recovered panic is
// logged there and answered as an error, so the fuzzer would not see it
// otherwise).
type errorLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *errorLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelError }
func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *errorLog) WithGroup(string) slog.Handler      { return l }

func (l *errorLog) panics() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, "panic") {
			out = append(out, s)
		}
	}
	return out
}

// FuzzRoomPath sends arbitrary client bytes to roomproxy with rooms on
// (the room rules, debouncing, the embedded store, the room scripts) in
// front of a real redis-server, over TCP, and half-closes. The proxy must
// never panic (not even one its recover turns into an error reply), end the
// session within a deadline, write only well-formed RESP, and answer PING
// afterwards. proxy's FuzzCommandPath covers the command path without rooms
// and upstream; this one reaches the room code and go-redis.
func FuzzRoomPath(f *testing.F) {
	for _, seed := range []string{
		encode("SET", "room:a", `{"status":"active","n":1}`) + encode("GET", "room:a") + encode("ROOM.GET", "a"),
		encode("HSET", "room:b", "status", "waiting", "x", "1") + encode("HSET", "room:b:players", "p1", "x") +
			encode("HSET", "room:b", "status", "completed") + encode("HGETALL", "room:b"),
		encode("SET", "room:c:pos", "1", "EX", "10") + encode("SET", "room:c:pos", "2", "PX", "5") +
			encode("MSET", "room:c:a", "1", "room:d:b", "2") + encode("MGET", "room:c:a", "room:d:b"),
		encode("MULTI") + encode("SET", "room:e", `{"status":"active"}`) + encode("EXPIRE", "room:e", "5") + encode("EXEC"),
		encode("ROOM.LIST") + encode("ROOM.LIST", "active", "COUNT", "3") + encode("ROOM.TTL", "a", "10") + encode("ROOM.FLUSH", "a"),
		encode("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "room:f", `{"status":"finished"}`) + encode("GET", "room:f"),
		encode("HELLO", "3") + encode("SETEX", "room:{g}:chat", "3", "hi") + encode("LPUSH", "room:{g}:log", "a") + encode("DEL", "room:g"),
		encode("SET", "room:h", "not json") + encode("HINCRBY", "room:h", "n", "1") + encode("RENAME", "room:h", "room:i") + encode("COPY", "room:i", "room:j"),
		encode("WATCH", "room:k") + encode("MULTI") + encode("HSET", "room:k", "status", "playing") + encode("EXEC") + encode("UNLINK", "room:k"),
		encode("SET", "room:", "x") + encode("SET", "room::", "y") + encode("SET", "room:{}", "z") + encode("GETDEL", "room:{"),
		"SET room:l {\"status\":\"active\"}\r\nGET room:l\r\n",
	} {
		f.Add([]byte(seed))
	}

	r := testredis.Start(f, testredis.Options{})
	store, err := fallback.OpenEmbedded(filepath.Join(f.TempDir(), "rooms.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	elog := &errorLog{}
	var d *rooms.Debouncer
	p := startProxyWith(f, backend.Config{URL: r.URL(), Timeout: 5 * time.Second}, func(up *backend.Upstream) proxy.Config {
		m := rooms.New(policy.DefaultRules(), store, wiring.Exec(up), nil)
		d = m.NewDebouncer(rooms.DebounceConfig{Window: 20 * time.Millisecond})
		return proxy.Config{Rooms: m, Logger: slog.New(elog),
			Limits: proxy.Limits{MaxRequestBytes: 1 << 20, FrameTimeout: 5 * time.Second}}
	})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(runCtx) }()
	f.Cleanup(func() { stop(); <-done })

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		var out []byte
		readDone := make(chan error, 1)
		go func() { // reads while writing: a large input's replies must not fill the socket
			var err error
			out, err = io.ReadAll(c)
			readDone <- err
		}()
		_, werr := c.Write(data)
		if werr == nil {
			c.(*net.TCPConn).CloseWrite()
		}
		rerr := <-readDone
		var ne net.Error
		switch {
		case errors.As(rerr, &ne) && ne.Timeout():
			t.Fatalf("the session did not end within 20 s of the half-close; input %q; output so far %q", data, out)
		case errors.Is(rerr, syscall.ECONNRESET) || werr != nil:
			// closed by the proxy (bad input) while bytes were unread: the
			// tail of the output may be lost, so it is not checked.
		case rerr != nil:
			t.Fatalf("read: %v", rerr)
		default:
			br := bufio.NewReader(bytes.NewReader(out))
			for {
				if _, err := resptest.ReadReply(br); err != nil {
					if err != io.EOF {
						t.Fatalf("malformed output after %q: %v\n%q", data, err, out)
					}
					break
				}
			}
		}
		if ps := elog.panics(); len(ps) > 0 {
			t.Fatalf("panic after %q: %s", data, ps[0])
		}
		if got := dialRaw(t, p.Addr).Do("PING"); got != "+PONG\r\n" {
			t.Fatalf("PING after %q: %q", data, got)
		}
	})
}
