package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/proxy"
)

// TestRepliesMatchRedisByteForByte sends the same commands to a redis-server
// directly and to roomproxy in front of another, identical redis-server, and
// compares the raw reply bytes: a status stays a status, a bulk stays a bulk,
// and errors carry Redis's text. Through the pooled workers and through the
// full-duplex streams (a remote upstream's path, which reads replies
// differently).
func TestRepliesMatchRedisByteForByte(t *testing.T) {
	forEachStreamMode(t, repliesMatchRedisByteForByte)
}

func repliesMatchRedisByteForByte(t *testing.T, stream string) {
	direct := testredis.Start(t, testredis.Options{})
	behind := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: behind.URL(), Stream: stream}, proxy.Config{})

	sequences := map[string][][]string{
		"resp2": {
			{"PING"}, {"PING", "hello"}, {"ECHO", "bytes\x00\xff"},
			{"SET", "k", "OK"}, {"GET", "k"}, {"GET", "missing"}, {"SET", "k", "v", "NX"},
			{"SET", "k", "v", "EX", "abc"}, {"INCR", "k"}, {"INCR", "n"}, {"INCRBYFLOAT", "f", "1.5"},
			{"HSET", "h", "a", "1", "b", "2"}, {"HGETALL", "h"}, {"HGET", "h", "zz"},
			{"LPUSH", "l", "a", "b", "c"}, {"LRANGE", "l", "0", "-1"}, {"BLPOP"},
			{"SADD", "s", "x"}, {"SMEMBERS", "s"}, {"ZADD", "z", "1.5", "m"}, {"ZSCORE", "z", "m"},
			{"ZRANGE", "z", "0", "-1", "WITHSCORES"}, {"EXISTS", "k", "h", "nope"}, {"TYPE", "h"},
			{"TTL", "h"}, {"DEL", "l"}, {"MGET", "k", "missing", "n"}, {"HGETALL", "nope"},
			{"SELECT", "0"}, {"SELECT", "x"}, {"GET"}, {"SET", "x"},
			{"nosuchcommand", "a", "b"}, {"CLIENT", "GETNAME"}, {"CLIENT", "SETNAME", "p1"},
			{"CLIENT", "GETNAME"}, {"CLIENT", "NOSUCH"}, {"CONFIG", "NOSUCH"}, {"ECHO"},
			{"XADD", "st", "1-1", "f", "v"}, {"XRANGE", "st", "-", "+"}, {"PFADD", "hll", "a"},
			{"SETBIT", "bits", "7", "1"}, {"BITCOUNT", "bits"}, {"OBJECT", "ENCODING", "h"},
			{"GEOADD", "g", "13.361389", "38.115556", "Palermo"}, {"GEOPOS", "g", "Palermo", "nope"},
			{"EVAL", "return {1,'two',{3}}", "0"}, {"EVAL", "return redis.call('GET', KEYS[1])", "1", "k"},
			{"EVALSHA", "0000000000000000000000000000000000000000", "0"},
			{"SCRIPT", "EXISTS", "0000000000000000000000000000000000000000"},
		},
		"resp3": {
			{"HELLO", "3"}, {"GET", "missing"}, {"HSET", "h3", "a", "1"}, {"HGETALL", "h3"},
			{"SADD", "s3", "x"}, {"SMEMBERS", "s3"}, {"ZADD", "z3", "2.5", "m"}, {"ZSCORE", "z3", "m"},
			{"ZRANGE", "z3", "0", "-1", "WITHSCORES"}, {"EXISTS", "h3"}, {"MGET", "h3", "nope"},
			{"EVAL", "return {1,'two'}", "0"}, {"CLIENT", "GETNAME"}, {"PING"}, {"HELLO", "2"},
			{"GET", "missing"}, {"HGETALL", "h3"},
		},
	}
	for name, seq := range sequences {
		t.Run(name, func(t *testing.T) {
			a, b := dialRaw(t, direct.Addr), dialRaw(t, p.Addr)
			for _, args := range seq {
				want, got := a.Do(args...), b.Do(args...)
				if strings.EqualFold(args[0], "HELLO") {
					continue // its id differs by design
				}
				if got != want {
					t.Errorf("%q:\n roomproxy %q\n redis     %q", args, got, want)
				}
			}
		})
	}
	// Inline commands and protocol errors, each on a fresh connection,
	// followed by a sentinel PING: replies are compared until the sentinel's
	// (so a missing or extra reply shows as a mismatch, without waiting out a
	// read deadline for a reply that never comes) or until both closed the
	// connection after a protocol error.
	sentinel := encode("PING", "sentinel")
	const sentinelReply = "$8\r\nsentinel\r\n"
	for _, in := range []string{
		"PING\r\n", "SET inl 'a b'\r\nGET inl\r\n", "*-10\r\nPING\r\n", "*0\r\nPING\r\n",
		"$-10\r\n", "*1\r\nfoo\r\n", "*1\r\n$blabla\r\n", "SET \"a b\r\n", "*3000000000\r\n",
	} {
		a, b := dialRaw(t, direct.Addr), dialRaw(t, p.Addr)
		a.Send(in + sentinel)
		b.Send(in + sentinel)
		for i := 0; ; i++ {
			want, werr := a.Reply()
			got, gerr := b.Reply()
			if (werr == nil) != (gerr == nil) || got != want {
				t.Errorf("%q reply %d:\n roomproxy %q (%v)\n redis     %q (%v)", in, i, got, gerr, want, werr)
				break
			}
			if werr != nil || want == sentinelReply {
				break // both closed the connection, or both answered everything
			}
		}
	}
}

