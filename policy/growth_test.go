package policy

import (
	"strings"
	"testing"

	"github.com/roomproxy/roomproxy/internal/testsupport"
)

var cmd = testsupport.Args

func TestWriteGrowth(t *testing.T) {
	cases := []struct {
		args  [][]byte
		g     Growth
		bound int
	}{
		{cmd("SET", "room:a:x", "v"), GrowthStrings, 0},
		{cmd("MSET", "room:a:x", "v", "room:a:y", "w"), GrowthStrings, 0},
		{cmd("HSET", "room:a:h", "f", "value"), GrowthBounded, 8 + 1 + 5 + numericSlack},
		{cmd("INCR", "room:a:n"), GrowthBounded, 8 + numericSlack},
		{cmd("SETRANGE", "room:a:s", "1000", "xy"), GrowthBounded, 8 + 1000 + 2},
		{cmd("SETRANGE", "room:a:s", "-1", "xy"), GrowthBounded, 8 + 2 + 2}, // refused by Redis
		{cmd("SETBIT", "room:a:b", "80000", "1"), GrowthBounded, 8 + 10001},
		{cmd("PFADD", "room:a:p", "m"), GrowthBounded, 8 + 1 + hllBytes},
		{cmd("DEL", "room:a:x"), GrowthNone, 0},
		{cmd("HDEL", "room:a:h", "f"), GrowthNone, 0},
		{cmd("LTRIM", "room:a:l", "0", "9"), GrowthNone, 0},
		{cmd("EXPIRE", "room:a:x", "10"), GrowthNone, 0},
		{cmd("COPY", "other", "room:a:x"), GrowthUnknown, 0},
		{cmd("SUNIONSTORE", "room:a:s", "x", "y"), GrowthUnknown, 0},
		{cmd("LMOVE", "room:a:l", "room:b:l", "LEFT", "RIGHT"), GrowthUnknown, 0},
	}
	for _, c := range cases {
		name := strings.ToLower(string(c.args[0]))
		g, bound := WriteGrowth(name, c.args)
		if g != c.g || bound != c.bound {
			t.Errorf("WriteGrowth(%q) = %v, %d; want %v, %d", c.args, g, bound, c.g, c.bound)
		}
	}
	// A huge SETRANGE offset saturates instead of overflowing.
	if _, b := WriteGrowth("setrange", cmd("SETRANGE", "k", "9223372036854775807", "x")); b != 1<<40+2 {
		t.Errorf("SETRANGE at the largest offset: bound %d", b)
	}
}

func TestStringWrites(t *testing.T) {
	cases := []struct {
		args [][]byte
		want string // key=value, c marks a conditional write
		ok   bool
	}{
		{cmd("SET", "k", "v"), "k=v", true},
		{cmd("SET", "k", "v", "EX", "10"), "k=v", true},
		{cmd("SET", "k", "v", "nx"), "k=v c", true},
		{cmd("SET", "k", "v", "XX", "GET"), "k=v c", true},
		{cmd("SETNX", "k", "v"), "k=v c", true},
		{cmd("GETSET", "k", "v"), "k=v", true},
		{cmd("SETEX", "k", "10", "v"), "k=v", true},
		{cmd("PSETEX", "k", "10", "v"), "k=v", true},
		{cmd("MSET", "a", "1", "b", "2"), "a=1 b=2", true},
		{cmd("MSETNX", "a", "1"), "a=1 c", true},
		{cmd("MSET", "a", "1", "b"), "", false},
		{cmd("SET", "k"), "", false},
		{cmd("SETEX", "k", "v"), "", false},
	}
	for _, c := range cases {
		ws, ok := StringWrites(nil, strings.ToLower(string(c.args[0])), c.args)
		var parts []string
		for _, w := range ws {
			p := string(w.Key) + "=" + string(w.Value)
			if w.Conditional {
				p += " c"
			}
			parts = append(parts, p)
		}
		if got := strings.Join(parts, " "); ok != c.ok || got != c.want {
			t.Errorf("StringWrites(%q) = %q, %v; want %q, %v", c.args, got, ok, c.want, c.ok)
		}
	}
}
