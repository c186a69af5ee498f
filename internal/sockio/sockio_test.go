package sockio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection, the first wrapped.
func pair(t testing.TB) (net.Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	c := Wrap(nc)
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer.(*net.TCPConn)
}

func TestWrap(t *testing.T) {
	c, _ := pair(t)
	if runtime.GOOS == "linux" {
		if _, ok := c.(*Conn); !ok {
			t.Fatalf("Wrap(TCP) = %T, want *Conn", c)
		}
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a connection that is not TCP")
	}
}

// The RawConn for go-redis's health check calls back only for a connection
// idle for checkIdle, and fails for a closed one.
func TestIdleCheck(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Wrap returns the connection itself here")
	}
	defer func(d time.Duration) { checkIdle = d }(checkIdle)
	checkIdle = 500 * time.Millisecond // the first checks below run within microseconds of Wrap
	c, peer := pair(t)
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	called := 0
	peek := func(uintptr) bool { called++; return true }
	if err := rc.Read(peek); err != nil || called != 0 {
		t.Fatalf("fresh connection: Read = %v, %d callbacks, want nil and none", err, called)
	}
	time.Sleep(2 * checkIdle)
	if err := rc.Read(peek); err != nil || called != 1 {
		t.Fatalf("idle connection: Read = %v, %d callbacks, want nil and one", err, called)
	}
	peer.Write([]byte("+OK\r\n"))
	c.Read(make([]byte, 10))
	if err := rc.Read(peek); err != nil || called != 1 {
		t.Fatalf("after a read: Read = %v, %d callbacks, want no new one", err, called)
	}
	if err := rc.Control(func(uintptr) { called++ }); err != nil || called != 2 {
		t.Fatalf("Control = %v, want it to call back", err)
	}
	c.Close()
	if err := rc.Read(peek); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed connection: Read = %v, want net.ErrClosed", err)
	}
}

// Data crosses both ways intact, also when a write is far larger than the
// socket buffers (the writer parks in the poller until the reader catches up).
func TestReadWrite(t *testing.T) {
	c, peer := pair(t)
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(peer, buf, 6)
	if err != nil || string(buf[:n]) != "PING\r\n" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	peer.Write([]byte("+PONG\r\n"))
	n, err = io.ReadAtLeast(c, buf, 7)
	if err != nil || string(buf[:n]) != "+PONG\r\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		io.CopyN(&b, peer, int64(len(big)))
		got <- b.Bytes()
	}()
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("big write = %d, %v", n, err)
	}
	if !bytes.Equal(<-got, big) {
		t.Fatal("big write arrived altered")
	}
	// And the other way, read in small pieces.
	go peer.Write(big)
	var b bytes.Buffer
	small := make([]byte, 1000)
	for b.Len() < len(big) {
		n, err := c.Read(small)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", b.Len(), err)
		}
		b.Write(small[:n])
	}
	if !bytes.Equal(b.Bytes(), big) {
		t.Fatal("big read arrived altered")
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read = %d, %v", n, err)
	}
}

// Errors look like net.TCPConn's: io.EOF at the end, a timeout at the
// deadline, net.ErrClosed after Close, the errno under a *net.OpError.
func TestErrors(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		c, _ := pair(t)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 10))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past deadline: %v", err)
		}
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		big := make([]byte, 64<<20) // more than the peer, which never reads, can buffer
		n, err := c.Write(big)
		if !errors.Is(err, os.ErrDeadlineExceeded) || n == len(big) {
			t.Fatalf("write past deadline = %d, %v", n, err)
		}
	})
	t.Run("eof", func(t *testing.T) {
		c, peer := pair(t)
		peer.Write([]byte("bye"))
		peer.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "bye" {
			t.Fatalf("ReadAll = %q, %v", b, err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read at end = %v, want io.EOF", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		c, peer := pair(t)
		peer.SetLinger(0)
		peer.Close() // RST
		time.Sleep(50 * time.Millisecond)
		_, err := c.Read(make([]byte, 1))
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("read after reset = %v, want ECONNRESET in a *net.OpError", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		c, _ := pair(t)
		done := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		c.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read blocked across Close = %v, want net.ErrClosed", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after Close = %v, want net.ErrClosed", err)
		}
	})
}

// echoed returns a wrapped connection whose peer echoes what it receives,
// and one small write and the read of its echo over it; an error fails tb.
func echoed(tb testing.TB) func() {
	c, peer := pair(tb)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			if _, err := peer.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	msg, buf := []byte("+OK\r\n"), make([]byte, 5)
	return func() {
		if _, err := c.Write(msg); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			tb.Fatal(err)
		}
	}
}

// A Read or Write allocates nothing: the proxy writes every client batch's
// replies through one, and go-redis reads and writes every upstream round
// trip through them. (Callbacks made per call cost three allocations each.)
func TestNoAllocations(t *testing.T) {
	if allocs := testing.AllocsPerRun(500, echoed(t)); allocs != 0 {
		t.Fatalf("a Write and a Read allocated %v times, want 0", allocs)
	}
}

// BenchmarkRoundTrip is a small write and the read of its echo over loopback.
func BenchmarkRoundTrip(b *testing.B) {
	roundTrip := echoed(b)
	b.ReportAllocs()
	for b.Loop() {
		roundTrip()
	}
}
