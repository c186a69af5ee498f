package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/internal/testredis"
)

// smallRun is a short workload with few rooms against addr.
func smallRun(t *testing.T, addr string, extra ...string) *runner {
	t.Helper()
	args := append([]string{"-addr", addr, "-rooms", "6", "-writes", "20", "-duration", "2s",
		"-readers", "2", "-reads", "10", "-players", "3", "-complete", "0.5", "-settle", "50ms", "-conns", "4"}, extra...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(t.Context(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

func runOK(t *testing.T, r *runner) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rep, err := r.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Reads.Stale != 0 || rep.Final.Lost() != 0 {
		t.Fatalf("run failed: %v\nfinal %+v\nreads %+v\nerrors %v", rep.Failures, rep.Final, rep.Reads, rep.Errors)
	}
	if len(rep.Errors) != 0 || rep.Client.WriteErrors != 0 || rep.Reads.Errors != 0 {
		t.Fatalf("errors against redis-server: %v", rep.Errors)
	}
	if rep.Reads.Checked == 0 {
		t.Fatal("no read was checked")
	}
	return rep
}

// Against redis-server itself: nothing stale or lost, and every client
// command is exactly one upstream command.
func TestDirectAgainstRedisServer(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	r := smallRun(t, "redis://"+srv.Addr)
	rep := runOK(t, r)
	if !rep.Direct {
		t.Fatal("not in direct mode")
	}
	if !maps.Equal(rep.Upstream.Commands, rep.Client.Commands) || rep.Upstream.Total != rep.Client.Total {
		t.Fatalf("upstream commandstats %v (total %d), client commands %v (total %d): want them equal",
			rep.Upstream.Commands, rep.Upstream.Total, rep.Client.Commands, rep.Client.Total)
	}
	if rep.Ratio.Overall != 1 || rep.Ratio.Writes != 1 {
		t.Fatalf("ratios %+v, want 1 and 1", rep.Ratio)
	}
	if rep.Final.Completed != 3 || rep.Final.Active != 3 || rep.Final.Unchecked != 0 {
		t.Fatalf("final %+v, want 3 completed and 3 active rooms checked", rep.Final)
	}
	if rep.Client.Flushes != 0 {
		t.Fatalf("redis-server has no ROOM.FLUSH, yet %d rooms were flushed", rep.Client.Flushes)
	}
	if want := int64(6 * 2); rep.Client.LifecycleWrites != want+3 {
		t.Fatalf("lifecycle writes %d, want %d (create and start of 6 rooms, 3 completions)", rep.Client.LifecycleWrites, want+3)
	}

	// The checks notice a lost state: a deleted state key, a player entry
	// gone back, and reads that see less than was acknowledged.
	ctx := t.Context()
	var active []*room
	for _, rm := range r.rooms {
		if rm.ackedStatus == "active" {
			active = append(active, rm)
		}
	}
	if err := r.endpoint.Del(ctx, active[0].key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.endpoint.HSet(ctx, active[1].playersKey, "p1", `{"seq":-1}`).Err(); err != nil {
		t.Fatal(err)
	}
	f := r.checkFinal(ctx)
	if f.LostEndpoint != 1 || f.PlayersLost != 1 || f.Lost() != 2 || len(f.Examples) != 2 {
		t.Fatalf("after tampering: %+v, want one lost state key and one lost players hash", f)
	}
	rm := active[2]
	rm.ackSeq.Store(rm.seq + 100)
	for p := range rm.ackPlayer {
		rm.ackPlayer[p].Store(rm.playerSeq[p] + 100)
	}
	stale := r.st.stale.Load()
	for range 3 {
		r.read(ctx, rm, rm.rng)
	}
	if got := r.st.stale.Load() - stale; got != 3 {
		t.Fatalf("%d of 3 reads older than the acknowledged seq counted stale", got)
	}
}

// With -upstream naming the server another way, the run is checked as
// through a proxy: active rooms are read from the upstream too, and
// completed rooms must be gone from it, which redis-server (no lifecycle)
// does not do.
func TestUpstreamChecksWithoutAProxy(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	r := smallRun(t, "redis://"+srv.Addr, "-upstream", "redis://localhost:"+strconv.Itoa(srv.Port), "-duration", "1s")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rep, err := r.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Direct {
		t.Fatal("direct mode with a differently named upstream")
	}
	f := rep.Final
	if f.Active != 3 || f.LostEndpoint != 0 || f.LostUpstream != 0 || f.PlayersLost != 0 {
		t.Fatalf("active rooms: %+v, want 3 checked and none lost", f)
	}
	if f.Completed != 3 || f.CompletedLost != 3 || f.CompletedLeft != 3 || rep.OK {
		t.Fatalf("completed rooms: %+v ok %v, want all 3 still in the upstream and a failed run", f, rep.OK)
	}
	if !maps.Equal(rep.Upstream.Commands, rep.Client.Commands) {
		t.Fatalf("upstream commandstats %v, client commands %v: want them equal", rep.Upstream.Commands, rep.Client.Commands)
	}
}

// Cancelling the context (ctrl-c) ends the load at once and gives a report
// marked interrupted, which is not OK.
func TestInterruptedRun(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	r := smallRun(t, "redis://"+srv.Addr, "-duration", "10m")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		for r.st.cmds[cmdSet].Load() < 20 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	rep, err := r.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || rep.OK || rep.Client.Total == 0 {
		t.Fatalf("interrupted %v ok %v commands %d, want an interrupted, failed report with commands", rep.Interrupted, rep.OK, rep.Client.Total)
	}
}

func TestMainJSONAndExitStatus(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{})
	var out, errOut strings.Builder
	code := realMain([]string{"-addr", srv.Addr, "-rooms", "2", "-duration", "500ms", "-settle", "0s", "-readers", "1", "-json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s, stdout %s", code, errOut.String(), out.String())
	}
	var rep Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, out.String())
	}
	if !rep.OK || !rep.Direct || rep.Rooms != 2 || rep.Client.Total != rep.Upstream.Total {
		t.Fatalf("report %+v", rep)
	}
	if code := realMain([]string{"-rooms", "0"}, &out, io.Discard); code != 2 {
		t.Fatalf("bad flag: exit %d, want 2", code)
	}
	if code := realMain([]string{"-addr", "127.0.0.1:1", "-timeout", "1s"}, &out, io.Discard); code != 2 {
		t.Fatalf("nothing listening: exit %d, want 2", code)
	}
}
