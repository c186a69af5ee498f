package main

import (
	"maps"
	"strings"
	"testing"
)

// From redis-server 7.0.15, with CRLF line ends as INFO sends them.
const commandStatsSample = "# Commandstats\r\n" +
	"cmdstat_hset:calls=3688,usec=6570,usec_per_call=1.78,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_set:calls=9202,usec=13344,usec_per_call=1.45,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_client|setinfo:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_info:calls=2,usec=142,usec_per_call=71.00,rejected_calls=0,failed_calls=0\r\n" +
	"cmdstat_EVALSHA:calls=5,usec=10,usec_per_call=2.00,rejected_calls=1,failed_calls=0\r\n"

func TestParseCommandStats(t *testing.T) {
	got, err := parseCommandStats(commandStatsSample)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"hset": 3688, "set": 9202, "client|setinfo": 2, "info": 2, "evalsha": 5}
	if !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got, err := parseCommandStats("# Commandstats\r\n"); err != nil || len(got) != 0 {
		t.Fatalf("no commands yet: got %v, %v", got, err)
	}
}

func TestParseCommandStatsRejectsUnreadableLines(t *testing.T) {
	for _, line := range []string{
		"cmdstat_set",
		"cmdstat_set:usec=1",
		"cmdstat_set:calls=x,usec=1",
		"cmdstat_set:calls=-1",
		"cmdstat_:calls=1",
	} {
		if _, err := parseCommandStats(line + "\r\n"); err == nil {
			t.Errorf("%q: no error", line)
		}
	}
}

func TestCommandDeltas(t *testing.T) {
	before := map[string]int64{"set": 10, "get": 5, "info": 1, "ping": 3}
	after := map[string]int64{"set": 25, "get": 5, "info": 4, "ping": 3, "hset": 7}
	got, err := commandDeltas(before, after)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{"set": 15, "hset": 7}; !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v (info left out, unchanged commands left out)", got, want)
	}
	if n := sumCommands(got, upstreamWriteCommands); n != 22 {
		t.Fatalf("writes %d, want 22", n)
	}
	if _, err := commandDeltas(before, map[string]int64{"set": 9, "get": 5, "ping": 3}); err == nil || !strings.Contains(err.Error(), "backwards") {
		t.Fatalf("counter went down: err %v", err)
	}
	if _, err := commandDeltas(before, map[string]int64{"set": 10, "info": 2}); err == nil {
		t.Fatal("counters lost (reset): no error")
	}
}
