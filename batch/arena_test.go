package batch

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// The arena is what go-redis's RawWriteToCmd writes replies into: lines with
// Write, bulk bodies with io.CopyN (ReadFrom with a LimitedReader), and any
// other reader through ReadFrom until EOF.
func TestArena(t *testing.T) {
	var a Arena
	a.Write([]byte("$5\r\n"))
	if n, err := io.CopyN(&a, strings.NewReader("hello\r\nrest"), 7); n != 7 || err != nil {
		t.Fatalf("CopyN = %d, %v", n, err)
	}
	first := a.Len()
	a.Write([]byte("+OK\r\n"))
	if n, err := a.ReadFrom(strings.NewReader(strings.Repeat("x", 100000))); n != 100000 || err != nil {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if got := string(a.Slice(0, first)); got != "$5\r\nhello\r\n" {
		t.Fatalf("first reply %q", got)
	}
	if got := string(a.Slice(first, first+5)); got != "+OK\r\n" {
		t.Fatalf("second reply %q", got)
	}
	// A slice handed out has no spare capacity: appending to it copies.
	s := a.Slice(0, first)
	_ = append(s, '!')
	if a.buf[first] != '+' {
		t.Fatal("append to a reply overwrote the next one")
	}
	// A body cut short by the connection ending is an error, not a reply.
	var b Arena
	if n, err := io.CopyN(&b, strings.NewReader("hel"), 7); n != 3 || err == nil {
		t.Fatalf("short CopyN = %d, %v", n, err)
	}
	// Reset keeps small storage and drops large storage.
	bt := New()
	bt.Arena.Write(bytes.Repeat([]byte("y"), 100))
	bt.Reset(2)
	if bt.Arena.Len() != 0 || cap(bt.Arena.buf) == 0 {
		t.Fatalf("small arena after Reset: len %d cap %d", bt.Arena.Len(), cap(bt.Arena.buf))
	}
	bt.Arena.Write(bytes.Repeat([]byte("y"), arenaKeep+1))
	bt.Reset(2)
	if bt.Arena.buf != nil {
		t.Fatal("huge arena kept after Reset")
	}
	// Filling a reused arena does not allocate.
	bt.Arena.Write(make([]byte, 1000))
	bt.Reset(2)
	body := strings.NewReader("")
	if allocs := testing.AllocsPerRun(100, func() {
		bt.Arena.Reset()
		bt.Arena.Write([]byte("$3\r\n"))
		body.Reset("xxx\r\n")
		bt.Arena.ReadFrom(&io.LimitedReader{R: body, N: 5})
	}); allocs > 1 { // the LimitedReader itself escapes
		t.Fatalf("%v allocations per reply", allocs)
	}
}
