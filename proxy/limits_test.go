package proxy

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/batch"
)

// bigUpstream answers every command with a 1 MiB bulk string.
type bigUpstream struct{ fakeUpstream }

var bigReply = []byte("$1048576\r\n" + strings.Repeat("x", 1<<20) + "\r\n")

func (b *bigUpstream) Submit(bt *batch.Batch) {
	for i := range bt.Replies {
		bt.Replies[i].Raw = bigReply
	}
	bt.Done()
}

// settle waits until the goroutine count is back near its baseline.
func settle(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if runtime.NumGoroutine() <= base+2 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("goroutines: %d, baseline %d", runtime.NumGoroutine(), base)
}

func openFDs() int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// TestSlowConsumerIsDisconnected: a client that never reads its replies is
// cut off after the output timeout; others are unaffected.
func TestSlowConsumerIsDisconnected(t *testing.T) {
	srv, addr := startServer(t, &bigUpstream{}, Config{Limits: Limits{OutputTimeout: 300 * time.Millisecond}})
	c := dial(t, addr)
	var req strings.Builder
	for range 256 { // 256 MiB of replies, far beyond the socket buffers
		req.WriteString(encode("GET", "big"))
	}
	c.Send(req.String())
	// The client reads nothing; the server must give up on it by itself.
	deadline := time.Now().Add(20 * time.Second)
	for srv.Clients() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := srv.Clients(); n != 0 {
		t.Fatalf("the slow consumer is still connected (%d clients)", n)
	}
	if got := dial(t, addr).Do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING = %q", got)
	}
}

// TestSlowlorisAndPartialFrames: a thousand connections each holding an
// incomplete command, and one with 8 MiB of an unfinished argument, are all
// closed at the frame deadline, and goroutines and file descriptors return to
// their baseline.
func TestSlowlorisAndPartialFrames(t *testing.T) {
	baseG, baseFD := runtime.NumGoroutine(), openFDs()
	srv, addr := startServer(t, newFake(), Config{Limits: Limits{FrameTimeout: 300 * time.Millisecond}})
	const n = 1000
	conns := make([]net.Conn, 0, n)
	for range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte("*1\r\n$4\r\nPI"))
		conns = append(conns, nc)
	}
	big, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	big.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9000000\r\n"))
	chunk := make([]byte, 1<<20)
	for range 8 {
		big.Write(chunk)
	}
	conns = append(conns, big)
	var wg sync.WaitGroup
	closed := make(chan bool, len(conns))
	for _, nc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64)
			_, err := nc.Read(buf)
			closed <- err != nil && !strings.Contains(err.Error(), "timeout")
			nc.Close()
		}()
	}
	wg.Wait()
	close(closed)
	for ok := range closed {
		if !ok {
			t.Fatal("a connection with an incomplete command was not closed at the frame deadline")
		}
	}
	if got := dial(t, addr).Do("PING"); got != "+PONG\r\n" {
		t.Fatalf("PING = %q", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Clients() > 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	settle(t, baseG+4) // the server's accept loop and the PING client
	if fd := openFDs(); baseFD > 0 && fd > baseFD+10 {
		t.Fatalf("file descriptors: %d, baseline %d", fd, baseFD)
	}
}

func TestIdleTimeout(t *testing.T) {
	_, addr := startServer(t, newFake(), Config{Limits: Limits{IdleTimeout: 200 * time.Millisecond}})
	c := dial(t, addr)
	if got := c.Do("PING"); got != "+PONG\r\n" {
		t.Fatal(got)
	}
	if !c.Closed() {
		t.Fatal("an idle client should be closed after IDLE_TIMEOUT")
	}
}

// TestConnectCloseCycles: 10,000 connect/close cycles, half of them after a
// command, leave no goroutine or file descriptor behind.
func TestConnectCloseCycles(t *testing.T) {
	baseG, baseFD := runtime.NumGoroutine(), openFDs()
	srv, addr := startServer(t, newFake(), Config{})
	for i := range 10000 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			nc.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			nc.Read(buf)
		}
		nc.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Clients() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := srv.Clients(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
	settle(t, baseG+2)
	if fd := openFDs(); baseFD > 0 && fd > baseFD+10 {
		t.Fatalf("file descriptors: %d, baseline %d", fd, baseFD)
	}
}

// TestMaxClientsPlusTen: ten clients over the limit are refused with Redis's
// text; the first ones keep working.
func TestMaxClientsPlusTen(t *testing.T) {
	_, addr := startServer(t, newFake(), Config{Limits: Limits{MaxClients: 20}})
	var keep []*client
	for range 20 {
		c := dial(t, addr)
		c.Do("PING")
		keep = append(keep, c)
	}
	for i := range 10 {
		c := dial(t, addr)
		if got := c.MustReply(); got != "-ERR max number of clients reached\r\n" {
			t.Fatalf("extra client %d: %q", i, got)
		}
	}
	for i, c := range keep {
		if got := c.Do("ECHO", fmt.Sprint(i)); got != fmt.Sprintf("$%d\r\n%d\r\n", len(fmt.Sprint(i)), i) {
			t.Fatalf("client %d: %q", i, got)
		}
	}
}