func TestGoRedisClients(t *testing.T) { forEachStreamMode(t, goRedisClients) }

func goRedisClients(t *testing.T, stream string) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL(), Stream: stream}, proxy.Config{})
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			ctx := context.Background()
			c := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: proto})
			defer c.Close()
			k := fmt.Sprintf("gr%d", proto)
			if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Get(ctx, k).Result(); err != nil || v != "v" {
				t.Fatalf("GET = %q, %v", v, err)
			}
			if _, err := c.Get(ctx, k+"-missing").Result(); !errors.Is(err, redis.Nil) {
				t.Fatalf("missing key: %v", err)
			}
			c.HSet(ctx, k+"h", "a", "1", "b", "2")
			if m, err := c.HGetAll(ctx, k+"h").Result(); err != nil || m["a"] != "1" || m["b"] != "2" {
				t.Fatalf("HGETALL = %v, %v", m, err)
			}
			c.ZAdd(ctx, k+"z", redis.Z{Score: 1.5, Member: "m"})
			if s, err := c.ZScore(ctx, k+"z", "m").Result(); err != nil || s != 1.5 {
				t.Fatalf("ZSCORE = %v, %v", s, err)
			}
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := range 100 {
					p.Incr(ctx, k+"n")
					p.Ping(ctx)
					_ = i
				}
				return nil
			})
			if err != nil || len(cmds) != 200 {
				t.Fatalf("pipeline: %d cmds, %v", len(cmds), err)
			}
			if n := cmds[198].(*redis.IntCmd).Val(); n != 100 {
				t.Fatalf("last INCR = %d", n)
			}
			if v, err := c.Do(ctx, "EVAL", "return redis.call('INCR', KEYS[1])", 1, k+"n").Int(); err != nil || v != 101 {
				t.Fatalf("EVAL = %d, %v", v, err)
			}
			if err := c.Do(ctx, "FLUSHALL").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
				t.Fatalf("FLUSHALL = %v", err)
			}
		})
	}
}

