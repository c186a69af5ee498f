package rooms

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/roomproxy/roomproxy/batch"
)

// TestScriptExec: round trips of room script calls go as EVALSHA; calls the
// server answers NOSCRIPT are sent again as EVAL, in order; round trips with
// any other command go as they are.
func TestScriptExec(t *testing.T) {
	var sent []string
	cached := false // the server's script cache
	exec := func(_ context.Context, cmds [][][]byte) []batch.Reply {
		out := make([]batch.Reply, len(cmds))
		for i, c := range cmds {
			sent = append(sent, string(c[0])+" "+string(c[1][:min(len(c[1]), 8)])+" "+string(c[len(c)-1]))
			switch {
			case string(c[0]) == "EVALSHA" && !cached:
				out[i] = batch.Reply{Raw: []byte("-NOSCRIPT No matching script. Please use EVAL.\r\n")}
			default:
				out[i] = batch.Reply{Raw: []byte("+OK\r\n")}
			}
		}
		if len(cmds) > 0 && string(cmds[0][0]) == "EVAL" {
			cached = true
		}
		return out
	}
	var reloads atomic.Int64
	run := scriptExec(exec, &reloads)
	ctx := context.Background()
	snap := func(id string) [][]byte { return args("EVAL", snapshotScript, "2", IndexKey(id), "room:"+id) }
	sha := scriptSHA[snapshotScript][:8]

	// An empty cache: EVALSHA refused, then EVAL, for each call, in order.
	replies := run(ctx, [][][]byte{snap("a"), snap("b")})
	want := []string{"EVALSHA " + sha + " room:a", "EVALSHA " + sha + " room:b", "EVAL " + snapshotScript[:8] + " room:a", "EVAL " + snapshotScript[:8] + " room:b"}
	if strings.Join(sent, "|") != strings.Join(want, "|") || reloads.Load() != 2 {
		t.Fatalf("sent %q, %d reloads; want %q", sent, reloads.Load(), want)
	}
	for _, r := range replies {
		if string(r.Raw) != "+OK\r\n" {
			t.Fatalf("replies %q", replies)
		}
	}
	// Cached now: EVALSHA alone.
	sent = nil
	run(ctx, [][][]byte{snap("c")})
	if len(sent) != 1 || !strings.HasPrefix(sent[0], "EVALSHA "+sha) {
		t.Fatalf("sent %q", sent)
	}
	// A round trip with another command, or an unknown script, is not touched.
	sent = nil
	run(ctx, [][][]byte{snap("d"), args("TTL", "room:d")})
	run(ctx, [][][]byte{args("EVAL", "return 1", "0")})
	if len(sent) != 3 || !strings.HasPrefix(sent[0], "EVAL ") || !strings.HasPrefix(sent[2], "EVAL return 1") {
		t.Fatalf("sent %q", sent)
	}
}

// TestReload: the hidden calls this package makes as EVALSHA come back as
// EVAL of the same script with the same keys and arguments; nothing else
// (a client's own EVALSHA, another command) is ever sent again.
func TestReload(t *testing.T) {
	for _, script := range []string{refreshScript, indexTTLScript, keyTTLScript} {
		c := evalsha(script, []byte("1"), []byte("room:a"), []byte("30"))
		eval, ok := Reload(c)
		if !ok || string(eval[0]) != "EVAL" || string(eval[1]) != script || string(joinArgs(eval[2:])) != "1 room:a 30" {
			t.Errorf("Reload(%q) = %q, %v", c, eval, ok)
		}
	}
	for _, c := range [][][]byte{
		args("EVALSHA", strings.Repeat("0", 40), "0"),
		args("EVAL", keyTTLScript, "0"),
		args("GET", "room:a"),
		args("EVALSHA"),
	} {
		if _, ok := Reload(c); ok {
			t.Errorf("Reload(%q) would send it again", c)
		}
	}
	if !NoScript([]byte("-NOSCRIPT No matching script. Please use EVAL.\r\n")) || NoScript([]byte("-ERR x\r\n")) || NoScript([]byte(":1\r\n")) {
		t.Error("NoScript")
	}
}
