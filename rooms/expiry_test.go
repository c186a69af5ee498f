package rooms

import (
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/fallback"
)

// TestOwnTTLLeft: what a stored key's own expiry leaves for Redis at a given
// time: nothing for a key without one or with one no shorter than the
// room's, expired once it has passed, else the milliseconds left.
func TestOwnTTLLeft(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	room := time.Hour
	for _, c := range []struct {
		expireAt time.Time
		px       int64
		expired  bool
	}{
		{time.Time{}, 0, false},
		{now.Add(30 * time.Second), 30000, false},
		{now.Add(time.Hour), 0, false},     // no shorter than the room's
		{now.Add(2 * time.Hour), 0, false}, // longer: the room's
		{now, 0, true},
		{now.Add(-time.Millisecond), 0, true},
		{now.Add(time.Microsecond), 1, false}, // under a millisecond left: still 1
	} {
		px, expired := ownTTLLeft(c.expireAt, room, now)
		if px != c.px || expired != c.expired {
			t.Errorf("expiry %v: %d ms, expired %v; want %d, %v", c.expireAt.Sub(now), px, expired, c.px, c.expired)
		}
	}
}

// TestLoadCmdsExpiry: the scratch server of an outage gets a key's own TTL
// as what is left of it, and not a key whose TTL has run out.
func TestLoadCmdsExpiry(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	keys := map[string]fallback.Value{
		"room:a:lock": {Type: fallback.TypeString, String: []byte("p1"), ExpireAt: now.Add(1500 * time.Millisecond)},
		"room:a:gone": {Type: fallback.TypeString, String: []byte("x"), ExpireAt: now.Add(-time.Second)},
		"room:a:h":    {Type: fallback.TypeHash, Hash: map[string][]byte{"f": []byte("v")}},
	}
	var got []string
	cmds, size := loadCmds(keys, now)
	if want := len("room:a:h") + 2 + len("room:a:lock") + 2; size != want {
		t.Errorf("loaded size %d, want %d (the expired key not counted)", size, want)
	}
	for _, c := range cmds {
		got = append(got, string(joinArgs(c)))
	}
	want := []string{"FLUSHALL", "HSET room:a:h f v", "SET room:a:lock p1", "PEXPIRE room:a:lock 1500"}
	if len(got) != len(want) {
		t.Fatalf("loadCmds = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("loadCmds = %q, want %q", got, want)
		}
	}
}

// TestParseSnapshotExpiry: a key's own TTL in the snapshot becomes its
// expiry, to the millisecond; -1 (not the client's) leaves none.
func TestParseSnapshotExpiry(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	raw := "*8\r\n$11\r\nroom:a:lock\r\n$6\r\nstring\r\n$2\r\np1\r\n:30000\r\n" +
		"$6\r\nroom:a\r\n$6\r\nstring\r\n$2\r\n{}\r\n:-1\r\n"
	v, err := parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	keys := parseSnapshot(v, now)
	if got := keys["room:a:lock"].ExpireAt; !got.Equal(now.Add(30 * time.Second)) {
		t.Errorf("room:a:lock expires at %v, want %v", got, now.Add(30*time.Second))
	}
	if got := keys["room:a"].ExpireAt; !got.IsZero() {
		t.Errorf("room:a expires at %v, want no expiry of its own", got)
	}
}

// TestKeepExpiries: a key read back from the scratch server with the TTL it
// was loaded with keeps its stored expiry exactly; one whose TTL the
// command changed, or that has none, takes what was read back.
func TestKeepExpiries(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 30, 123e6, time.UTC)
	loaded := map[string]fallback.Value{
		"room:a:lock": {Type: fallback.TypeString, ExpireAt: at},
		"room:a:cd":   {Type: fallback.TypeString, ExpireAt: at},
		"room:a:h":    {Type: fallback.TypeHash},
	}
	keys := map[string]fallback.Value{
		"room:a:lock": {Type: fallback.TypeString, ExpireAt: at.Add(-time.Millisecond)}, // read back: 1 ms below
		"room:a:cd":   {Type: fallback.TypeString, ExpireAt: at.Add(-10 * time.Second)}, // EXPIRE changed it
		"room:a:h":    {Type: fallback.TypeHash, ExpireAt: at},                          // EXPIRE gave it one
		"room:a:new":  {Type: fallback.TypeString},
	}
	keepExpiries(keys, loaded)
	for name, want := range map[string]time.Time{
		"room:a:lock": at, "room:a:cd": at.Add(-10 * time.Second), "room:a:h": at, "room:a:new": {},
	} {
		if got := keys[name].ExpireAt; !got.Equal(want) {
			t.Errorf("%s expires at %v, want %v", name, got, want)
		}
	}
}
