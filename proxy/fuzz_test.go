package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/internal/resptest"
)

// memConn is a client connection whose input is fixed bytes and whose output
// is collected; deadlines are accepted and ignored.
type memConn struct {
	r   *bytes.Reader
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6380} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzCommandPath runs arbitrary client bytes through the whole command path
// (guard, redcon's reader, dispatch, local handlers, upstream batch, reply
// writer). It must never panic, hang or write anything but well-formed RESP.
func FuzzCommandPath(f *testing.F) {
	for _, seed := range []string{
		"*1\r\n$9223372036854775807\r\n",
		"*9223372036854775807\r\n$0",
		"*1000000000\r\n$0\r\n",
		"*-10\r\n", "*3000000000\r\n", "*1\r\nfoo\r\n", "$-10\r\n", "$blabla\r\n",
		"PING\r\nECHO \"a\\x41\"\r\n", "SET \"a b\r\n",
		"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
		"*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP\r\n*1\r\n$4\r\nPING\r\n",
		"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n*1\r\n$7\r\nCOMMAND\r\n",
		"*4\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$1\r\n*\r\n$1\r\n[\r\n",
		"*1\r\n$5\r\nRESET\r\n*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n",
	} {
		f.Add([]byte(seed))
	}
	srv := New(newFake(), Config{Limits: Limits{MaxRequestBytes: 64 << 10, MaxInlineBytes: 4096}})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &memConn{r: bytes.NewReader(data)}
		srv.accept(c)
		srv.wg.Wait()
		br := bufio.NewReader(bytes.NewReader(c.out.Bytes()))
		for {
			if _, err := resptest.ReadReply(br); err != nil {
				if err != io.EOF {
					t.Fatalf("malformed output after %q: %v\n%q", data, err, c.out.Bytes())
				}
				break
			}
		}
	})
}
