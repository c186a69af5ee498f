package policy

import (
	"strings"
	"testing"
	"time"
)

func TestStateFromJSON(t *testing.T) {
	r := DefaultRules()
	huge := `{"players":[` + strings.Repeat(`{"id":"p","score":1},`, 60000) + `{}],"status":"active"}`
	cases := []struct {
		doc   string
		state State
		ok    bool
	}{
		{`{"status":"waiting"}`, Waiting, true},
		{`{"status":"active","round":3}`, Active, true},
		{`{"round":3,"status":"completed"}`, Completed, true},
		{`{"status":"PLAYING"}`, Active, true},
		{`{"status":" in_progress "}`, Active, true},
		{`{"status":"finished"}`, Completed, true},
		{`{"status":"ended"}`, Completed, true},
		{`{"status":"closed"}`, Completed, true},
		{`{"status":"weird"}`, Waiting, false},
		{`{"status":3}`, Waiting, false},
		{`{"status":null}`, Waiting, false},
		{`{"nested":{"status":"active"}}`, Waiting, false}, // only the top level counts
		{`{"round":3}`, Waiting, false},
		{`not json`, Waiting, false},
		{`{"status":"active"`, Active, true}, // status read before the truncation
		{`{"a":[1,2,`, Waiting, false},
		{`["status","active"]`, Waiting, false},
		{`"active"`, Waiting, false},
		{``, Waiting, false},
		{huge, Waiting, false}, // over ROOM_MAX_BYTES: not read
	}
	for _, c := range cases {
		s, ok := r.StateFromJSON([]byte(c.doc))
		if s != c.state || ok != c.ok {
			t.Errorf("StateFromJSON(%.60q) = %v, %v; want %v, %v", c.doc, s, ok, c.state, c.ok)
		}
	}
	r.MaxBytes = 4 << 20
	if s, ok := r.StateFromJSON([]byte(huge)); s != Active || !ok {
		t.Errorf("a large document within the limit: %v %v", s, ok)
	}
	r.StatusField = "phase"
	if s, ok := r.StateFromJSON([]byte(`{"status":"active","phase":"ended"}`)); s != Completed || !ok {
		t.Errorf("custom status field: %v %v", s, ok)
	}
}

func TestTTLRules(t *testing.T) {
	r := DefaultRules()
	for _, c := range []struct {
		s    State
		ttl  time.Duration
		keep bool
	}{{Waiting, 1800 * time.Second, true}, {Active, 3600 * time.Second, true}, {Completed, 0, false}} {
		if ttl, keep := r.TTL(c.s); ttl != c.ttl || keep != c.keep {
			t.Errorf("TTL(%v) = %v %v", c.s, ttl, keep)
		}
	}
	if got := r.ClientTTL(Active, 10*time.Second); got != 10*time.Second {
		t.Errorf("a shorter client TTL is honoured: %v", got)
	}
	if got := r.ClientTTL(Waiting, 5*time.Hour); got != 1800*time.Second {
		t.Errorf("a longer client TTL is capped: %v", got)
	}
	if got := r.ClientTTL(Active, 0); got != 3600*time.Second {
		t.Errorf("no client TTL: %v", got)
	}
	if got := r.ClientTTL(Completed, 10*time.Second); got != 0 {
		t.Errorf("completed: %v", got)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		existed       bool
		before, after State
		deleting      bool
		want          WriteClass
	}{
		{false, Waiting, Waiting, false, LifecycleWrite}, // creates the room
		{true, Waiting, Active, false, LifecycleWrite},
		{true, Active, Completed, false, LifecycleWrite},
		{true, Active, Active, true, LifecycleWrite}, // deletes it
		{true, Active, Active, false, StateWrite},
		{true, Waiting, Waiting, false, StateWrite},
	}
	for _, c := range cases {
		if got := Classify(c.existed, c.before, c.after, c.deleting); got != c.want {
			t.Errorf("Classify(%v, %v, %v, %v) = %v", c.existed, c.before, c.after, c.deleting, got)
		}
	}
}

func TestRefreshDue(t *testing.T) {
	r := DefaultRules()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		s    State
		last time.Time
		want bool
	}{
		{Active, time.Time{}, true},
		{Active, now.Add(-59 * time.Second), false},
		{Active, now.Add(-60 * time.Second), true},
		{Waiting, time.Time{}, false}, // waiting rooms get their TTL on writes, not on reads
		{Completed, time.Time{}, false},
	}
	for _, c := range cases {
		if got := r.RefreshDue(c.s, c.last, now); got != c.want {
			t.Errorf("RefreshDue(%v, %v) = %v", c.s, c.last, got)
		}
	}
}

func FuzzStateFromJSON(f *testing.F) {
	f.Add([]byte(`{"status":"active"}`))
	f.Add([]byte(`{"a":{"b":[1,{"status":"x"}]},"status":"ended"}`))
	r := DefaultRules()
	f.Fuzz(func(t *testing.T, doc []byte) {
		s, ok := r.StateFromJSON(doc)
		if !ok && s != Waiting {
			t.Fatalf("unreadable status must be waiting, got %v", s)
		}
	})
}
