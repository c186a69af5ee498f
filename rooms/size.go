package rooms

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/policy"
)

// Room size (SPEC 4.1): a room's keys together may hold at most
// ROOM_MAX_BYTES, and a write that would take a room over it is refused
// before it changes anything. A lifecycle write measures the room on the
// snapshot it stores; every other write to a room is admitted against a
// ledger of the room's size kept by this process:
//
//   - base is the room's size as measured on the last snapshot this process
//     read (a lifecycle write's, a periodic persist's, or one taken to check
//     a write), kept exact since through the string writes admitted (SET,
//     SETEX, MSET, ...: their new values replace the key's known old data,
//     whatever its type);
//   - grown is the most that the other writes admitted since can have added
//     (policy.WriteGrowth: their arguments, plus what a counter or SETRANGE
//     can add beyond them).
//
// A write admitted but not yet in Redis when a snapshot's read begins may
// or may not be in it: it stays counted in grown after the rebase. The
// ledger keeps two running totals, the growth admitted and the growth
// landed (the caller calls Land once the write has reached Redis, or will
// not be sent); landed is read when the snapshot's read begins, and grown
// after the rebase is what was admitted beyond it.
//
// A write whose growth fits under the limit on top of base+grown is admitted
// without I/O. One that does not is checked on a fresh snapshot (the room's
// pending writes flushed and its keys read in one call) unless the ledger
// is already exact (nothing but unconditional string writes since a
// snapshot less than sizeFresh old): a room near its limit pays one
// snapshot per admitted write of unknown effect, and a full room at most one
// a second.
//
// What the ledger cannot see: writes of other instances, keys that expire on
// a client's shorter TTL (both corrected by the next snapshot), commands
// whose growth their arguments do not give (COPY, RENAME, *STORE, LMOVE,
// scripts: admitted, and seen by the next snapshot, which the room's
// periodic persist takes within PERSIST_INTERVAL). A write must be landed
// only once it is sent (or held in the debouncer's pending set, which every
// snapshot flushes first): landed earlier, a snapshot that lacks it would
// count it as there.

// sizeFresh is how long a measured ledger with no unknown growth since is
// trusted to refuse a write without measuring again.
const sizeFresh = time.Second

// maxLedgers bounds the ledgers kept (a room that expires in Redis leaves
// its ledger behind); beyond it they are all forgotten and the rooms are
// measured again on their next writes. A ledger is a few hundred bytes.
const maxLedgers = 1 << 17

// roomBytes is what this process knows of one room's size.
type roomBytes struct {
	base     int            // measured size, with string writes since
	grown    int            // most that other writes admitted since added
	admitted int            // running total of growth admitted (see rebase)
	landed   int            // running total of admitted growth in Redis
	keys     map[string]int // each key's size (name and data) as measured, or as a string write set it
	approx   bool           // a conditional string write since may not have happened: base may be high
	measured time.Time
}

// landedOf is room id's running total of landed growth, read before a
// snapshot of the room is: the since of rebase.
func (m *Manager) landedOf(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.sizes[id]; r != nil {
		return r.landed
	}
	return 0
}

