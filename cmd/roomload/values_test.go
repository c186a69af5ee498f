package main

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

func TestAppendStateIsJSONOfAboutStateBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, players := range []int{0, 1, 4, 12} {
		v := appendState([]byte("junk"), "active", 41, 7, 1700000000000, players, rng)[4:]
		var doc struct {
			Status string
			Seq    int64
			Pos    [][2]int
		}
		if err := json.Unmarshal(v, &doc); err != nil {
			t.Fatalf("%d players: %v in %s", players, err, v)
		}
		if doc.Status != "active" || doc.Seq != 41 || len(doc.Pos) != players {
			t.Fatalf("%d players: got %+v", players, doc)
		}
		if players <= 4 && len(v) != stateBytes {
			t.Fatalf("%d players: %d bytes, want %d", players, len(v), stateBytes)
		}
	}
}

func TestAppendPlayer(t *testing.T) {
	v := appendPlayer(nil, "p3", 9, 120, true)
	if string(v) != `{"name":"p3","seq":9,"score":120,"ready":true}` {
		t.Fatalf("got %s", v)
	}
}

func TestCheckRead(t *testing.T) {
	tests := []struct {
		value string
		acked int64
		want  verdict
	}{
		{`{"status":"active","seq":5}`, 5, readFresh},
		{`{"status":"active","seq":6}`, 5, readFresh}, // a later write may already be visible
		{`{"status":"active","seq":4}`, 5, readStale},
		{`{"status":"waiting","seq":0}`, 1, readStale},
		{`{"seq":0}`, 0, readFresh},
		{`{"status":"active"}`, 0, readUnparsable},
		{`{"seq":"5"}`, 0, readUnparsable},
		{`{"seq":null}`, 0, readUnparsable},
		{`{"seq":5`, 0, readUnparsable},
		{``, 0, readUnparsable},
	}
	for _, tt := range tests {
		if _, got := checkRead([]byte(tt.value), tt.acked); got != tt.want {
			t.Errorf("checkRead(%s, %d) = %d, want %d", tt.value, tt.acked, got, tt.want)
		}
	}
}
