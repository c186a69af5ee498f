package fallback

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Value types of a room key, as Redis names them.
const (
	TypeString = "string"
	TypeHash   = "hash"
	TypeSet    = "set"
	TypeList   = "list"
	TypeZSet   = "zset"
)

// Member is one sorted-set member.
type Member struct {
	Member []byte
	Score  float64
}

// Value is one key of a room with its type and content. Exactly the field
// of its Type is used.
type Value struct {
	Type   string
	String []byte
	Hash   map[string][]byte
	Set    [][]byte
	List   [][]byte
	ZSet   []Member
	// ExpireAt, when not zero, is when the key expires by a TTL a client
	// gave it (SPEC 4.2: shorter than its room's, it stands), to the
	// millisecond; a key without one lives as long as its room.
	ExpireAt time.Time `json:",omitzero"`
}

// Expired reports whether the key's own TTL has run out at now.
func (v Value) Expired(now time.Time) bool { return !v.ExpireAt.IsZero() && !now.Before(v.ExpireAt) }

// Room is one room document (SPEC 4.5): the room's state, a version that only
// increases, and every key of the room by name.
type Room struct {
	ID          string
	Status      string // waiting, active or completed
	Version     int64
	Keys        map[string]Value
	UpdatedAt   time.Time
	CompletedAt time.Time // zero unless completed
	// Dirty: written while the upstream was unavailable; Redis may hold an
	// older copy until the room is written back to it (re-sync). Kept in the
	// store so that a restarted proxy knows.
	Dirty bool
}

// ErrStale is returned by Put when the store already holds this version of
// the room or a later one: the write lost a race and changed nothing. It is
// not a failure of the store.
var ErrStale = errors.New("fallback: a newer version of the room is stored")

// Store is the durable room store. MongoDB (Mongo) in production, Embedded
// for the zero-configuration mode; both pass the same contract tests.
//
// Put is conditional on the version: it stores room only if the stored
// version is lower (or the room is new), so retries, reordered flushes and
// several proxy instances can never take a room back in time. Writes are
// durable when Put returns nil.
type Store interface {
	Put(ctx context.Context, room Room) error
	// Get returns found == false, and no error, for a room that is not stored.
	Get(ctx context.Context, id string) (room Room, found bool, err error)
	// List returns up to limit rooms whose status is one of statuses,
	// ordered by id; limit <= 0 means no limit.
	List(ctx context.Context, statuses []string, limit int) ([]Room, error)
	// ListDirty returns the rooms marked Dirty.
	ListDirty(ctx context.Context) ([]Room, error)
	// Expire removes completed rooms completed before the cutoff (MongoDB
	// also has a TTL index; FerretDB and the embedded store rely on this).
	Expire(ctx context.Context, before time.Time) (int, error)
	Ping(ctx context.Context) error
	Close() error
}

// sortedNames returns a map's keys in order, so documents are written the
// same way every time.
func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
