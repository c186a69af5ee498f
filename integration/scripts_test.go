package integration

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/rooms"
)

// TestHiddenScriptsAfterScriptFlush: the room scripts a session sends hidden
// inside a client's pipeline (a key's TTL and index after a write, a room's
// after a lifecycle write, those after EXEC on a WATCH lane) go as EVALSHA;
// when Redis has lost its script cache they are answered NOSCRIPT, and are
// sent again as EVAL, so that no key is left without its TTL or its room's
// index.
func TestHiddenScriptsAfterScriptFlush(t *testing.T) {
	forEachDebounceMode(t, hiddenScriptsAfterScriptFlush)
}

func hiddenScriptsAfterScriptFlush(t *testing.T, p *proxyUnderTest, r *testredis.Server, _ *fallback.Mongo) {
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	if err := c.Set(ctx, "room:hs", stateDoc("active", 0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	// checkKey: key has the active room's TTL and is in the room's index.
	checkKey := func(room, key string) {
		t.Helper()
		if ttl, err := direct.TTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
			t.Errorf("%s: TTL %v, %v; want the room's (at most an hour)", key, ttl, err)
		}
		if in, err := direct.SIsMember(ctx, rooms.IndexKey(room), key).Result(); err != nil || !in {
			t.Errorf("%s is not in the index of room %s (%v)", key, room, err)
		}
	}
	flushScripts := func() {
		t.Helper()
		if err := direct.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// A write that is forwarded (not coalesced): its hidden keyTTLScript.
	if err := c.HIncrBy(ctx, "room:hs:warm", "p1", 1).Err(); err != nil {
		t.Fatal(err)
	}
	before := commandCalls(t, direct)
	if err := c.HIncrBy(ctx, "room:hs:score", "p1", 1).Err(); err != nil {
		t.Fatal(err)
	}
	after := commandCalls(t, direct)
	if after["evalsha"] == before["evalsha"] || after["eval"] != before["eval"] {
		t.Fatalf("a room write's hidden script went as %d EVAL and %d EVALSHA calls; want EVALSHA only",
			after["eval"]-before["eval"], after["evalsha"]-before["evalsha"])
	}
	checkKey("hs", "room:hs:score")

	flushScripts()
	if err := c.HIncrBy(ctx, "room:hs:score2", "p1", 1).Err(); err != nil {
		t.Fatal(err)
	}
	checkKey("hs", "room:hs:score2")
	if n := commandCalls(t, direct)["eval"]; n == after["eval"] {
		t.Error("after SCRIPT FLUSH the hidden script was not sent again as EVAL")
	}

	// A lifecycle write: the new room's index and TTL.
	flushScripts()
	if err := c.Set(ctx, "room:hs2", stateDoc("active", 0), 0).Err(); err != nil {
		t.Fatal(err)
	}
	checkKey("hs2", "room:hs2")

	// EXEC on a WATCH lane: the TTLs of the transaction's writes.
	flushScripts()
	err := c.Watch(ctx, func(tx *redis.Tx) error {
		_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.RPush(ctx, "room:hs:log", "joined")
			return nil
		})
		return err
	}, "room:hs:log")
	if err != nil {
		t.Fatal(err)
	}
	checkKey("hs", "room:hs:log")
}
