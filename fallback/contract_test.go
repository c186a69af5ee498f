package fallback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/internal/testmongo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The same contract runs against both stores.
func TestEmbeddedContract(t *testing.T) {
	contract(t, func(t *testing.T) Store {
		s, err := OpenEmbedded(filepath.Join(t.TempDir(), "rooms.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestMongoContract(t *testing.T) {
	srv := testmongo.Start(t)
	n := 0
	contract(t, func(t *testing.T) Store {
		n++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := OpenMongo(ctx, MongoConfig{URL: srv.URL, DB: fmt.Sprint("contract", n), Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestMongoReopens: a restarted proxy opens the store again over existing
// indexes and finds its rooms (FerretDB drops the connection on a
// CreateMany of indexes that exist, which once stopped every restart).
func TestMongoReopens(t *testing.T) {
	srv := testmongo.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 3 {
		s, err := OpenMongo(ctx, MongoConfig{URL: srv.URL, DB: "reopen", Timeout: 5 * time.Second})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if i == 0 {
			err = s.Put(ctx, sample("kept", 1, "active"))
		} else {
			_, found, gerr := s.Get(ctx, "kept")
			if !found && gerr == nil {
				gerr = errors.New("room not found")
			}
			err = gerr
		}
		s.Close()
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
	}
}

func sample(id string, version int64, status string) Room {
	return Room{
		ID: id, Status: status, Version: version,
		UpdatedAt: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		Keys: map[string]Value{
			"room:" + id:              {Type: TypeString, String: []byte(`{"status":"` + status + `"}`)},
			"room:" + id + ":players": {Type: TypeHash, Hash: map[string][]byte{"p1": []byte("ada"), "p2": {0, 0xff, '.', '$'}}},
			"room:" + id + ":tags":    {Type: TypeSet, Set: [][]byte{[]byte("a"), []byte("b")}},
			"room:" + id + ":chat":    {Type: TypeList, List: [][]byte{[]byte("hi"), []byte("gg"), []byte("hi")}},
			"room:" + id + ":score":   {Type: TypeZSet, ZSet: []Member{{[]byte("p1"), 1.5}, {[]byte("p2"), -3}}},
			"room:{" + id + "}.$odd":  {Type: TypeString, String: []byte{0, 1, 2}},
			"room:" + id + ":lock":    {Type: TypeString, String: []byte("p1"), ExpireAt: time.Date(2026, 11, 25, 12, 0, 30, 125e6, time.UTC)},
		},
	}
}

func equalRooms(a, b Room) bool {
	a.UpdatedAt, b.UpdatedAt = a.UpdatedAt.UTC(), b.UpdatedAt.UTC()
	a.CompletedAt, b.CompletedAt = a.CompletedAt.UTC(), b.CompletedAt.UTC()
	norm := func(r Room) Room {
		for k, v := range r.Keys {
			if len(v.String) == 0 {
				v.String = nil
			}
			v.ExpireAt = v.ExpireAt.UTC()
			r.Keys[k] = v
		}
		return r
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

func contract(t *testing.T, open func(t *testing.T) Store) {
	ctx := context.Background()
	t.Run("round trip of every type", func(t *testing.T) {
		s := open(t)
		want := sample("r1", 1, "waiting")
		if err := s.Put(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, found, err := s.Get(ctx, "r1")
		if err != nil || !found || !equalRooms(got, want) {
			t.Fatalf("Get = %+v, %v, %v\nwant %+v", got, found, err, want)
		}
		if _, found, err := s.Get(ctx, "nope"); found || err != nil {
			t.Fatalf("a missing room: found=%v err=%v", found, err)
		}
	})
	t.Run("version only increases", func(t *testing.T) {
		s := open(t)
		if err := s.Put(ctx, sample("r2", 5, "active")); err != nil {
			t.Fatal(err)
		}
		for _, v := range []int64{5, 4, 1} {
			if err := s.Put(ctx, sample("r2", v, "waiting")); !errors.Is(err, ErrStale) {
				t.Fatalf("Put version %d over 5: %v, want ErrStale", v, err)
			}
		}
		got, _, _ := s.Get(ctx, "r2")
		if got.Version != 5 || got.Status != "active" {
			t.Fatalf("a stale write changed the room: %+v", got)
		}
		if err := s.Put(ctx, sample("r2", 6, "completed")); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := s.Get(ctx, "r2"); got.Version != 6 || got.Status != "completed" {
			t.Fatalf("after version 6: %+v", got)
		}
	})
	t.Run("concurrent writers never go back in time", func(t *testing.T) {
		s := open(t)
		const writers, per = 8, 6
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					v := int64(i*writers + w + 1)
					err := s.Put(ctx, sample("race", v, "active"))
					if err != nil && !errors.Is(err, ErrStale) {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		got, _, err := s.Get(ctx, "race")
		if err != nil || got.Version != writers*per {
			t.Fatalf("final version %d (%v), want %d", got.Version, err, writers*per)
		}
	})
	t.Run("list by status and expire completed", func(t *testing.T) {
		s := open(t)
		now := time.Now().UTC()
		for i, st := range []string{"waiting", "active", "active", "completed", "waiting"} {
			r := sample(fmt.Sprint("l", i), 1, st)
			if st == "completed" {
				r.CompletedAt = now.Add(-8 * 24 * time.Hour)
			}
			if err := s.Put(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		rooms, err := s.List(ctx, []string{"waiting", "active"}, 0)
		if err != nil || len(rooms) != 4 {
			t.Fatalf("List waiting+active = %d rooms, %v", len(rooms), err)
		}
		for i := 1; i < len(rooms); i++ {
			if rooms[i-1].ID >= rooms[i].ID {
				t.Fatalf("List not ordered by id: %s before %s", rooms[i-1].ID, rooms[i].ID)
			}
		}
		if rooms, _ := s.List(ctx, []string{"active"}, 1); len(rooms) != 1 || rooms[0].ID != "l1" {
			t.Fatalf("List active limit 1 = %+v", rooms)
		}
		n, err := s.Expire(ctx, now.Add(-7*24*time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("Expire = %d, %v", n, err)
		}
		if _, found, _ := s.Get(ctx, "l3"); found {
			t.Fatal("the expired room is still there")
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("dirty rooms", func(t *testing.T) {
		s := open(t)
		for i, dirty := range []bool{true, false, true} {
			r := sample(fmt.Sprint("d", i), 1, "active")
			r.Dirty = dirty
			if err := s.Put(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		rooms, err := s.ListDirty(ctx)
		if err != nil || len(rooms) != 2 || rooms[0].ID != "d0" || rooms[1].ID != "d2" || !rooms[0].Dirty {
			t.Fatalf("ListDirty = %+v, %v", rooms, err)
		}
		clean := sample("d0", 2, "active") // written back to Redis: no longer dirty
		if err := s.Put(ctx, clean); err != nil {
			t.Fatal(err)
		}
		if rooms, _ := s.ListDirty(ctx); len(rooms) != 1 || rooms[0].ID != "d2" {
			t.Fatalf("ListDirty after d0 was cleaned = %+v", rooms)
		}
		if got, _, _ := s.Get(ctx, "d0"); got.Dirty {
			t.Fatal("d0 still reads as dirty")
		}
	})
	t.Run("large room", func(t *testing.T) {
		s := open(t)
		r := sample("big", 1, "active")
		r.Keys["room:big:blob"] = Value{Type: TypeString, String: bytes.Repeat([]byte("x"), 900<<10)}
		if err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
		got, _, err := s.Get(ctx, "big")
		if err != nil || len(got.Keys["room:big:blob"].String) != 900<<10 {
			t.Fatalf("large value: %d bytes, %v", len(got.Keys["room:big:blob"].String), err)
		}
	})
}
