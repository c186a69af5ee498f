package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/proxy"
)

func TestTransactions(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL()}, proxy.Config{})
	ctx := context.Background()
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: proto})
			other := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: proto})
			defer c.Close()
			defer other.Close()
			k := fmt.Sprint("tx", proto)
			cmds, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, k, "1", 0)
				pipe.Incr(ctx, k)
				pipe.Get(ctx, k)
				return nil
			})
			if err != nil || cmds[2].(*redis.StringCmd).Val() != "2" {
				t.Fatalf("MULTI/EXEC: %v %v", cmds, err)
			}
			// WATCH, a change by another client, EXEC aborts.
			err = c.Watch(ctx, func(tx *redis.Tx) error {
				n, _ := tx.Get(ctx, k).Int()
				other.Set(ctx, k, "100", 0)
				_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
					pipe.Set(ctx, k, n+1, 0)
					return nil
				})
				return err
			}, k)
			if !errors.Is(err, redis.TxFailedErr) {
				t.Fatalf("WATCH conflict: err = %v, want TxFailedErr", err)
			}
			// WATCH without a conflict commits.
			err = c.Watch(ctx, func(tx *redis.Tx) error {
				n, _ := tx.Get(ctx, k).Int()
				_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
					pipe.Set(ctx, k, n+1, 0)
					return nil
				})
				return err
			}, k)
			if v, _ := c.Get(ctx, k).Result(); err != nil || v != "101" {
				t.Fatalf("WATCH commit: %v, value %q", err, v)
			}
		})
	}
	// Raw bytes against redis-server: queued replies, EXECABORT, DISCARD.
	direct := testredis.Start(t, testredis.Options{})
	a, b := dialRaw(t, direct.Addr), dialRaw(t, p.Addr)
	for _, args := range [][]string{
		{"MULTI"}, {"SET", "rt", "1"}, {"INCR", "rt"}, {"GET", "rt"}, {"EXEC"},
		{"MULTI"}, {"SET", "rt", "1"}, {"nosuch"}, {"EXEC"},
		{"MULTI"}, {"GET"}, {"EXEC"},
		{"MULTI"}, {"MULTI"}, {"INCR", "rt"}, {"DISCARD"}, {"GET", "rt"},
		{"MULTI"}, {"WATCH", "rt"}, {"LPUSH", "rt", "x"}, {"EXEC"},
		{"WATCH", "rt"}, {"UNWATCH"}, {"EXEC"}, {"DISCARD"},
	} {
		if want, got := a.Do(args...), b.Do(args...); got != want {
			t.Errorf("%q:\n roomproxy %q\n redis     %q", args, got, want)
		}
	}
}

// TestSessionIsolation: one client's MULTI, WATCH, SUBSCRIBE, HELLO 3 and
// CLIENT REPLY OFF never change another client's replies on the shared pool.
func TestSessionIsolation(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL(), Conns: 1}, proxy.Config{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // client A: every kind of session state, in a loop
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a := dialRaw(t, p.Addr)
			a.Send(encode("HELLO", "3") + encode("CLIENT", "REPLY", "OFF") + encode("SET", "a", "x") +
				encode("CLIENT", "REPLY", "ON") + encode("MULTI") + encode("INCR", "a:n") + encode("WATCH", "b") +
				encode("EXEC") + encode("WATCH", "a:n") + encode("GET", "a:n") + encode("SUBSCRIBE", "iso") +
				encode("GET", "a"))
			for range 10 { // HELLO, ON, MULTI, QUEUED, WATCH err, EXEC, WATCH, GET, SUBSCRIBE, GET
				if _, err := a.Reply(); err != nil {
					t.Errorf("client A: %v", err)
					return
				}
			}
			a.NC.Close()
		}
	}()
	b := dialRaw(t, p.Addr)
	for i := range 2000 {
		k := fmt.Sprint("b:", i%50)
		v := fmt.Sprint(i)
		if got := b.Do("SET", k, v); got != "+OK\r\n" {
			t.Fatalf("client B SET: %q", got)
		}
		if got := b.Do("GET", k); got != fmt.Sprintf("$%d\r\n%s\r\n", len(v), v) {
			t.Fatalf("client B GET %s: %q", k, got)
		}
		if got := b.Do("GET", "b:missing"); got != "$-1\r\n" {
			t.Fatalf("client B saw a RESP3 reply: %q", got)
		}
	}
	close(stop)
	wg.Wait()
}

