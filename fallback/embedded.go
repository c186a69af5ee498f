package fallback

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

var roomsBucket = []byte("rooms")

// Embedded is the on-disk room store for the zero-configuration mode (SPEC
// 12): one bbolt file, one bucket, a JSON document per room. bbolt
// transactions are serialised and fsynced, so the version guard is atomic and
// a Put that returned is on disk.
type Embedded struct {
	db *bolt.DB
}

// OpenEmbedded opens (or creates) the store at path.
func OpenEmbedded(path string) (*Embedded, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open embedded room store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(roomsBucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open embedded room store: %w", err)
	}
	return &Embedded{db: db}, nil
}

// Put stores room if its version is newer than the stored one.
func (e *Embedded) Put(ctx context.Context, room Room) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	doc, err := json.Marshal(room)
	if err != nil {
		return fmt.Errorf("encode room: %w", err)
	}
	return e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(roomsBucket)
		if old := b.Get([]byte(room.ID)); old != nil {
			var prev struct{ Version int64 }
			if err := json.Unmarshal(old, &prev); err != nil {
				return fmt.Errorf("decode stored room: %w", err)
			}
			if prev.Version >= room.Version {
				return ErrStale
			}
		}
		return b.Put([]byte(room.ID), doc)
	})
}

// Get reads one room.
func (e *Embedded) Get(ctx context.Context, id string) (Room, bool, error) {
	if err := ctx.Err(); err != nil {
		return Room{}, false, err
	}
	var room Room
	found := false
	err := e.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(roomsBucket).Get([]byte(id))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &room)
	})
	if err != nil {
		return Room{}, false, fmt.Errorf("read room: %w", err)
	}
	return room, found, nil
}

// List scans the store in id order.
func (e *Embedded) List(ctx context.Context, statuses []string, limit int) ([]Room, error) {
	out, err := e.scan(ctx, limit, func(head roomHead) bool { return slices.Contains(statuses, head.Status) })
	if err != nil {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	return out, nil
}

// ListDirty scans the store for rooms marked dirty.
func (e *Embedded) ListDirty(ctx context.Context) ([]Room, error) {
	out, err := e.scan(ctx, 0, func(head roomHead) bool { return head.Dirty })
	if err != nil {
		return nil, fmt.Errorf("list dirty rooms: %w", err)
	}
	return out, nil
}

// roomHead is the part of a stored room scan filters on, decoded first.
type roomHead struct {
	Status string
	Dirty  bool
}

// scan returns, in id order, up to limit (0: all) rooms whose head keep
// accepts.
func (e *Embedded) scan(ctx context.Context, limit int, keep func(roomHead) bool) ([]Room, error) {
	var out []Room
	err := e.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(roomsBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var head roomHead
			if err := json.Unmarshal(v, &head); err != nil {
				return err
			}
			if !keep(head) {
				continue
			}
			var room Room
			if err := json.Unmarshal(v, &room); err != nil {
				return err
			}
			out = append(out, room)
			if limit > 0 && len(out) == limit {
				return nil
			}
		}
		return nil
	})
	return out, err
}

// Expire deletes rooms completed before the cutoff.
func (e *Embedded) Expire(ctx context.Context, before time.Time) (int, error) {
	n := 0
	err := e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(roomsBucket)
		var dead [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var head struct{ CompletedAt time.Time }
			if err := json.Unmarshal(v, &head); err != nil {
				return err
			}
			if !head.CompletedAt.IsZero() && head.CompletedAt.Before(before) {
				dead = append(dead, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range dead {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(dead)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire rooms: %w", err)
	}
	return n, ctx.Err()
}

// Ping checks the file is usable.
func (e *Embedded) Ping(context.Context) error {
	return e.db.View(func(*bolt.Tx) error { return nil })
}

// Close closes the file.
func (e *Embedded) Close() error { return e.db.Close() }
