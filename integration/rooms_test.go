package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/testmongo"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/wiring"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/proxy"
	"github.com/roomproxy/roomproxy/rooms"
)

// defaultStoreTimeout is the room store's operation timeout in roomsSetup.
const defaultStoreTimeout = 3 * time.Second

// roomsSetup is redis-server + FerretDB + roomproxy with rooms on.
func roomsSetup(t *testing.T) (*proxyUnderTest, *testredis.Server, *fallback.Mongo, *testmongo.Server) {
	return roomsSetupTimeout(t, defaultStoreTimeout)
}

func roomsSetupTimeout(t *testing.T, storeTimeout time.Duration) (*proxyUnderTest, *testredis.Server, *fallback.Mongo, *testmongo.Server) {
	return roomsSetupClock(t, storeTimeout, nil, "")
}

// roomsSetupClock is roomsSetup with the store's timeout, the rooms' clock
// (nil: time.Now) and the upstream's streaming mode (backend.Config.Stream;
// "" is the default, auto).
func roomsSetupClock(t *testing.T, storeTimeout time.Duration, now func() time.Time, stream string) (*proxyUnderTest, *testredis.Server, *fallback.Mongo, *testmongo.Server) {
	t.Helper()
	r := testredis.Start(t, testredis.Options{})
	store, mdb := startStore(t, "rooms_it", storeTimeout)
	p := startProxyWith(t, backend.Config{URL: r.URL(), Stream: stream}, func(up *backend.Upstream) proxy.Config {
		return proxy.Config{Rooms: rooms.New(policy.DefaultRules(), store, wiring.Exec(up), now)}
	})
	return p, r, store, mdb
}

func ttlWithin(t *testing.T, c *redis.Client, key string, lo, hi time.Duration) {
	t.Helper()
	ttl, err := c.TTL(context.Background(), key).Result()
	if err != nil || ttl <= lo || ttl > hi {
		t.Fatalf("TTL %s = %v (%v), want in (%v, %v]", key, ttl, err, lo, hi)
	}
}

// TestRoomLifecycle is the rooms issue's first demonstration, through the
// proxy with a real redis-server and a MongoDB-wire server; through the
// pooled workers and through the streams (a remote upstream's path).
func TestRoomLifecycle(t *testing.T) { forEachStreamMode(t, roomLifecycle) }

