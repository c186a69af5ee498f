package rooms

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"sync/atomic"

	"github.com/roomproxy/roomproxy/batch"
)

// The room scripts this package runs on its own round trips (a debounced
// flush, a snapshot, a restore, a re-sync, a primed hash) go upstream as
// EVALSHA: the script's 40-byte digest instead of its text, which is up to
// 1.4 KB for the flush that every debounced room sends once a window. A
// server whose script cache does not hold the script (restarted, failed
// over, SCRIPT FLUSH) answers NOSCRIPT and runs nothing; those commands are
// then sent again as EVAL, which runs the script and caches it.
//
// Only round trips made of known script calls alone are rewritten, so that
// sending a refused call again after the others cannot change their order
// relative to other commands.
//
// The scripts the proxy sends hidden inside a client's pipeline (a key's
// TTL and index after a write, a room's after a lifecycle write, the
// sliding-TTL refresh) are made as EVALSHA by this package (evalsha); the
// session sends those Redis refused with NOSCRIPT again as EVAL once its
// batch is back (Reload). They only set TTLs and add to sets, and every call
// of a script missing from the cache fails, so running the refused ones
// after the rest of their pipeline, in order, leaves what running them in
// place would (docs/ARCHITECTURE.md has the one exception).

// scriptSHA maps the text of each script this package sends as EVALSHA (on
// its own round trips through scriptExec, or hidden in a client's pipeline
// through evalsha) to its SHA1 digest, as EVALSHA names it.
var scriptSHA = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{flushScript, hashScript, resyncScript, snapshotScript, restoreScript,
		refreshScript, indexTTLScript, keyTTLScript} {
		sum := sha1.Sum([]byte(s))
		m[s] = hex.EncodeToString(sum[:])
	}
	return m
}()

// scriptText is scriptSHA reversed: the text of each digest.
var scriptText = func() map[string]string {
	m := map[string]string{}
	for text, sha := range scriptSHA {
		m[sha] = text
	}
	return m
}()

// evalsha is the EVALSHA call of script (one of scriptSHA's) with numkeys,
// keys and arguments rest.
func evalsha(script string, rest ...[]byte) [][]byte {
	return append([][]byte{[]byte("EVALSHA"), []byte(scriptSHA[script])}, rest...)
}

// NoScript reports whether a raw reply is Redis's NOSCRIPT error: the
// EVALSHA ran nothing.
func NoScript(raw []byte) bool { return bytes.HasPrefix(raw, []byte("-NOSCRIPT")) }

// Reload returns the EVAL form of an EVALSHA call of one of this package's
// scripts, to send again after NOSCRIPT; ok is false for any other command
// (a client's own EVALSHA is never sent again).
func Reload(cmd [][]byte) (eval [][]byte, ok bool) {
	if len(cmd) < 3 || !strings.EqualFold(string(cmd[0]), "EVALSHA") {
		return nil, false
	}
	text, ok := scriptText[string(cmd[1])]
	if !ok {
		return nil, false
	}
	return append([][]byte{[]byte("EVAL"), []byte(text)}, cmd[2:]...), true
}

// Reloaded counts n hidden script calls a session sent again as EVAL after
// NOSCRIPT (roomproxy_room_script_reloads_total).
func (m *Manager) Reloaded(n int) { m.reloads.Add(int64(n)) }

// scriptExec wraps exec so that round trips of known script calls go as
// EVALSHA (see above); reloads counts the calls sent again as EVAL.
func scriptExec(exec Exec, reloads *atomic.Int64) Exec {
	return func(ctx context.Context, cmds [][][]byte) []batch.Reply {
		sha := make([][][]byte, len(cmds))
		for i, c := range cmds {
			if len(c) < 3 || !strings.EqualFold(string(c[0]), "EVAL") {
				return exec(ctx, cmds)
			}
			if _, ok := scriptSHA[string(c[1])]; !ok {
				return exec(ctx, cmds)
			}
			sha[i] = evalsha(string(c[1]), c[2:]...)
		}
		replies := exec(ctx, sha)
		var again [][][]byte
		var at []int
		for i, r := range replies {
			if r.Err == nil && NoScript(r.Raw) {
				again = append(again, cmds[i])
				at = append(at, i)
			}
		}
		if len(again) > 0 {
			reloads.Add(int64(len(again)))
			for j, r := range exec(ctx, again) {
				replies[at[j]] = r
			}
		}
		return replies
	}
}
