package proxy

import (
	"context"
	"errors"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/rooms"
	"io"
	"strings"
	"testing"

	"github.com/roomproxy/roomproxy/batch"
	"github.com/tidwall/redcon"
)

// okUpstream answers every command "+OK" without locking: the cheapest
// upstream, so the benchmarks measure the proxy alone.
type okUpstream struct{}

func (okUpstream) Submit(b *batch.Batch) {
	for i := range b.Replies {
		b.Replies[i].Raw = okReply
	}
	b.Done()
}

var okReply = []byte("+OK\r\n")

func (okUpstream) Lane(context.Context, int) (Lane, error) { return nil, errors.New("no lanes") }
func (okUpstream) Subscriber(int) Subscriber               { return nil }

func pipelineBytes(n int) []byte {
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			b.WriteString(encode("SET", "key:000123", "xxx"))
		} else {
			b.WriteString(encode("GET", "key:000123"))
		}
	}
	return []byte(b.String())
}

// loopConn serves data again and again, n times, then EOF; writes are dropped.
type loopConn struct {
	memConn
	data []byte
	left int
	off  int
}

func (c *loopConn) Read(p []byte) (int, error) {
	if c.off == len(c.data) {
		if c.left == 0 {
			return 0, io.EOF
		}
		c.left--
		c.off = 0
	}
	n := copy(p, c.data[c.off:])
	c.off += n
	return n, nil
}

func (c *loopConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkParse: bytes to commands through the frame guard and redcon's
// parser, 16 commands per read as redis-benchmark -P 16 sends them. Reported
// per command.
func BenchmarkParse(b *testing.B) {
	data := pipelineBytes(16)
	srv := New(okUpstream{}, Config{})
	c := &loopConn{data: data, left: b.N, off: len(data)}
	s := &session{srv: srv, nc: c, authed: true}
	s.guard = newFrameGuard(c, &srv.lim, s.authenticated)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		for n := 0; n < 16; {
			cmds, err := s.readBatch()
			if err != nil {
				b.Fatal(err)
			}
			n += len(cmds)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*16), "ns/cmd")
}

// BenchmarkRoute: table lookup, arity and access checks, the room-key check,
// and adding to the upstream batch, per command.
func BenchmarkRoute(b *testing.B) {
	srv := New(okUpstream{}, Config{Rooms: rooms.New(policy.DefaultRules(), nil, nil, nil)})
	s := &session{srv: srv, proto: 2, authed: true, batch: batch.New()}
	args := [][]byte{[]byte("SET"), []byte("key:000123"), []byte("xxx")}
	b.ReportAllocs()
	for b.Loop() {
		s.dispatch(args)
		if len(s.slots) == 256 {
			s.slots = s.slots[:0]
			s.batch.Reset(2)
		}
	}
}

// BenchmarkReply: writing 16 forwarded replies and a local one in order.
func BenchmarkReply(b *testing.B) {
	srv := New(okUpstream{}, Config{})
	c := &memConn{}
	s := &session{srv: srv, nc: c, proto: 2, authed: true, batch: batch.New(), wr: redcon.NewWriter(c)}
	args := [][]byte{[]byte("GET"), []byte("key:000123")}
	ping := [][]byte{[]byte("PING")}
	b.ReportAllocs()
	for b.Loop() {
		for range 16 {
			s.dispatch(args)
		}
		s.dispatch(ping)
		s.drain()
		s.wr.Flush()
		c.out.Reset()
	}
}

// BenchmarkSession: client pipelines of 16 commands through one session
// (read, route, upstream, reply). Reported per command.
func BenchmarkSession(b *testing.B) {
	data := pipelineBytes(16)
	srv := New(okUpstream{}, Config{})
	c := &loopConn{data: data, left: b.N, off: len(data)}
	b.ReportAllocs()
	b.ResetTimer()
	srv.accept(c)
	srv.wg.Wait()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*16), "ns/cmd")
}