// TestPipelineOfMixedCommandsIsOneRoundTrip: 1000 commands in one write,
// including local commands and errors, come back in order, and each client
// batch the proxy read cost exactly one upstream round trip.
func TestPipelineOfMixedCommandsIsOneRoundTrip(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL()}, proxy.Config{})
	c := dialRaw(t, p.Addr)
	c.Do("PING") // connect; local, no upstream traffic
	before, batchesBefore := p.Up.Stats(), p.Srv.UpstreamBatches()

	var req strings.Builder
	var want []string
	forwarded := 0
	for i := range 1000 {
		switch i % 6 {
		case 0:
			req.WriteString(encode("SET", "k"+strconv.Itoa(i), strconv.Itoa(i)))
			want = append(want, "+OK\r\n")
			forwarded++
		case 1:
			v := strconv.Itoa(i - 1)
			req.WriteString(encode("GET", "k"+v))
			want = append(want, fmt.Sprintf("$%d\r\n%s\r\n", len(v), v))
			forwarded++
		case 2:
			req.WriteString(encode("PING"))
			want = append(want, "+PONG\r\n")
		case 3:
			req.WriteString(encode("INCR", "k"+strconv.Itoa(i-3)+"x"))
			want = append(want, ":1\r\n")
			forwarded++
		case 4:
			req.WriteString(encode("HSET", "k"+strconv.Itoa(i-4)))
			want = append(want, "-ERR wrong number of arguments for 'hset' command\r\n")
		case 5:
			req.WriteString(encode("LPUSH", "k"+strconv.Itoa(i-5), "x")) // a string key: Redis's error
			want = append(want, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
			forwarded++
		}
	}
	c.Send(req.String())
	for i, w := range want {
		got, err := c.Reply()
		if err != nil || got != w {
			t.Fatalf("reply %d: %q (%v), want %q", i, got, err, w)
		}
	}
	after, batchesAfter := p.Up.Stats(), p.Srv.UpstreamBatches()
	batches := batchesAfter - batchesBefore
	trips := after.RoundTrips - before.RoundTrips
	if sent := after.Commands - before.Commands; sent != int64(forwarded) {
		t.Errorf("upstream commands = %d, want %d", sent, forwarded)
	}
	if trips != batches {
		t.Errorf("%d client batches cost %d upstream round trips; want one each", batches, trips)
	}
	if batches < 1 || batches > 3 {
		t.Errorf("a %d-byte pipeline was read as %d batches", req.Len(), batches)
	}
	// redis-server saw exactly the forwarded commands.
	stats := dialRaw(t, r.Addr).Do("INFO", "commandstats")
	for cmd, n := range map[string]int{"set": 167, "get": 167, "incr": 167, "lpush": 166} {
		if !strings.Contains(stats, fmt.Sprintf("cmdstat_%s:calls=%d,", cmd, n)) {
			t.Errorf("redis commandstats lacks %s calls=%d:\n%s", cmd, n, stats)
		}
	}
	t.Logf("1000 commands, %d bytes: %d client batch(es), %d upstream round trip(s)", req.Len(), batches, trips)
}

