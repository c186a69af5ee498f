package proxy

import (
	"testing"
)

// The memo must answer exactly what Table.lookup answers, whatever the case,
// the order and the number of distinct names a session sends.
func TestSpecMemo(t *testing.T) {
	tab := NewTable()
	var m specMemo
	names := []string{"GET", "get", "Get", "SET", "hset", "HGETALL", "ping", "MULTI", "exec",
		"GET", "nosuchcommand", "", "CLIENT", "averyveryverylongname", "xautoclaim", "XAUTOCLAIM", "get"}
	for round := range 3 {
		for _, n := range names {
			want := tab.lookup([]byte(n))
			if got := m.lookup(tab, []byte(n)); got != want {
				t.Fatalf("round %d: memo lookup %q = %v, table says %v", round, n, got, want)
			}
		}
	}
	if m.lookup(tab, []byte("GET")) == nil || m.lookup(tab, []byte("nosuchcommand")) != nil {
		t.Fatal("memo: GET unknown or nosuchcommand known")
	}
	// A remembered name must not match a prefix or an extension of itself.
	m.lookup(tab, []byte("SET"))
	for _, n := range []string{"SE", "SETX", "SETNX", "SETEX"} {
		if got, want := m.lookup(tab, []byte(n)), tab.lookup([]byte(n)); got != want {
			t.Fatalf("memo lookup %q = %v after SET, table says %v", n, got, want)
		}
	}
	// Lookups of remembered names do not allocate.
	if a := testing.AllocsPerRun(100, func() { m.lookup(tab, []byte("SETEX")) }); a != 0 {
		t.Fatalf("memo lookup allocates %v times", a)
	}
}

func BenchmarkLookup(b *testing.B) {
	tab := NewTable()
	name := []byte("GET")
	b.Run("table", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tab.lookup(name)
		}
	})
	b.Run("memo", func(b *testing.B) {
		var m specMemo
		b.ReportAllocs()
		for b.Loop() {
			m.lookup(tab, name)
		}
	})
}
