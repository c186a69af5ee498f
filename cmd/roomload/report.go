package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Report is the result of a run; -json prints it as is.
type Report struct {
	Endpoint    string  `json:"endpoint"`
	UpstreamURL string  `json:"upstream"`
	Direct      bool    `json:"direct"` // the endpoint is the upstream itself
	RunID       string  `json:"run_id"`
	Rooms       int     `json:"rooms"`
	Players     int     `json:"players"`
	Readers     int     `json:"readers"`
	WritesPerS  float64 `json:"writes_per_room_per_s"`
	ReadsPerS   float64 `json:"reads_per_room_per_s"`
	DurationS   float64 `json:"duration_s"` // the load, from the first write to the last completion
	Interrupted bool    `json:"interrupted,omitempty"`

	Client   ClientReport     `json:"client"`
	Latency  LatencyReport    `json:"latency_ms"`
	Upstream UpstreamReport   `json:"upstream_commands"`
	Ratio    RatioReport      `json:"ratio"`
	Reads    ReadReport       `json:"reads"`
	Final    FinalReport      `json:"final"`
	Errors   map[string]int64 `json:"errors"` // error replies and client errors by text (truncated)

	Failures []string `json:"failures"`
	OK       bool     `json:"ok"`
}

// ClientReport counts the workload's commands. The final checks (GET,
// HGETALL, EXISTS) and ROOM.FLUSH are not in it.
type ClientReport struct {
	Commands        map[string]int64 `json:"commands"` // by lower-case name
	Total           int64            `json:"total"`
	PerS            float64          `json:"per_s"`
	StateWrites     int64            `json:"state_writes"`     // SET/HSET keeping the room's state (joins included)
	LifecycleWrites int64            `json:"lifecycle_writes"` // create, start, complete
	WriteErrors     int64            `json:"write_errors"`
	Flushes         int64            `json:"room_flush"` // ROOM.FLUSH sent before the checks (0: the endpoint has none)
}

// Percentiles of one histogram, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

func percentiles(h *histogram) Percentiles {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	return Percentiles{Count: h.Count(), Mean: ms(h.Mean()), P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)),
		P99: ms(h.Quantile(0.99)), Max: ms(h.Max())}
}

// LatencyReport has the client-side latency of each kind of command.
type LatencyReport struct {
	StateWrites     Percentiles `json:"state_writes"`
	LifecycleWrites Percentiles `json:"lifecycle_writes"`
	Reads           Percentiles `json:"reads"`
}

// UpstreamReport is the upstream's INFO commandstats delta over the run,
// without INFO.
type UpstreamReport struct {
	Commands map[string]int64 `json:"commands"`
	Total    int64            `json:"total"`
	Writes   int64            `json:"writes"` // set/hset family (upstreamWriteCommands)
	// From MONITOR: commands clients sent the upstream (what a hosted Redis
	// bills per request), by name; commands scripts ran inside those calls,
	// which commandstats counts too; and the sent commands that are not reads.
	Sent       map[string]int64 `json:"sent"`
	SentTotal  int64            `json:"sent_total"`
	SentWrites int64            `json:"sent_writes"`
	InScripts  int64            `json:"in_scripts"`
	// BytesIn: bytes the upstream received over the run (INFO stats
	// total_net_input_bytes; bandwidth a hosted Redis may bill too).
	BytesIn int64 `json:"bytes_in"`
}

// RatioReport: upstream commands per client command (lower is better for a
// debouncing proxy; 1 when direct).
type RatioReport struct {
	Overall float64 `json:"overall"`
	Writes  float64 `json:"writes"` // upstream set/hset family per client SET+HSET
	// Sent: commands sent upstream (MONITOR, scripts' inner calls not
	// counted) per client command; SentWrites: sent commands that are not
	// reads per client SET+HSET (state and lifecycle writes).
	Sent       float64 `json:"sent"`
	SentWrites float64 `json:"sent_writes"`
}

// ReadReport counts the reads and what they showed.
type ReadReport struct {
	Checked    int64 `json:"checked"` // answered with a value and judged
	Stale      int64 `json:"stale"`
	Nil        int64 `json:"nil"` // no value for a key with an acknowledged write: stale too
	Unparsable int64 `json:"unparsable"`
	Errors     int64 `json:"errors"`
	Skipped    int64 `json:"skipped"` // rooms not created yet or with a write of unknown outcome
}

// FinalReport is the check after the run has settled.
type FinalReport struct {
	Active          int      `json:"active"`             // rooms checked as active (or waiting)
	LostEndpoint    int      `json:"lost_endpoint"`      // GET room:<id> through the endpoint is not the last acknowledged value
	LostUpstream    int      `json:"lost_upstream"`      // same, read from the upstream directly (not in direct mode)
	PlayersLost     int      `json:"players_lost"`       // players hash differs from the acknowledged entries (endpoint or upstream)
	Completed       int      `json:"completed"`          // rooms checked as completed
	CompletedLost   int      `json:"completed_lost"`     // completed room still in the upstream (direct: not the final value)
	CompletedLeft   int      `json:"completed_leftover"` // completed room whose players hash is still in the upstream (reported, not a failure)
	Unchecked       int      `json:"unchecked"`          // rooms never created, or with a write of unknown outcome
	MongoChecked    bool     `json:"mongo_checked"`
	MongoLost       int      `json:"mongo_completed_lost"` // completed room missing, not completed, or not the final value in MongoDB
	MongoActiveSame int      `json:"mongo_active_current"` // active rooms whose MongoDB value is the last acknowledged one (reported only)
	MongoErrors     int      `json:"mongo_errors"`
	Examples        []string `json:"examples,omitempty"` // the first few differences
}