// TestTLSUpstreamWithPassword stands in for Upstash: TLS only, requirepass,
// a CA made by the test.
func TestTLSUpstreamWithPassword(t *testing.T) {
	r := testredis.Start(t, testredis.Options{TLS: true, Password: "upstash-secret-pw"})
	ctx := context.Background()

	t.Run("verified", func(t *testing.T) {
		p := startProxy(t, backend.Config{URL: r.URL(), TLSCAFile: r.CAFile}, proxy.Config{})
		c := redis.NewClient(&redis.Options{Addr: p.Addr})
		defer c.Close()
		if err := c.Set(ctx, "tls", "yes", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, _ := c.Get(ctx, "tls").Result(); v != "yes" {
			t.Fatalf("GET = %q", v)
		}
	})
	failures := map[string]backend.Config{
		"unknown CA":     {URL: r.URL()},
		"wrong password": {URL: strings.Replace(r.URL(), "upstash-secret-pw", "wrong-pw", 1), TLSCAFile: r.CAFile},
		// The certificate names localhost only; 127.0.0.1 is the right server
		// under a name the certificate lacks (no DNS lookup needed).
		"wrong hostname": {URL: strings.Replace(r.URL(), "localhost", "127.0.0.1", 1), TLSCAFile: r.CAFile},
	}
	for name, cfg := range failures {
		t.Run(name, func(t *testing.T) {
			p := startProxy(t, cfg, proxy.Config{})
			c := dialRaw(t, p.Addr)
			got := c.Do("GET", "tls")
			if !strings.HasPrefix(got, "-TRYAGAIN") {
				t.Fatalf("got %q, want a TRYAGAIN error", got)
			}
			for _, secret := range []string{"upstash-secret-pw", "wrong-pw", strconv.Itoa(r.Port), "localhost"} {
				if strings.Contains(got, secret) {
					t.Fatalf("reply %q reveals %q", got, secret)
				}
			}
			if got := c.Do("PING"); got != "+PONG\r\n" {
				t.Fatalf("PING = %q", got)
			}
		})
	}
}

func TestRejectsInsecureUpstreamURL(t *testing.T) {
	for _, u := range []string{"rediss://h:1?skip_verify=true", "http://h:1", "redis://h:1/3", "nonsense"} {
		_, err := backend.New(backend.Config{URL: u})
		if err == nil || !strings.HasPrefix(err.Error(), "REDIS_URL") {
			t.Errorf("%q: err = %v, want an error naming REDIS_URL", u, err)
		}
	}
}

// TestRedisCLI drives roomproxy with redis-cli as a person would, and checks
// the same session against redis-server.
func TestRedisCLI(t *testing.T) {
	direct := testredis.Start(t, testredis.Options{})
	behind := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: behind.URL()}, proxy.Config{})
	script := "PING\nSET greeting hello\nGET greeting\nHSET player:1 name ada score 7\nHGETALL player:1\nnosuchcmd x\nGET greeting\nDEL greeting\n"
	run := func(port string) string {
		cmd := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", port)
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli: %v\n%s", err, out)
		}
		return string(out)
	}
	_, pport, _ := strings.Cut(p.Addr, ":")
	want, got := run(strconv.Itoa(direct.Port)), run(pport)
	if got != want {
		t.Fatalf("redis-cli through roomproxy:\n%s\nagainst redis-server:\n%s", got, want)
	}
	out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", pport, "INFO").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "loading:0") || !strings.Contains(string(out), "redis_version:") {
		t.Fatalf("redis-cli INFO: %v\n%s", err, out)
	}
	out, err = exec.Command("redis-cli", "-h", "127.0.0.1", "-p", pport, "COMMAND", "COUNT").CombinedOutput()
	if n, _ := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || n < 150 {
		t.Fatalf("redis-cli COMMAND COUNT: %v %q", err, out)
	}
}

// TestRedisBenchmarkRunsClean runs redis-benchmark through roomproxy and
// checks every test ran with no error reply.
func TestRedisBenchmarkRunsClean(t *testing.T) { forEachStreamMode(t, redisBenchmarkRunsClean) }

func redisBenchmarkRunsClean(t *testing.T, stream string) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL(), Stream: stream}, proxy.Config{})
	_, port, _ := strings.Cut(p.Addr, ":")
	for _, pipeline := range []string{"1", "16"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, "redis-benchmark", "-h", "127.0.0.1", "-p", port,
			"-t", "set,get,incr,lpush,hset", "-P", pipeline, "-q", "-n", "5000", "-c", "20").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("redis-benchmark -P %s: %v\n%s", pipeline, err, out)
		}
		s := string(out)
		for _, test := range []string{"SET:", "GET:", "INCR:", "LPUSH:", "HSET:"} {
			if !strings.Contains(s, test) {
				t.Errorf("-P %s: no %s line:\n%s", pipeline, test, s)
			}
		}
		if strings.Contains(strings.ToLower(s), "error") {
			t.Errorf("-P %s: errors:\n%s", pipeline, s)
		}
	}
	if st := p.Up.Stats(); st.Conns > 8 {
		t.Errorf("used %d upstream connections for 20 clients", st.Conns)
	}
}