func roomLifecycle(t *testing.T, stream string) {
	p, r, store, _ := roomsSetupClock(t, defaultStoreTimeout, nil, stream)
	ctx := context.Background()
	c, direct := openClients(t, p, r)

	if err := c.Set(ctx, "room:r1", `{"status":"waiting"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	ttlWithin(t, direct, "room:r1", 1790*time.Second, 1800*time.Second)
	c.HSet(ctx, "room:r1:players", "p1", "x")
	ttlWithin(t, direct, "room:r1:players", 1790*time.Second, 1800*time.Second)

	if err := c.Set(ctx, "room:r1", `{"status":"active","round":1}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	ttlWithin(t, direct, "room:r1", 3590*time.Second, 3600*time.Second)
	ttlWithin(t, direct, "room:r1:players", 3590*time.Second, 3600*time.Second)
	got, found, err := store.Get(ctx, "r1")
	if err != nil || !found || got.Status != "active" || got.Version != 2 || string(got.Keys["room:r1:players"].Hash["p1"]) != "x" {
		t.Fatalf("store after active: %+v %v %v", got, found, err)
	}
	// A state write keeps the state: no new version.
	c.HSet(ctx, "room:r1:players", "p2", "y")
	if got, _, _ := store.Get(ctx, "r1"); got.Version != 2 {
		t.Fatalf("a state write made a new version: %d", got.Version)
	}

	if err := c.Set(ctx, "room:r1", `{"status":"completed","winner":"p2"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, _ := direct.Exists(ctx, "room:r1", "room:r1:players", rooms.IndexKey("r1")).Result(); n != 0 {
		t.Fatalf("%d keys of the completed room are still in Redis", n)
	}
	got, _, _ = store.Get(ctx, "r1")
	if got.Status != "completed" || got.CompletedAt.IsZero() || !strings.Contains(string(got.Keys["room:r1"].String), "winner") ||
		string(got.Keys["room:r1:players"].Hash["p2"]) != "y" {
		t.Fatalf("final state in the store: %+v", got)
	}
	v, err := c.Do(ctx, "ROOM.GET", "r1").Result()
	m, ok := v.(map[interface{}]interface{})
	if err != nil || !ok || m["status"] != "completed" || m["source"] != "redis" || m["pending_keys"] != int64(0) {
		t.Fatalf("ROOM.GET r1 = %#v, %v", v, err)
	}

	c.Set(ctx, "room:r2", `{"status":"playing"}`, 0)
	list, err := c.Do(ctx, "ROOM.LIST").StringSlice()
	if err != nil || len(list) != 1 || list[0] != "r2" {
		t.Fatalf("ROOM.LIST = %v, %v", list, err)
	}
	if n, err := c.Do(ctx, "ROOM.TTL", "r2", "100").Int(); err != nil || n != 1 {
		t.Fatalf("ROOM.TTL = %d, %v", n, err)
	}
	ttlWithin(t, direct, "room:r2", 90*time.Second, 100*time.Second)
	// The client's own shorter TTL stands.
	c.Set(ctx, "room:r2:timer", "t", 5*time.Second)
	ttlWithin(t, direct, "room:r2:timer", 0, 5*time.Second)
}

// TestLifecycleWriteWithoutStore: with MongoDB gone, a lifecycle write gets
// an error, never +OK, and Redis is not ahead of MongoDB.
func TestLifecycleWriteWithoutStore(t *testing.T) {
	p, r, _, mdb := roomsSetupTimeout(t, time.Second)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
	defer c.Close()
	mdb.Stop()
	err := c.Set(ctx, "room:down", `{"status":"waiting"}`, 0).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN room store unavailable") {
		t.Fatalf("lifecycle write with MongoDB down: %v", err)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	if n, _ := direct.Exists(ctx, "room:down").Result(); n != 0 {
		t.Fatal("Redis holds a lifecycle write MongoDB refused")
	}
	if err := c.Set(ctx, "plain", "still works", 0).Err(); err != nil {
		t.Fatalf("non-room write: %v", err)
	}
}

// TestConcurrentLifecycleWriters: eight clients change one room's state at
// once; the stored version only grows, and the store ends equal to Redis.
func TestConcurrentLifecycleWriters(t *testing.T) {
	p, r, store, _ := roomsSetup(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := redis.NewClient(&redis.Options{Addr: p.Addr})
			defer c.Close()
			for i := range 5 {
				st := []string{"waiting", "active"}[(w+i)%2]
				if c.Set(ctx, "room:race", fmt.Sprintf(`{"status":%q,"by":%d,"i":%d}`, st, w, i), 0).Err() == nil {
					mu.Lock()
					acked++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	got, _, err := store.Get(ctx, "race")
	if err != nil || got.Version < 1 || got.Version > int64(acked) {
		t.Fatalf("version %d after %d acknowledged writes (%v)", got.Version, acked, err)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	inRedis, _ := direct.Get(ctx, "room:race").Result()
	if string(got.Keys["room:race"].String) != inRedis {
		// The last lifecycle write is in both; a later state write (same
		// status) reaches Redis only.
		s1, _ := policy.DefaultRules().StateFromJSON([]byte(inRedis))
		if s1.String() != got.Status {
			t.Fatalf("store %q (%s) vs Redis %q", got.Keys["room:race"].String, got.Status, inRedis)
		}
	}
}

// TestReadThroughAndNoResurrection: a room key deleted behind the proxy's
// back is served from the store and restored with its TTL; a key a client
// deleted through the proxy stays deleted.
func TestReadThroughAndNoResurrection(t *testing.T) {
	p, r, _, _ := roomsSetup(t)
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	c.Set(ctx, "room:rt", `{"status":"waiting"}`, 0)
	c.HSet(ctx, "room:rt:players", "p1", "ada", "p2", "bob")
	c.RPush(ctx, "room:rt:log", "a", "b")
	c.Set(ctx, "room:rt", `{"status":"active"}`, 0) // lifecycle: the store now has the players and log

	direct.Del(ctx, "room:rt:players") // behind the proxy's back (eviction, a restart)
	m, err := c.HGetAll(ctx, "room:rt:players").Result()
	if err != nil || m["p1"] != "ada" || m["p2"] != "bob" {
		t.Fatalf("read-through HGETALL = %v, %v", m, err)
	}
	ttlWithin(t, direct, "room:rt:players", 3590*time.Second, 3600*time.Second)

	// Deleted through the proxy: gone from the store too, never read back.
	if err := c.Del(ctx, "room:rt:log").Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.LRange(ctx, "room:rt:log", 0, -1).Result(); err != nil || len(v) != 0 {
		t.Fatalf("a deleted key came back: %v, %v", v, err)
	}
	// RESP3 clients get the restored value in RESP3.
	direct.Del(ctx, "room:rt:players")
	c3 := redis.NewClient(&redis.Options{Addr: p.Addr, Protocol: 3})
	defer c3.Close()
	if m, err := c3.HGetAll(ctx, "room:rt:players").Result(); err != nil || len(m) != 2 {
		t.Fatalf("RESP3 read-through = %v, %v", m, err)
	}
	if err := c.Del(ctx, "room:rt:players", "room:other:x").Err(); err == nil || !strings.Contains(err.Error(), "one room") {
		t.Fatalf("DEL across rooms: %v", err)
	}
}

// TestWarmUp: a proxy started against an empty Redis restores the waiting
// and active rooms from the store; completed rooms stay out.
func TestWarmUp(t *testing.T) {
	p, r, store, _ := roomsSetup(t)
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	for i, st := range []string{"waiting", "active", "active", "completed"} {
		id := fmt.Sprint("w", i)
		c.Set(ctx, "room:"+id, `{"status":"waiting"}`, 0)
		c.SAdd(ctx, "room:"+id+":tags", "x")
		if st != "waiting" {
			c.Set(ctx, "room:"+id, fmt.Sprintf(`{"status":%q}`, st), 0)
		}
	}
	r.Restart() // empty
	up, err := backend.New(backend.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	m := rooms.New(policy.DefaultRules(), store, wiring.Exec(up), nil)
	m.WarmUp(ctx, 1000, slogDiscard())
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	if n, _ := direct.Exists(ctx, "room:w0", "room:w1", "room:w2", "room:w1:tags").Result(); n != 4 {
		t.Fatalf("%d of 4 warm keys restored", n)
	}
	if n, _ := direct.Exists(ctx, "room:w3", "room:w3:tags").Result(); n != 0 {
		t.Fatal("a completed room was restored")
	}
	ttlWithin(t, direct, "room:w1:tags", 3590*time.Second, 3600*time.Second)
	ttlWithin(t, direct, "room:w0", 1790*time.Second, 1800*time.Second)
}

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestSlidingTTL: activity on any key of an active room extends all its
// keys, at most once per refresh interval.
func TestSlidingTTL(t *testing.T) {
	var mu sync.Mutex
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	p, r, _, _ := roomsSetupClock(t, defaultStoreTimeout, now, "")
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	c.Set(ctx, "room:s", `{"status":"waiting"}`, 0)
	c.HSet(ctx, "room:s:players", "p1", "x")
	c.Set(ctx, "room:s", `{"status":"active"}`, 0)
	c.Do(ctx, "ROOM.TTL", "s", "100") // as if an hour had nearly passed
	c.Get(ctx, "room:s")              // within the interval: no refresh
	ttlWithin(t, direct, "room:s:players", 90*time.Second, 100*time.Second)
	mu.Lock()
	clock = clock.Add(61 * time.Second)
	mu.Unlock()
	c.Get(ctx, "room:s") // a read of another key of the room
	ttlWithin(t, direct, "room:s:players", 3590*time.Second, 3600*time.Second)
}

// TestRoomsInTransactionsAndScripts: writes queued in MULTI and keys a script
// declares get their room's TTL after EXEC / the script; a status change
// inside MULTI is refused (it could not be written through first).
func TestRoomsInTransactionsAndScripts(t *testing.T) {
	p, r, _, _ := roomsSetup(t)
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	c.Set(ctx, "room:tx", `{"status":"active"}`, 0)
	if _, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HSet(ctx, "room:tx:players", "p1", "x")
		pipe.Incr(ctx, "room:tx:turn")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ttlWithin(t, direct, "room:tx:players", 3590*time.Second, 3600*time.Second)
	ttlWithin(t, direct, "room:tx:turn", 3590*time.Second, 3600*time.Second)
	_, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, "room:tx", `{"status":"completed"}`, 0)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "EXECABORT") {
		t.Fatalf("a status change inside MULTI: %v", err)
	}
	// A command that writes a state key together with other keys is refused
	// with a reason naming it, inside MULTI and outside.
	multi := func(cmd string) string {
		return "-ERR " + cmd + " writes a room's state key (room:<id>) together with other keys; write the state key with a command of its own\r\n"
	}
	rc := dialRaw(t, p.Addr)
	rc.Send(encode("MULTI") + encode("RENAME", "room:tx:turn", "room:tx") + encode("DISCARD"))
	for i, want := range []string{"+OK\r\n", multi("RENAME"), "+OK\r\n"} {
		if got := rc.MustReply(); got != want {
			t.Fatalf("MULTI reply %d: %q, want %q", i, got, want)
		}
	}
	if got := rc.Do("COPY", "room:tx:turn", "room:tx", "REPLACE"); got != multi("COPY") {
		t.Fatalf("COPY onto a state key: %q", got)
	}
	if got := rc.Do("MSET", "room:tx", `{"status":"active"}`, "room:tx:x", "1"); got != multi("MSET") {
		t.Fatalf("MSET with a state key: %q", got)
	}
	if err := c.Eval(ctx, "return redis.call('SET', KEYS[1], ARGV[1])", []string{"room:tx:score"}, "7").Err(); err != nil {
		t.Fatal(err)
	}
	ttlWithin(t, direct, "room:tx:score", 3590*time.Second, 3600*time.Second)
}

// TestRoomsWithRedisCLI is the rooms issue's first demonstration typed into
// redis-cli.
func TestRoomsWithRedisCLI(t *testing.T) {
	p, _, store, _ := roomsSetup(t)
	_, port, _ := strings.Cut(p.Addr, ":")
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-h", "127.0.0.1", "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %q: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ttl := func(key string) int {
		n, _ := strconv.Atoi(cli("TTL", key))
		return n
	}
	cli("SET", "room:cli", `{"status":"waiting"}`)
	cli("HSET", "room:cli:players", "p1", "x")
	if a, b := ttl("room:cli"), ttl("room:cli:players"); a < 1790 || a > 1800 || b < 1790 || b > 1800 {
		t.Fatalf("waiting TTLs %d, %d", a, b)
	}
	cli("SET", "room:cli", `{"status":"active"}`)
	if a, b := ttl("room:cli"), ttl("room:cli:players"); a < 3590 || b < 3590 {
		t.Fatalf("active TTLs %d, %d", a, b)
	}
	cli("SET", "room:cli", `{"status":"completed"}`)
	if got := cli("EXISTS", "room:cli", "room:cli:players"); got != "0" {
		t.Fatalf("EXISTS after completion = %s", got)
	}
	if got := cli("ROOM.GET", "cli"); !strings.Contains(got, "completed") || !strings.Contains(got, "room:cli:players") {
		t.Fatalf("ROOM.GET cli:\n%s", got)
	}
	if room, _, _ := store.Get(context.Background(), "cli"); room.Status != "completed" {
		t.Fatalf("store: %+v", room)
	}
}

// TestRoomTooLarge: a write that would take a room over ROOM_MAX_BYTES gets
// Redis-style "-ERR room document too large" and changes nothing (SPEC
// 4.1), whichever kind of write it is: a write whose own data is too large,
// a state write that would make the room's keys together too large (with
// and without debouncing), a write queued in MULTI (EXEC aborts), and the
// room then completes and reaches the store.
func TestRoomTooLarge(t *testing.T) { forEachDebounceMode(t, roomTooLarge) }

// forEachDebounceMode runs f against a proxy with rooms, a redis-server and
// a room store: with no debouncer, with debouncing off as cmd/roomproxy sets
// it for DEBOUNCE_WINDOW_MS=0 (a debouncer that only stores snapshots), and
// on (its defaults).
func forEachDebounceMode(t *testing.T, f func(*testing.T, *proxyUnderTest, *testredis.Server, *fallback.Mongo)) {
	t.Run("debounce=none", func(t *testing.T) {
		p, r, store, _ := roomsSetup(t)
		f(t, p, r, store)
	})
	t.Run("debounce=off", func(t *testing.T) {
		p, r, store, _ := debounceSetup(t, rooms.DebounceConfig{Window: -1})
		f(t, p, r, store)
	})
	t.Run("debounce=on", func(t *testing.T) {
		p, r, store, _ := debounceSetup(t, rooms.DebounceConfig{})
		f(t, p, r, store)
	})
}

func roomTooLarge(t *testing.T, p *proxyUnderTest, r *testredis.Server, store *fallback.Mongo) {
	ctx := context.Background()
	c, direct := openClients(t, p, r)
	tooLarge := func(what string, err error) {
		t.Helper()
		if err == nil || err.Error() != "ERR room document too large" {
			t.Fatalf("%s: %v, want ERR room document too large", what, err)
		}
	}
	if err := c.Set(ctx, "room:big", `{"status":"waiting"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	tooLarge("oversized state write", c.Set(ctx, "room:big:blob", strings.Repeat("x", 1<<20+1), 0).Err())

	// A 600 KiB value fits, and can be rewritten again and again.
	for i := 0; i < 5; i++ {
		if err := c.Set(ctx, "room:big:half", strings.Repeat(strconv.Itoa(i), 600<<10), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A second one would make 1.2 MiB: refused, as a string write, a hash
	// write, an append, and queued in MULTI.
	tooLarge("second 600 KiB value", c.Set(ctx, "room:big:half2", strings.Repeat("z", 600<<10), 0).Err())
	tooLarge("600 KiB hash field", c.HSet(ctx, "room:big:h", "f", strings.Repeat("z", 600<<10)).Err())
	tooLarge("600 KiB append", c.Append(ctx, "room:big:half", strings.Repeat("z", 600<<10)).Err())
	_, err := c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.RPush(ctx, "room:big:list", strings.Repeat("z", 600<<10))
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "EXECABORT") {
		t.Fatalf("MULTI with a write past the limit: %v", err)
	}
	rc := dialRaw(t, p.Addr) // the queued write's own reply says why
	rc.Send(encode("MULTI") + encode("RPUSH", "room:big:list", strings.Repeat("z", 600<<10)) + encode("DISCARD"))
	for i, want := range []string{"+OK\r\n", "-ERR room document too large\r\n", "+OK\r\n"} {
		if got := rc.MustReply(); got != want {
			t.Fatalf("MULTI reply %d: %q, want %q", i, got, want)
		}
	}
	// Small writes still fit.
	if err := c.HSet(ctx, "room:big:h", "f", "small").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "room:big", `{"status":"completed"}`, 0).Err(); err != nil {
		t.Fatalf("completing the room: %v", err)
	}
	room, _, err := store.Get(ctx, "big")
	if err != nil || room.Status != "completed" || string(room.Keys["room:big:half"].String) != strings.Repeat("4", 600<<10) ||
		string(room.Keys["room:big:h"].Hash["f"]) != "small" {
		t.Fatalf("stored room: %q, %d bytes of half, h %v (%v)", room.Status, len(room.Keys["room:big:half"].String), room.Keys["room:big:h"].Hash, err)
	}
	for _, k := range []string{"room:big:half2", "room:big:list", "room:big:blob"} {
		if _, ok := room.Keys[k]; ok {
			t.Fatalf("the refused %s reached the store", k)
		}
	}
	if n, _ := direct.Exists(ctx, "room:big", "room:big:half").Result(); n != 0 {
		t.Fatalf("%d keys of the completed room left in Redis", n)
	}
}

// TestRoomSizeUnderConcurrentWriters: eight connections grow one room at
// once (APPEND, and debounced HSET of new fields) until they are refused.
// The writes stop near ROOM_MAX_BYTES, not long before it, and never past
// it, although the room is measured while other connections' writes are on
// their way (they stay counted until they have landed); the room then
// completes and reaches the store. (Before the writes were landed only once
// sent, a drain between a write's admission and its sending landed it
// early, and the room ended up to three chunks past the limit in about one
// run in four.)
func TestRoomSizeUnderConcurrentWriters(t *testing.T) {
	p, r, store, _ := debounceSetup(t, rooms.DebounceConfig{})
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr, PoolSize: 16})
	defer c.Close()
	if err := c.Set(ctx, "room:conc", `{"status":"active"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	const writers, chunk = 8, 8 << 10
	limit := policy.DefaultRules().MaxBytes
	var wg sync.WaitGroup
	var accepted, refused atomic.Int64
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			value := strings.Repeat(strconv.Itoa(w), chunk)
			for i := 0; i < 2*limit/chunk; i++ { // bounded: twice what fits
				var err error
				if w%2 == 0 {
					err = c.Append(ctx, fmt.Sprintf("room:conc:log%d", w), value).Err()
				} else {
					err = c.HSet(ctx, fmt.Sprintf("room:conc:h%d", w), strconv.Itoa(i), value).Err()
				}
				if err != nil {
					if err.Error() != "ERR room document too large" {
						t.Errorf("writer %d: %v", w, err)
					}
					refused.Add(1)
					return
				}
				accepted.Add(1)
			}
			t.Errorf("writer %d was never refused", w)
		}()
	}
	wg.Wait()
	if err := c.Set(ctx, "room:conc", `{"status":"completed"}`, 0).Err(); err != nil {
		d := redis.NewClient(&redis.Options{Addr: r.Addr})
		n := 0
		for _, k := range d.Keys(ctx, "room:conc*").Val() {
			n += len(k)
			switch d.Type(ctx, k).Val() {
			case "string":
				n += int(d.StrLen(ctx, k).Val())
			case "hash":
				for f, v := range d.HGetAll(ctx, k).Val() {
					n += len(f) + len(v)
				}
			}
		}
		d.Close()
		t.Fatalf("completing the room: %v (Redis holds %d bytes of it)", err, n)
	}
	room, _, err := store.Get(ctx, "conc")
	if err != nil || room.Status != "completed" {
		t.Fatalf("stored room: %q, %v", room.Status, err)
	}
	size := 0
	for k, v := range room.Keys {
		size += len(k) + len(v.String)
		for f, x := range v.Hash {
			size += len(f) + len(x)
		}
	}
	perWrite := chunk + 64 // a chunk, its key or field, and the bound's slack
	t.Logf("%d writes accepted, %d refused; room %d bytes of %d", accepted.Load(), refused.Load(), size, limit)
	if size > limit || size < limit-writers*perWrite {
		t.Fatalf("room ended at %d bytes; want at most the %d limit and within %d of it", size, limit, writers*perWrite)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	if n, _ := direct.Exists(ctx, "room:conc", "room:conc:log0").Result(); n != 0 {
		t.Fatalf("%d keys of the completed room left in Redis", n)
	}
}

// TestClientTTLNoLongerThanTheRoom: a client's own TTL on a room key stands
// when it is shorter than the room's, and a longer one, or none (PERSIST),
// gets the room's TTL (SPEC 4.2), with and without debouncing. Before,
// PERSIST left the key without a TTL, to outlive the room.
func TestClientTTLNoLongerThanTheRoom(t *testing.T) {
	forEachDebounceMode(t, func(t *testing.T, p *proxyUnderTest, r *testredis.Server, _ *fallback.Mongo) {
		ctx := context.Background()
		c, direct := openClients(t, p, r)
		if err := c.Set(ctx, "room:ttl", `{"status":"waiting"}`, 0).Err(); err != nil { // 1800 s
			t.Fatal(err)
		}
		c.Set(ctx, "room:ttl:lock", "v", 30*time.Second)
		c.Set(ctx, "room:ttl:long", "v", 24*time.Hour)
		c.HSet(ctx, "room:ttl:h", "f", "v")
		c.HSet(ctx, "room:ttl:p", "f", "v")
		if err := c.Do(ctx, "ROOM.FLUSH", "ttl").Err(); err != nil {
			t.Fatal(err)
		}
		c.Expire(ctx, "room:ttl:h", 24*time.Hour)
		c.Persist(ctx, "room:ttl:p")
		ttlWithin(t, direct, "room:ttl:lock", 25*time.Second, 30*time.Second)
		for _, k := range []string{"room:ttl:long", "room:ttl:h", "room:ttl:p"} {
			ttlWithin(t, direct, k, 1790*time.Second, 1800*time.Second)
		}
	})
}

// TestClientTTLLasts: a client's own TTL on a room key, shorter than the
// room's, outlasts the room's later TTLs (a lifecycle write, another write
// to the key, a flush), and a key that expired on it is not read back from
// the store (SPEC 4.2, 4.5). A later write without a TTL, or with one no
// shorter than the room's, gives the key the room's TTL again.
func TestClientTTLLasts(t *testing.T) {
	forEachDebounceMode(t, func(t *testing.T, p *proxyUnderTest, r *testredis.Server, _ *fallback.Mongo) {
		ctx := context.Background()
		c, direct := openClients(t, p, r)
		flush := func() {
			t.Helper()
			if err := c.Do(ctx, "ROOM.FLUSH", "own").Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Set(ctx, "room:own", `{"status":"waiting"}`, 0).Err(); err != nil {
			t.Fatal(err)
		}
		c.Set(ctx, "room:own:lock", "held", 30*time.Second)
		c.HSet(ctx, "room:own:cd", "p1", "x")
		flush()
		c.Expire(ctx, "room:own:cd", 20*time.Second)
		c.HSet(ctx, "room:own:cd", "p2", "x") // another write to the key
		flush()
		ttlWithin(t, direct, "room:own:cd", 15*time.Second, 20*time.Second)
		// The lifecycle write that starts the room gives every other key 3600 s.
		if err := c.Set(ctx, "room:own", `{"status":"active"}`, 0).Err(); err != nil {
			t.Fatal(err)
		}
		ttlWithin(t, direct, "room:own:lock", 25*time.Second, 30*time.Second)
		ttlWithin(t, direct, "room:own:cd", 15*time.Second, 20*time.Second)
		ttlWithin(t, direct, "room:own", 3590*time.Second, 3600*time.Second)

		// Expired on its own TTL after a snapshot stored it: not read back.
		c.Set(ctx, "room:own:blink", "on", time.Second)
		flush() // the snapshot in the store has room:own:blink
		time.Sleep(1200 * time.Millisecond)
		if v, err := c.Get(ctx, "room:own:blink").Result(); err != redis.Nil {
			t.Fatalf("GET of a key expired on its own TTL = %q, %v; want nil", v, err)
		}

		// Written again without a TTL, or with a longer one: the room's.
		c.Set(ctx, "room:own:lock", "free", 0)
		c.Expire(ctx, "room:own:cd", 24*time.Hour)
		flush()
		ttlWithin(t, direct, "room:own:lock", 3590*time.Second, 3600*time.Second)
		ttlWithin(t, direct, "room:own:cd", 3590*time.Second, 3600*time.Second)
		// Those two no longer keep their own TTL: the next lifecycle write
		// extends them with the rest.
		for _, k := range []string{"room:own:lock", "room:own:cd"} {
			if listed, _ := direct.SIsMember(ctx, rooms.OwnTTLKey("own"), k).Result(); listed {
				t.Fatalf("%s is still listed as keeping its own TTL", k)
			}
		}
	})
}

// countingStore counts the room store's reads.
type countingStore struct {
	fallback.Store
	gets atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, id string) (fallback.Room, bool, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, id)
}

// TestNilReadsDoNotHammerTheStore: nil reads of a room key (a missing hash
// field, a key that never existed) look the room up in the store once, not
// on every read; once the quiet time has passed, a key that really went
// missing is read back again.
func TestNilReadsDoNotHammerTheStore(t *testing.T) {
	r := testredis.Start(t, testredis.Options{})
	mongo, _ := startStore(t, "nilreads", 3*time.Second)
	ctx := context.Background()
	store := &countingStore{Store: mongo}
	var skew atomic.Int64 // the manager's clock runs ahead by this much
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	p := startProxyWith(t, backend.Config{URL: r.URL()}, func(up *backend.Upstream) proxy.Config {
		return proxy.Config{Rooms: rooms.New(policy.DefaultRules(), store, wiring.Exec(up), clock)}
	})
	c := redis.NewClient(&redis.Options{Addr: p.Addr})
	defer c.Close()
	c.Set(ctx, "room:nr", `{"status":"waiting"}`, 0)
	c.HSet(ctx, "room:nr:players", "p1", "ada")
	c.Set(ctx, "room:nr", `{"status":"active"}`, 0)
	before := store.gets.Load()
	for range 50 {
		if err := c.HGet(ctx, "room:nr:players", "nobody").Err(); err != redis.Nil {
			t.Fatalf("HGET of a missing field = %v", err)
		}
	}
	if n := store.gets.Load() - before; n > 1 {
		t.Fatalf("50 nil reads of one key read the store %d times, want at most 1", n)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	direct.Del(ctx, "room:nr:players") // evicted
	skew.Store(int64(6 * time.Second)) // past the quiet time
	if v, err := c.HGet(ctx, "room:nr:players", "p1").Result(); err != nil || v != "ada" {
		t.Fatalf("read-through after the eviction = %q, %v", v, err)
	}
}

// TestOverLimitRoomCompletes: a room grown past ROOM_MAX_BYTES by what the
// size ledger does not see (here a script's writes) refuses a lifecycle
// write that adds to it, but its keys can still be deleted and it can still
// complete: the completed room reaches the store instead of being stranded
// in Redis.
func TestOverLimitRoomCompletes(t *testing.T) {
	forEachDebounceMode(t, func(t *testing.T, p *proxyUnderTest, r *testredis.Server, store *fallback.Mongo) {
		ctx := context.Background()
		c, direct := openClients(t, p, r)
		mustOK(t, c.Set(ctx, "room:ol", `{"status":"active"}`, 0).Err())
		growOverLimit(t, c, "ol")
		err := c.Set(ctx, "room:ol", `{"status":"waiting","pad":"`+strings.Repeat("p", 10<<10)+`"}`, 0).Err()
		if err == nil || err.Error() != "ERR room document too large" {
			t.Fatalf("a lifecycle write adding to a room past the limit: %v, want ERR room document too large", err)
		}
		mustOK(t, c.Del(ctx, "room:ol:d").Err()) // 1.2 MiB left: still past the limit, but smaller
		mustOK(t, c.Set(ctx, "room:ol", `{"status":"completed"}`, 0).Err())
		room, _, err := store.Get(ctx, "ol")
		if err != nil || room.Status != "completed" || len(room.Keys["room:ol:c"].String) != 400<<10 {
			t.Fatalf("stored room: %q, %d bytes of room:ol:c (%v)", room.Status, len(room.Keys["room:ol:c"].String), err)
		}
		if _, ok := room.Keys["room:ol:d"]; ok {
			t.Fatal("the deleted key reached the store")
		}
		if n, _ := direct.Exists(ctx, "room:ol", "room:ol:a", "room:ol:c").Result(); n != 0 {
			t.Fatalf("%d keys of the completed room left in Redis", n)
		}
	})
}

// growOverLimit writes four 400 KiB strings to room id by a script, which
// the size ledger does not see: 1.6 MiB, past ROOM_MAX_BYTES.
func growOverLimit(t *testing.T, c *redis.Client, id string) {
	t.Helper()
	for _, k := range []string{"a", "b", "c", "d"} {
		mustOK(t, c.Eval(context.Background(), `redis.call('SET', KEYS[1], ARGV[1]) return 1`,
			[]string{"room:" + id + ":" + k}, strings.Repeat(k, 400<<10)).Err())
	}
}