// Lost is every lost final state (a failure).
func (f FinalReport) Lost() int {
	return f.LostEndpoint + f.LostUpstream + f.PlayersLost + f.CompletedLost + f.MongoLost
}

func (r *Report) judge() {
	r.Failures = nil
	if n := r.Reads.Stale; n > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d stale reads", n))
	}
	if n := r.Reads.Nil; n > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d nil reads of keys with an acknowledged write", n))
	}
	if n := r.Reads.Unparsable; n > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d unparsable reads", n))
	}
	if n := r.Final.Lost(); n > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d lost final states", n))
	}
	if r.Interrupted {
		r.Failures = append(r.Failures, "interrupted before the final checks")
	}
	r.OK = len(r.Failures) == 0
}

// writeText prints the report for people.
func (r *Report) writeText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	mode := "through a proxy; upstream " + r.UpstreamURL
	if r.Direct {
		mode = "direct (the endpoint is the upstream)"
	}
	p("roomload %s: %d rooms x %g writes/s, %g reads/s per room over %d readers, %d players",
		r.RunID, r.Rooms, r.WritesPerS, r.ReadsPerS, r.Readers, r.Players)
	p("endpoint %s, %s", r.Endpoint, mode)
	p("load ran %.2fs%s", r.DurationS, map[bool]string{true: " (INTERRUPTED)", false: ""}[r.Interrupted])
	p("")
	p("client commands     %8d  %8.0f/s  (state writes %d, lifecycle writes %d, write errors %d)",
		r.Client.Total, r.Client.PerS, r.Client.StateWrites, r.Client.LifecycleWrites, r.Client.WriteErrors)
	for _, name := range sortedByCount(r.Client.Commands) {
		p("  %-17s %8d", name, r.Client.Commands[name])
	}
	p("upstream commands   %8d            (INFO commandstats delta without info)", r.Upstream.Total)
	for _, name := range sortedByCount(r.Upstream.Commands) {
		p("  %-17s %8d", name, r.Upstream.Commands[name])
	}
	p("upstream/client     %8.3f overall, %.3f for writes (upstream set/hset family %d per client SET+HSET %d)",
		r.Ratio.Overall, r.Ratio.Writes, r.Upstream.Writes, r.Client.Commands["set"]+r.Client.Commands["hset"])
	p("sent upstream       %8d            (MONITOR: commands sent, billed per request; %d more ran inside scripts)", r.Upstream.SentTotal, r.Upstream.InScripts)
	for _, name := range sortedByCount(r.Upstream.Sent) {
		p("  %-17s %8d", name, r.Upstream.Sent[name])
	}
	p("bytes received      %8d            (INFO stats total_net_input_bytes delta)", r.Upstream.BytesIn)
	p("sent/client         %8.3f overall, %.3f for writes (%d non-read commands sent per client SET+HSET %d)",
		r.Ratio.Sent, r.Ratio.SentWrites, r.Upstream.SentWrites, r.Client.Commands["set"]+r.Client.Commands["hset"])
	p("")
	p("latency ms          %8s %8s %8s %8s %8s %8s", "count", "mean", "p50", "p90", "p99", "max")
	for _, row := range []struct {
		name string
		pc   Percentiles
	}{{"state writes", r.Latency.StateWrites}, {"lifecycle writes", r.Latency.LifecycleWrites}, {"reads", r.Latency.Reads}} {
		p("  %-17s %8d %8.3f %8.3f %8.3f %8.3f %8.3f", row.name, row.pc.Count, row.pc.Mean, row.pc.P50, row.pc.P90, row.pc.P99, row.pc.Max)
	}
	p("")
	p("reads               %d checked, %d stale, %d nil, %d unparsable, %d errors, %d skipped",
		r.Reads.Checked, r.Reads.Stale, r.Reads.Nil, r.Reads.Unparsable, r.Reads.Errors, r.Reads.Skipped)
	f := r.Final
	p("final, active       %d rooms: %d lost at the endpoint, %d lost upstream, %d with players lost",
		f.Active, f.LostEndpoint, f.LostUpstream, f.PlayersLost)
	p("final, completed    %d rooms: %d lost, %d with a players hash left upstream; %d rooms unchecked",
		f.Completed, f.CompletedLost, f.CompletedLeft, f.Unchecked)
	if f.MongoChecked {
		p("final, MongoDB      %d of %d completed rooms lost; %d of %d active rooms current (report only); %d errors",
			f.MongoLost, f.Completed, f.MongoActiveSame, f.Active, f.MongoErrors)
	}
	if r.Client.Flushes > 0 {
		p("                    (ROOM.FLUSH sent to %d rooms before the checks)", r.Client.Flushes)
	}
	for _, e := range f.Examples {
		p("  %s", e)
	}
	if len(r.Errors) > 0 {
		p("errors")
		for _, text := range sortedByCount(r.Errors) {
			p("  %8d  %s", r.Errors[text], text)
		}
	}
	p("")
	if r.OK {
		p("result              OK")
	} else {
		p("result              FAIL: %s", strings.Join(r.Failures, "; "))
	}
}
