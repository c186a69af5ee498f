package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/roomproxy/roomproxy/fallback"
)

func TestDiffPlayers(t *testing.T) {
	names := []string{"p1", "p2", "p3"}
	acked := [][]byte{[]byte(`{"seq":3}`), nil, []byte(`{"seq":1}`)} // p2 never joined
	tests := []struct {
		got  map[string]string
		err  error
		want string // substring of the difference; "" for none
	}{
		{map[string]string{"p1": `{"seq":3}`, "p3": `{"seq":1}`}, nil, ""},
		{map[string]string{"p1": `{"seq":2}`, "p3": `{"seq":1}`}, nil, "p1 is seq 2"},
		{map[string]string{"p3": `{"seq":1}`}, nil, "p1 missing"},
		{map[string]string{"p1": `{"seq":3}`, "p2": `{"seq":0}`, "p3": `{"seq":1}`}, nil, "3 fields, want 2"},
		{nil, errors.New("boom"), "error: client: boom"},
	}
	for _, tt := range tests {
		got := diffPlayers(tt.got, tt.err, names, acked)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("diffPlayers(%v, %v) = %q, want %q", tt.got, tt.err, got, tt.want)
		}
	}
}

func TestMongoHas(t *testing.T) {
	final := []byte(`{"status":"completed","seq":9}`)
	doc := func(status string, v []byte) fallback.Room {
		return fallback.Room{ID: "r1", Status: status, Keys: map[string]fallback.Value{
			"room:r1":         {Type: fallback.TypeString, String: v},
			"room:r1:players": {Type: fallback.TypeHash},
		}}
	}
	tests := []struct {
		name      string
		stored    fallback.Room
		found     bool
		completed bool
		want      bool
	}{
		{"completed and final", doc("completed", final), true, true, true},
		{"not stored", fallback.Room{}, false, true, false},
		{"still active", doc("active", final), true, true, false},
		{"older value", doc("completed", []byte(`{"seq":8}`)), true, true, false},
		{"active with the value", doc("active", final), true, false, true},
		{"no state key", fallback.Room{ID: "r1", Status: "completed"}, true, true, false},
	}
	for _, tt := range tests {
		if got, why := mongoHas(tt.stored, tt.found, "room:r1", final, tt.completed); got != tt.want {
			t.Errorf("%s: got %v (%s), want %v", tt.name, got, why, tt.want)
		}
	}
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "redis://127.0.0.1:6380" || cfg.Rooms != 200 || cfg.Writes != 20 || cfg.Readers != 8 ||
		cfg.Reads != 5 || cfg.Players != 4 || cfg.Complete != 0.25 || cfg.Prefix != "room:" || cfg.MongoDB != "roomproxy" {
		t.Fatalf("defaults: %+v", cfg)
	}
	for _, args := range [][]string{
		{"-rooms", "0"}, {"-writes", "-1"}, {"-complete", "1.5"}, {"-complete", "NaN"},
		{"-duration", "0s"}, {"-conns", "0"}, {"-prefix", ""}, {"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestSameServer(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"redis://127.0.0.1:6379", "127.0.0.1:6379", true},
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379", true},
		{"redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379", false},
		{"redis://127.0.0.1:6380", "redis://127.0.0.1:6379", false},
	} {
		if got, err := sameServer(tt.a, tt.b); err != nil || got != tt.want {
			t.Errorf("sameServer(%s, %s) = %v, %v", tt.a, tt.b, got, err)
		}
	}
}