func TestPubSub(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL()}, proxy.Config{})
	ctx := context.Background()
	publisher := redis.NewClient(&redis.Options{Addr: r.Addr}) // direct: another instance's view
	defer publisher.Close()
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: proto})
			defer c.Close()
			ch := fmt.Sprint("news", proto)
			sub := c.Subscribe(ctx, ch)
			defer sub.Close()
			if _, err := sub.ReceiveTimeout(ctx, 5*time.Second); err != nil {
				t.Fatalf("subscribe confirmation: %v", err)
			}
			psub := c.PSubscribe(ctx, "room:*:events")
			defer psub.Close()
			if _, err := psub.ReceiveTimeout(ctx, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			n, err := c.PubSubNumSub(ctx, ch).Result()
			if err != nil || n[ch] != 1 {
				t.Fatalf("PUBSUB NUMSUB = %v, %v", n, err)
			}
			payload := "bin\x00\xff\r\npayload"
			if err := publisher.Publish(ctx, ch, payload).Err(); err != nil {
				t.Fatal(err)
			}
			m, err := sub.ReceiveTimeout(ctx, 5*time.Second)
			if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Payload != payload || msg.Channel != ch {
				t.Fatalf("message: %#v, %v", m, err)
			}
			publisher.Publish(ctx, "room:7:events", "p")
			m, err = psub.ReceiveTimeout(ctx, 5*time.Second)
			if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Pattern != "room:*:events" || msg.Channel != "room:7:events" {
				t.Fatalf("pmessage: %#v, %v", m, err)
			}
			// PUBLISH through the proxy reaches a direct subscriber too.
			dsub := publisher.Subscribe(ctx, "fromproxy")
			defer dsub.Close()
			dsub.ReceiveTimeout(ctx, 5*time.Second)
			if n, err := c.Publish(ctx, "fromproxy", "hi").Result(); err != nil || n != 1 {
				t.Fatalf("PUBLISH through roomproxy = %d, %v", n, err)
			}
		})
	}
	// Raw bytes against redis-server, RESP2 subscriber mode and RESP3 pushes.
	direct := testredis.Start(t, testredis.Options{})
	seqs := [][][]string{
		{{"SUBSCRIBE", "a", "b"}, {"GET", "x"}, {"PING"}, {"PING", "hi"}, {"PSUBSCRIBE", "p*"},
			{"UNSUBSCRIBE", "a"}, {"PUNSUBSCRIBE"}, {"UNSUBSCRIBE"}, {"UNSUBSCRIBE"}, {"GET", "x"}},
		{{"HELLO", "3"}, {"SUBSCRIBE", "a"}, {"GET", "x"}, {"PING"}, {"UNSUBSCRIBE"}, {"UNSUBSCRIBE"}},
	}
	// Each sequence also in one write: the commands after SUBSCRIBE are in
	// the batch that starts the subscription reader, which must not read on
	// until that batch is done.
	for _, seq := range seqs {
		a, b := dialRaw(t, direct.Addr), dialRaw(t, p.Addr)
		var all strings.Builder
		n := 0
		for _, args := range seq {
			all.WriteString(encode(args...))
			n++
			if strings.HasSuffix(strings.ToLower(args[0]), "subscribe") && len(args) > 2 {
				n += len(args) - 2
			}
		}
		a.Send(all.String())
		b.Send(all.String())
		for i := range n {
			want, _ := a.Reply()
			got, _ := b.Reply()
			if i > 0 || seq[0][0] != "HELLO" { // HELLO's server fields differ
				if got != want {
					t.Errorf("reply %d of %q in one write:\n roomproxy %q\n redis     %q", i, seq, got, want)
				}
			}
		}
	}
	for _, seq := range seqs {
		a, b := dialRaw(t, direct.Addr), dialRaw(t, p.Addr)
		for _, args := range seq {
			a.Send(encode(args...))
			b.Send(encode(args...))
			n := 1
			if strings.HasSuffix(strings.ToLower(args[0]), "subscribe") && len(args) > 2 {
				n = len(args) - 1
			}
			for range n {
				want, _ := a.Reply()
				got, _ := b.Reply()
				if args[0] == "HELLO" {
					continue
				}
				if got != want {
					t.Errorf("%q:\n roomproxy %q\n redis     %q", args, got, want)
				}
			}
		}
	}
}

