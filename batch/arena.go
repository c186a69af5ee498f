package batch

import (
	"io"

	"github.com/roomproxy/roomproxy/internal/race"
)

// Arena holds a batch's raw replies back to back, as the upstream's reader
// streams them in (go-redis's RawWriteToCmd): one buffer the batch keeps
// between its round trips, instead of a fresh allocation for every reply.
// Reply.Raw slices point into it and stay valid until the batch's next Reset.
type Arena struct {
	buf []byte
}

// arenaKeep is the largest buffer Reset keeps for reuse; a batch that once
// carried huge replies gives the memory back.
const arenaKeep = 64 << 10

// Write appends p.
func (a *Arena) Write(p []byte) (int, error) {
	a.buf = append(a.buf, p...)
	return len(p), nil
}

// ReadFrom appends everything r yields until EOF. go-redis copies a bulk
// string's bytes with io.CopyN, which calls ReadFrom with an
// io.LimitedReader: its length is known, so the room is made once and the
// bytes are read straight into the buffer (io.Copy would allocate a buffer
// of its own for every reply).
func (a *Arena) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok && lr.N > 0 && lr.N <= 1<<30 {
		start := len(a.buf)
		a.buf = append(a.buf, make([]byte, int(lr.N))...)
		n, err := io.ReadFull(lr, a.buf[start:])
		a.buf = a.buf[:start+n]
		return int64(n), err // a short read is the connection ending early
	}
	var total int64
	for {
		if len(a.buf) == cap(a.buf) {
			a.buf = append(a.buf, 0)[:len(a.buf)]
		}
		n, err := r.Read(a.buf[len(a.buf):cap(a.buf)])
		a.buf = a.buf[:len(a.buf)+n]
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Len is the number of bytes written since the last reset.
func (a *Arena) Len() int { return len(a.buf) }

// Slice returns bytes [from, to) of the arena, with no spare capacity (an
// append by a caller copies instead of overwriting the next reply).
func (a *Arena) Slice(from, to int) []byte { return a.buf[from:to:to] }

// Reset empties the arena, for the batch's next round trip or for a retry of
// the one that was filling it. Under the race detector (every test run) the
// old bytes are overwritten first, so that a reply used after it shows up as
// garbage in a test instead of passing by luck.
func (a *Arena) Reset() {
	if race.Enabled {
		for i := range a.buf {
			a.buf[i] = '~'
		}
	}
	if cap(a.buf) > arenaKeep {
		a.buf = nil
		return
	}
	a.buf = a.buf[:0]
}
