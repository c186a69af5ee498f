package integration

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/wiring"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/rooms"
)

// TestResyncManyRoomsAtABoundedRate: 10,000 rooms written during an outage
// (dirty in the store) are written back to Redis at the configured rate,
// through the breaker-guarded upstream, without tripping it; afterwards
// Redis holds every one and the store lists none as dirty. The embedded
// store stands in for MongoDB here: FerretDB takes 12-30 ms a write, and
// 20,000 of them would make this a ten-minute test.
func TestResyncManyRoomsAtABoundedRate(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 rooms")
	}
	leakCheck(t)
	r := testredis.Start(t, testredis.Options{})
	store, err := fallback.OpenEmbedded(filepath.Join(t.TempDir(), "rooms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	up, err := backend.New(backend.Config{URL: r.URL(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	ctx := context.Background()

	const n = 10000
	seed := time.Now()
	var wg sync.WaitGroup
	for w := range 8 { // bbolt serialises writers; several goroutines share its fsyncs
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				id := fmt.Sprintf("rs%05d", i)
				room := fallback.Room{ID: id, Status: "active", Version: 1, Dirty: true, UpdatedAt: time.Now(),
					Keys: map[string]fallback.Value{
						"room:" + id:              {Type: fallback.TypeString, String: []byte(stateDoc("active", i))},
						"room:" + id + ":players": {Type: fallback.TypeHash, Hash: map[string][]byte{"p1": []byte("1")}},
					}}
				if err := store.Put(ctx, room); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("seeded %d dirty rooms in %v", n, time.Since(seed).Round(time.Millisecond))

	scratch, err := backend.NewScratch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(scratch.Close)
	m := rooms.New(policy.DefaultRules(), store, wiring.Exec(up), nil)
	br := up.Breaker()
	m.SetDegraded(scratch, func() bool { return br.State() != backend.BreakerClosed })
	if loaded, err := m.LoadDirty(ctx); err != nil || loaded != n {
		t.Fatalf("LoadDirty = %d, %v", loaded, err)
	}
	const rate = 4000
	start := time.Now()
	done := m.Resync(ctx, rate, slog.New(slog.DiscardHandler))
	took := time.Since(start)
	if done != n {
		t.Fatalf("re-synced %d of %d rooms", done, n)
	}
	if st := br.Stats(); st.State != backend.BreakerClosed || st.Faults > 0 {
		t.Fatalf("the re-sync disturbed the breaker: %+v", st)
	}
	// Paced by a ticker: it cannot go faster than the rate.
	if min := time.Duration(float64(n-1) / rate * float64(time.Second)); took < min {
		t.Fatalf("re-synced %d rooms in %v, faster than %d a second allows (%v)", n, took, rate, min)
	}
	direct := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer direct.Close()
	if size, _ := direct.DBSize(ctx).Result(); size != 3*n { // state, players, index per room
		t.Fatalf("Redis holds %d keys, want %d", size, 3*n)
	}
	if v, _ := direct.Get(ctx, "room:rs04242").Result(); seqOf(t, v) != 4242 {
		t.Fatalf("room:rs04242 = %q", v)
	}
	if left, err := store.ListDirty(ctx); err != nil || len(left) != 0 {
		t.Fatalf("the store still lists %d dirty rooms (%v)", len(left), err)
	}
	if st := m.DegradedStats(); st.Dirty != 0 || st.Resynced != n {
		t.Fatalf("stats after the re-sync: %+v", st)
	}
	t.Logf("re-synced %d rooms in %v (limit %d a second): %d upstream round trips, %d commands",
		n, took.Round(time.Millisecond), rate, up.Stats().RoundTrips, up.Stats().Commands)
}