// TestPubSubSurvivesUpstreamRestart: subscriptions are restored upstream
// after the connection is lost, and the client stays connected.
func TestPubSubSurvivesUpstreamRestart(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL(), PubSubPing: 200 * time.Millisecond}, proxy.Config{})
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	sub := c.Subscribe(ctx, "restart")
	defer sub.Close()
	if _, err := sub.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	r.Restart()
	pub := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer pub.Close()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := pub.PubSubNumSub(ctx, "restart").Result(); n["restart"] == 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := pub.Publish(ctx, "restart", "again").Err(); err != nil {
		t.Fatal(err)
	}
	m, err := sub.ReceiveTimeout(ctx, 10*time.Second)
	if msg, ok := m.(*redis.Message); err != nil || !ok || msg.Payload != "again" {
		t.Fatalf("after restart: %#v, %v", m, err)
	}
}

func TestBlockingCommands(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	p := startProxy(t, backend.Config{URL: r.URL(), Conns: 2}, proxy.Config{})
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, PoolSize: 200})
	defer c.Close()

	// 100 clients block on 100 lists; meanwhile ordinary commands run.
	const blocked = 100
	results := make(chan error, blocked)
	for i := range blocked {
		go func() {
			v, err := c.BLPop(ctx, 0, fmt.Sprint("q:", i)).Result()
			if err == nil && v[1] != fmt.Sprint("job-", i) {
				err = fmt.Errorf("BLPOP q:%d got %v", i, v)
			}
			results <- err
		}()
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		info, _ := direct.Info(ctx, "clients").Result()
		if strings.Contains(info, fmt.Sprintf("blocked_clients:%d\r\n", blocked)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	other := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer other.Close()
	for i := range 200 {
		if err := other.Set(ctx, fmt.Sprint("free:", i), i, 0).Err(); err != nil {
			t.Fatalf("ordinary command while %d clients block: %v", blocked, err)
		}
	}
	for i := range blocked {
		if err := other.LPush(ctx, fmt.Sprint("q:", i), fmt.Sprint("job-", i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for range blocked {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	// A timeout answers nil; a client that disconnects cancels its call.
	if _, err := c.BLPop(ctx, 100*time.Millisecond, "q:empty").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("BLPOP timeout: %v", err)
	}
	// A client that leaves cancels its call, also when it pipelined more
	// commands after the BLPOP.
	for _, req := range []string{
		encode("BLPOP", "q:gone", "0"),
		encode("BLPOP", "q:gone2", "0") + encode("PING"),
	} {
		raw := dialRaw(t, p.Addr)
		raw.Send(req)
		if !eventuallyBlocked(direct, 1) {
			t.Fatalf("%q never blocked upstream", req)
		}
		raw.NC.Close()
		if !eventuallyBlocked(direct, 0) {
			t.Fatalf("%q: the upstream call was not cancelled when its client left", req)
		}
	}
	// A pipelined command after BLPOP is answered after it, in order.
	raw2 := dialRaw(t, p.Addr)
	raw2.Send(encode("BLPOP", "q:pipe", "0"))
	eventuallyBlocked(direct, 1)
	raw2.Send(encode("ECHO", "after"))
	direct.LPush(ctx, "q:pipe", "v")
	if got, _ := raw2.Reply(); got != "*2\r\n$6\r\nq:pipe\r\n$1\r\nv\r\n" {
		t.Fatalf("BLPOP reply %q", got)
	}
	if got, _ := raw2.Reply(); got != "$5\r\nafter\r\n" {
		t.Fatalf("pipelined reply %q", got)
	}
	// The same with a command already behind BLPOP in its write (it waits in
	// the guard's buffer) and another sent while it blocks (appended there):
	// the BLPOP's own arguments live in that buffer all along.
	raw2.Send(encode("BLPOP", "q:pipe2", "0") + encode("ECHO", "one"))
	eventuallyBlocked(direct, 1)
	raw2.Send(encode("ECHO", "two"))
	direct.LPush(ctx, "q:pipe2", "w")
	for _, want := range []string{"*2\r\n$7\r\nq:pipe2\r\n$1\r\nw\r\n", "$3\r\none\r\n", "$3\r\ntwo\r\n"} {
		if got, _ := raw2.Reply(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func eventuallyBlocked(c *redis.Client, n int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		info, _ := c.Info(context.Background(), "clients").Result()
		if strings.Contains(info, fmt.Sprintf("blocked_clients:%d\r\n", n)) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}