// rebase records room id's size measured on keys, a snapshot of it whose
// read began when the room's landed total was since (landedOf): what was
// admitted beyond that stays counted, as it may have missed the snapshot.
func (m *Manager) rebase(id string, keys map[string]fallback.Value, since int) {
	r := &roomBytes{keys: make(map[string]int, len(keys)), measured: m.now()}
	for k, v := range keys {
		n := keySize(k, v)
		r.keys[k] = n
		r.base += n
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.sizes[id]; old != nil {
		r.admitted, r.landed = old.admitted, old.landed
		r.grown = max(old.admitted-since, 0)
	} else if len(m.sizes) >= maxLedgers {
		clear(m.sizes)
	}
	m.sizes[id] = r
}

// forgetSize drops room id's ledger: the room left Redis, or changed where
// the ledger does not follow (served from the store during an outage).
func (m *Manager) forgetSize(id string) {
	m.mu.Lock()
	delete(m.sizes, id)
	m.mu.Unlock()
}

// Admitted is the growth AdmitWrite counted for one write, by room. The
// caller passes it to Land once the write has reached Redis, or will not be
// sent; until then the rooms' ledgers keep it counted through snapshots.
type Admitted struct {
	id   string
	n    int
	more []roomGrowth // the rooms after the first (MSET across rooms)
}

type roomGrowth struct {
	id string
	n  int
}

func (a *Admitted) add(id string, n int) {
	if n <= 0 {
		return
	}
	if a.id == "" {
		a.id, a.n = id, n
		return
	}
	a.more = append(a.more, roomGrowth{id, n})
}

// AdmitWrite decides whether a write to room keys that keeps the rooms'
// states (not a lifecycle write: Apply measures those) fits in
// ROOM_MAX_BYTES, and if so counts it in the rooms' ledgers. It returns
// ErrTooLarge for a write that would take a room over the limit, and
// otherwise what it counted, for Land. When a room must be measured, before
// is called first (once): the caller sends what it holds for Redis, so the
// snapshot includes its own earlier writes and it holds no room's lock.
func (m *Manager) AdmitWrite(ctx context.Context, name string, args, keys [][]byte, before func()) (Admitted, error) {
	var a Admitted
	g, bound := policy.WriteGrowth(name, args)
	var buf [2]policy.StringWrite
	ws := buf[:0]
	switch g {
	case policy.GrowthNone, policy.GrowthUnknown:
		return a, nil
	case policy.GrowthStrings:
		var ok bool
		if ws, ok = policy.StringWrites(ws, name, args); !ok {
			return a, nil // Redis refuses it
		}
	}
	var seen [4]string
	ids := seen[:0]
	for _, k := range keys {
		id, _, ok := policy.RoomOf(k, m.Rules.Prefix)
		if !ok || slices.Contains(ids, string(id)) {
			continue
		}
		ids = append(ids, string(id))
	}
	for _, id := range ids {
		n, fits, fresh := m.fits(id, g, bound, ws)
		if !fits && !fresh {
			if before != nil {
				before()
				before = nil
			}
			if err := m.measure(ctx, id); err != nil {
				m.Land(a)
				return Admitted{}, fmt.Errorf("measure room %s: %w", id, err)
			}
			n, fits, _ = m.fits(id, g, bound, ws)
		}
		if !fits {
			m.Land(a) // the rooms before it will not get it
			m.tooLarge.Add(1)
			return Admitted{}, ErrTooLarge
		}
		a.add(id, n)
	}
	return a, nil
}

// Empty reports whether nothing was counted (nothing to land).
func (a Admitted) Empty() bool { return a.id == "" }

// Land records that an admitted write has reached Redis (or will not be
// sent): snapshots read from now on have it.
func (m *Manager) Land(a Admitted) {
	if a.id == "" {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	land := func(id string, n int) {
		if r := m.sizes[id]; r != nil {
			r.landed = min(r.landed+n, r.admitted)
		}
	}
	land(a.id, a.n)
	for _, g := range a.more {
		land(g.id, g.n)
	}
}

// fits reports whether a write fits in room id's ledger, and if so counts
// it there and returns the growth it counted (n); fresh reports whether a
// ledger that refused it is exact (recent, and no unknown growth since), so
// that measuring again cannot change the answer.
func (m *Manager) fits(id string, g policy.Growth, bound int, ws []policy.StringWrite) (n int, fits, fresh bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.sizes[id]
	if r == nil {
		return 0, false, false
	}
	add := bound
	if g == policy.GrowthStrings {
		add = 0
		for _, w := range ws {
			if kid, _, ok := policy.RoomOf(w.Key, m.Rules.Prefix); ok && string(kid) == id {
				add += stringDelta(r, w)
			}
		}
	}
	if add > 0 && r.base+r.grown+add > m.Rules.MaxBytes {
		return 0, false, r.grown == 0 && !r.approx && m.now().Sub(r.measured) < sizeFresh
	}
	if g != policy.GrowthStrings {
		r.grown += bound
		r.admitted += bound
		return bound, true, false
	}
	for _, w := range ws {
		if kid, _, ok := policy.RoomOf(w.Key, m.Rules.Prefix); ok && string(kid) == id {
			d := stringDelta(r, w)
			r.base += d
			r.admitted += max(d, 0)
			n += max(d, 0)
			size := len(w.Key) + len(w.Value)
			if w.Conditional {
				r.approx = true // NX/XX: it may leave the old value, or none
				size = max(size, r.keys[string(w.Key)])
			}
			if old, ok := r.keys[string(w.Key)]; !ok || old != size {
				r.keys[string(w.Key)] = size // allocates the key: only when it changes
			}
		}
	}
	return n, true, false
}

// stringDelta is what a string write changes in the room's size: the new
// value replaces the key's known old data (of any type: SET replaces a hash
// too; a key not known counts as new); a conditional write may leave the
// old data, so it never shrinks.
func stringDelta(r *roomBytes, w policy.StringWrite) int {
	d := len(w.Key) + len(w.Value) - r.keys[string(w.Key)]
	if w.Conditional && d < 0 {
		return 0
	}
	return d
}

// measure reads room id's snapshot (its pending writes flushed first, in
// the same call) and rebases its ledger on it.
func (m *Manager) measure(ctx context.Context, id string) error {
	mu := m.lock(id)
	mu.Lock()
	defer mu.Unlock()
	since := m.landedOf(id)
	_, keys, err := m.flushedSnapshot(ctx, id)
	if err != nil {
		return err
	}
	m.sizeChecks.Add(1)
	m.rebase(id, keys, since)
	return nil
}
