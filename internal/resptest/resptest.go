// Package resptest is a raw RESP client for tests that compare bytes, so a
// status reply and a bulk string can never be confused (RESP2 and RESP3).
package resptest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ReadReply reads one complete reply, nested aggregates included, and returns
// its exact bytes.
func ReadReply(br *bufio.Reader) (string, error) {
	var out []byte
	err := read(br, &out)
	return string(out), err
}

func read(br *bufio.Reader, out *[]byte) error {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return err
	}
	*out = append(*out, line...)
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return fmt.Errorf("bad reply line %q", line)
	}
	body := string(line[1 : len(line)-2])
	switch line[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return nil
	case '$', '=', '!':
		n, err := strconv.Atoi(body)
		if err != nil {
			return fmt.Errorf("bad length %q", line)
		}
		if n < 0 {
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		*out = append(*out, buf...)
		return nil
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(body)
		if err != nil {
			return fmt.Errorf("bad length %q", line)
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range max(n, 0) {
			if err := read(br, out); err != nil {
				return err
			}
		}
		if line[0] == '|' { // an attribute precedes the real reply
			return read(br, out)
		}
		return nil
	}
	return fmt.Errorf("unknown reply type %q", line)
}

// Conn is a raw RESP client for tests: it sends bytes as given and reads
// whole replies as bytes.
type Conn struct {
	T  testing.TB
	NC net.Conn
	br *bufio.Reader
}

// Dial connects to addr; the connection is closed when the test ends.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &Conn{T: t, NC: nc, br: bufio.NewReader(nc)}
}

// Encode is a command in RESP form.
func Encode(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// Send writes raw bytes.
func (c *Conn) Send(s string) {
	c.T.Helper()
	if _, err := c.NC.Write([]byte(s)); err != nil {
		c.T.Fatal(err)
	}
}

// Reply reads one reply, waiting at most 5 s.
func (c *Conn) Reply() (string, error) {
	c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	return ReadReply(c.br)
}

// MustReply reads one reply and fails the test if there is none.
func (c *Conn) MustReply() string {
	c.T.Helper()
	r, err := c.Reply()
	if err != nil {
		c.T.Fatalf("reading reply: %v", err)
	}
	return r
}

// Do sends one command and returns its raw reply.
func (c *Conn) Do(args ...string) string {
	c.T.Helper()
	c.Send(Encode(args...))
	return c.MustReply()
}

// Closed reports whether the server closed the connection (EOF, or a reset
// when bytes we sent were discarded) within 5 s.
func (c *Conn) Closed() bool {
	c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.br.ReadByte()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}
