package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/internal/resptest"
)

// TestReadLoopsAgree sends the same client bytes through the ordinary read
// loop (a connection without a descriptor, as the fuzzer uses) and through
// session.serveRaw (a real TCP socket), each to a fresh server, and compares
// the replies. Inputs: the fuzz seeds, and generated pipelines mixing
// forwarded and local commands, inline commands, MULTI, values larger than
// the guard's 16 KiB buffer, skipped "*0" frames and a bad frame at the end.
func TestReadLoopsAgree(t *testing.T) {
	inputs := []string{
		"*1\r\n$9223372036854775807\r\n",
		"*-10\r\n", "*1\r\nfoo\r\n", "$blabla\r\n",
		"PING\r\nECHO \"a\\x41\"\r\n", "SET \"a b\r\n", "   \r\n\r\nPING\r\n",
		"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n*1\r\n$4\r\nPING\r\n",
		"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n*1\r\n$4\r\nPING\r\n",
		"*1\r\n$5\r\nRESET\r\n*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		var b strings.Builder
		for i := range 1 + rng.IntN(300) {
			k := fmt.Sprint("k", rng.IntN(20))
			switch rng.IntN(9) {
			case 0:
				b.WriteString(encode("SET", k, strings.Repeat("v", rng.IntN(40<<10))))
			case 1:
				b.WriteString(encode("GET", k))
			case 2:
				b.WriteString("PING\r\n")
			case 3:
				b.WriteString(encode("ECHO", fmt.Sprint(i)))
			case 4:
				b.WriteString("*0\r\n")
			case 5:
				b.WriteString(encode("MULTI") + encode("SET", k, "m") + encode("GET", k) + encode("EXEC"))
			case 6:
				b.WriteString(encode("DEL", k))
			case 7:
				b.WriteString(encode("NOPE", k))
			default:
				b.WriteString(encode("GET"))
			}
		}
		if rng.IntN(4) == 0 {
			b.WriteString("*2\r\n$3\r\nGET\r\n$-5\r\n")
		}
		inputs = append(inputs, b.String())
	}
	for i, in := range inputs {
		ordinary := repliesOf(t, serveOrdinary(in))
		raw := repliesOf(t, serveTCP(t, in))
		if len(ordinary) != len(raw) {
			t.Fatalf("input %d (%d bytes): %d replies on the ordinary loop, %d on the raw loop", i, len(in), len(ordinary), len(raw))
		}
		for j := range ordinary {
			if ordinary[j] != raw[j] {
				t.Fatalf("input %d, reply %d: ordinary %.200q, raw %.200q", i, j, ordinary[j], raw[j])
			}
		}
	}
}

// serveOrdinary runs in through a fresh server on a memConn.
func serveOrdinary(in string) []byte {
	srv := New(newFake(), Config{})
	c := &memConn{r: bytes.NewReader([]byte(in))}
	srv.accept(c)
	srv.wg.Wait()
	return c.out.Bytes()
}

// serveTCP runs in through a fresh server on a loopback TCP connection: it
// writes everything, half-closes, and reads until the server closes.
func serveTCP(t *testing.T, in string) []byte {
	t.Helper()
	_, addr := startServer(t, newFake(), Config{})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	done := make(chan []byte)
	go func() {
		out, _ := io.ReadAll(nc)
		done <- out
	}()
	nc.Write([]byte(in)) // the server may close before reading it all
	nc.(*net.TCPConn).CloseWrite()
	return <-done
}

func repliesOf(t *testing.T, out []byte) []string {
	t.Helper()
	var replies []string
	br := bufio.NewReader(bytes.NewReader(out))
	for {
		r, err := resptest.ReadReply(br)
		if err == io.EOF {
			return replies
		}
		if err != nil {
			t.Fatalf("malformed output: %v", err)
		}
		replies = append(replies, r)
	}
}

// TestHalfCloseEndsSession: a client that sends its last commands and shuts
// down its side (nc, socat, scripts) gets every reply, and then the proxy
// closes the connection. The end of stream comes with the last data, so a
// session that parked after reading that data would wait for a wake-up that
// never comes (the first raw loop did, and leaked the connection).
func TestHalfCloseEndsSession(t *testing.T) {
	srv, addr := startServer(t, newFake(), Config{})
	for range 20 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write([]byte("PING\r\n*1\r\n$4\r\nPING\r\n"))
		nc.(*net.TCPConn).CloseWrite()
		out, err := io.ReadAll(nc)
		nc.Close()
		if err != nil || string(out) != "+PONG\r\n+PONG\r\n" {
			t.Fatalf("got %q, %v; want both replies, then the proxy closing", out, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		srv.mu.Lock()
		n := len(srv.sessions)
		srv.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions left after their clients closed", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
