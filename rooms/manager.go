// Package rooms applies the room rules (policy) to writes that reach the
// upstream, and keeps rooms durable in the room store (fallback): lifecycle
// writes go to the store before Redis, every key of a room gets the room's
// TTL, and a completed room leaves Redis once the store holds it.
//
// A room's keys are found through an index set in Redis
// (roomproxy:keys:{<id>}), maintained in the same pipeline as each write to
// a room key, so any instance can apply a TTL change to all of them.
//
// Concurrency: Manager is safe for concurrent use. Lifecycle writes of one
// room are serialised by a striped lock held until the client's command has
// reached Redis; the state cache has its own mutex.
package rooms

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/policy"
	"golang.org/x/sync/singleflight"
)

// Exec runs commands upstream in one round trip, in order, over RESP2, and
// returns their replies.
type Exec func(ctx context.Context, cmds [][][]byte) []batch.Reply

// Manager holds the room rules, the store and the cache of room states.
type Manager struct {
	Rules policy.Rules
	store fallback.Store
	exec  Exec
	now   func() time.Time

	locks [256]sync.Mutex // striped by room id: lifecycle writes of one room in order

	mu        sync.Mutex // protects states, refreshed, quiet and sizes
	states    map[string]policy.State
	refreshed map[string]time.Time            // when an active room's keys last had their TTL extended
	quiet     map[string]map[string]time.Time // by room, keys not to restore on a nil read until then (RestoreFor)
	sizes     map[string]*roomBytes           // by room, its size as far as this process knows (size.go)

	flight singleflight.Group // one store read and restore per room at a time

	debounce *Debouncer // nil: state writes are not debounced
	deg      *degraded  // nil: rooms are not served from the store during outages

	lifecycle   atomic.Int64 // lifecycle writes stored
	storeErrors atomic.Int64 // lifecycle writes refused because the store failed
	notLanded   atomic.Int64 // lifecycle writes stored that may not have reached Redis
	restores    atomic.Int64 // rooms restored into Redis (read-through and warm-up)
	restored    atomic.Int64 // keys restored
	sizeChecks  atomic.Int64 // rooms measured to admit a write (size.go)
	tooLarge    atomic.Int64 // writes refused: the room would exceed ROOM_MAX_BYTES
	reloads     atomic.Int64 // script calls sent again as EVAL after NOSCRIPT (scripts.go)
}

// Stats are the room manager's counters since start.
type Stats struct {
	Known, LifecycleWrites, StoreErrors, RoomsRestored, KeysRestored int64
	// SizeChecks counts snapshots read to admit a write against
	// ROOM_MAX_BYTES; TooLarge the writes refused for it.
	SizeChecks, TooLarge int64
	// ScriptReloads counts room script calls the upstream answered NOSCRIPT
	// (its script cache was emptied) and that were sent again as EVAL.
	ScriptReloads int64
	// NotLanded counts lifecycle writes stored whose round trip to Redis
	// failed; their rooms were marked dirty (lifecycleDone).
	NotLanded int64
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	known := int64(len(m.states))
	m.mu.Unlock()
	return Stats{Known: known, LifecycleWrites: m.lifecycle.Load(), StoreErrors: m.storeErrors.Load(),
		RoomsRestored: m.restores.Load(), KeysRestored: m.restored.Load(),
		SizeChecks: m.sizeChecks.Load(), TooLarge: m.tooLarge.Load(), ScriptReloads: m.reloads.Load(),
		NotLanded: m.notLanded.Load()}
}

// New returns a Manager. now may be nil (time.Now).
func New(rules policy.Rules, store fallback.Store, exec Exec, now func() time.Time) *Manager {
	if now == nil {
		now = time.Now
	}
	m := &Manager{Rules: rules, store: store, now: now, states: map[string]policy.State{},
		refreshed: map[string]time.Time{}, quiet: map[string]map[string]time.Time{}, sizes: map[string]*roomBytes{}}
	m.exec = scriptExec(exec, &m.reloads)
	return m
}

// Store is the room store.
func (m *Manager) Store() fallback.Store { return m.store }

// IndexKey is the set that lists a room's keys.
func IndexKey(id string) string { return "roomproxy:keys:{" + id + "}" }

// OwnTTLKey is the set that lists a room's keys whose TTL a client set
// (SPEC 4.2: shorter than the room's, it stands): the room's TTL scripts
// leave a member that still has a TTL alone, and a member that expired is
// not restored from the store. Beside the index, so every instance sees it.
func OwnTTLKey(id string) string { return "roomproxy:ttl:{" + id + "}" }

// ownTTLLua, inside a script, tells whether key k keeps a client's own TTL:
// it is listed in the room's set of such keys (reg) and still has a TTL. A
// listed key without one was written since without a TTL: it leaves the set.
const ownTTLLua = `
local function ownttl(reg, k)
  if redis.call('SISMEMBER', reg, k) == 0 then return false end
  if redis.call('PTTL', k) > 0 then return true end
  redis.call('SREM', reg, k)
  return false
end
`

// regOfLua derives the set of client-TTL keys from the index's name inside
// a script (roomproxy:keys:{id} -> roomproxy:ttl:{id}), for the scripts
// whose KEYS are laid out already.
const regOfLua = `
local function regof(idx) return 'roomproxy:ttl:' .. string.sub(idx, 16) end
`

// ErrStore is what a client is told when a lifecycle write cannot be made
// durable: nothing was written to Redis either.
var ErrStore = errors.New("room store unavailable: the write was not applied")

// MultiStateKeysError refuses a command that writes a room's state key
// together with other keys (MSET, RENAME, COPY, SMOVE, ...): each state
// change is written through on its own.
type MultiStateKeysError struct {
	Command string // upper case
	Prefix  string // the rooms' key prefix (ROOM_KEY_PREFIX)
}

func (e *MultiStateKeysError) Error() string {
	return e.Command + " writes a room's state key (" + e.Prefix + "<id>) together with other keys; write the state key with a command of its own"
}

// ErrMultiRooms refuses a DEL of keys of several rooms at once: each room's
// stored document is updated on its own.
var ErrMultiRooms = errors.New("delete the keys of one room per command")

// ErrReply wraps an error reply from Redis (as opposed to a failed round
// trip): the command reached Redis and Redis refused it.
var ErrReply = errors.New("error reply")

// ErrTooLarge refuses a write that would make a room's keys together larger
// than ROOM_MAX_BYTES (SPEC 4.1); nothing is changed.
var ErrTooLarge = errors.New("room document too large")

// Plan is what a write to room keys needs.
type Plan struct {
	Lifecycle bool
	ID        string       // the room of a lifecycle write
	State     policy.State // its state after the write
	args      [][]byte
	// After are commands to send right after the client's command, hidden
	// from the client: TTLs and the key index for a state write.
	After [][][]byte
}

// deletes reports whether a lifecycle write deletes keys.
func (p Plan) deletes() bool {
	switch strings.ToLower(string(p.args[0])) {
	case "del", "unlink", "getdel":
		return true
	}
	return false
}

// setValue returns the value a SET-family command writes, if it is one.
func setValue(name string, args [][]byte) ([]byte, bool) {
	switch name {
	case "set", "setnx", "getset":
		return args[2], len(args) > 2
	case "setex", "psetex":
		return args[3], len(args) > 3
	}
	return nil, false
}

// clientTTL is what a write command does to its keys' TTL by itself.
type clientTTL struct {
	sets bool // it sets, keeps or removes the TTL (EX, EXPIRE, KEEPTTL, PERSIST, ...)
	// ttl is the TTL it leaves: above 0 that TTL, 0 none (PERSIST), below 0
	// whatever the key had (KEEPTTL, GETEX without an option, a time already
	// past, which deletes the key).
	ttl time.Duration
}

// clientExpiry says what a command does to its key's TTL (SET ...
// EX/PX/EXAT/PXAT/KEEPTTL, SETEX, PSETEX, GETEX, the EXPIRE family,
// PERSIST). SPEC 4.2: the client's TTL stands only when shorter than the
// policy's (own, in TTLFor); a longer one, or none (PERSIST), gets the
// room's TTL after the command.
func clientExpiry(name string, args [][]byte, now time.Time) clientTTL {
	num := func(i int) (int64, bool) {
		if i >= len(args) {
			return 0, false
		}
		n, err := strconv.ParseInt(string(args[i]), 10, 64)
		return n, err == nil
	}
	// after reads a relative or absolute TTL option's value at args[i].
	after := func(opt string, i int) clientTTL {
		n, ok := num(i)
		if !ok {
			return clientTTL{sets: true, ttl: -1} // Redis refuses it: nothing changes
		}
		var d time.Duration
		switch opt {
		case "ex":
			d = time.Duration(n) * time.Second
		case "px":
			d = time.Duration(n) * time.Millisecond
		case "exat":
			d = time.Unix(n, 0).Sub(now)
		case "pxat":
			d = time.UnixMilli(n).Sub(now)
		}
		if d <= 0 {
			return clientTTL{sets: true, ttl: -1}
		}
		return clientTTL{sets: true, ttl: d}
	}
	switch name {
	case "setex", "expire":
		return after("ex", 2)
	case "psetex", "pexpire":
		return after("px", 2)
	case "expireat":
		return after("exat", 2)
	case "pexpireat":
		return after("pxat", 2)
	case "persist":
		return clientTTL{sets: true}
	case "set", "getex":
		first := 3
		if name == "getex" {
			first = 2
		}
		for i := first; i < len(args); i++ {
			switch o := strings.ToLower(string(args[i])); o {
			case "ex", "px", "exat", "pxat":
				return after(o, i+1)
			case "keepttl":
				return clientTTL{sets: true, ttl: -1}
			case "persist":
				return clientTTL{sets: true}
			}
		}
		if name == "getex" {
			return clientTTL{sets: true, ttl: -1} // without an option it changes nothing
		}
	}
	return clientTTL{}
}

// state returns the room's current state: cached, else from the store;
// existed is false for a room the store does not have (it counts as
// waiting).
func (m *Manager) state(ctx context.Context, id string) (s policy.State, existed bool, err error) {
	m.mu.Lock()
	s, ok := m.states[id]
	m.mu.Unlock()
	if ok {
		return s, true, nil
	}
	room, found, err := m.store.Get(ctx, id)
	if err != nil {
		return policy.Waiting, false, err
	}
	if !found {
		return policy.Waiting, false, nil
	}
	s, _ = m.Rules.StateOf(room.Status)
	m.remember(id, s)
	return s, true, nil
}

func (m *Manager) remember(id string, s policy.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.states) > 1<<20 { // bounded: forget everything rather than grow without end
		clear(m.states)
		clear(m.refreshed)
	}
	m.states[id] = s
}

// roomTTLLua, inside a script, gives every key a room's index (idx) lists
// but those keeping a client's own TTL (listed in reg), the index and reg
// the TTL ttl, and returns how many keys the index lists.
const roomTTLLua = ownTTLLua + `
local function roomttl(idx, reg, ttl)
  local ks = redis.call('SMEMBERS', idx)
  for _, k in ipairs(ks) do
    if not ownttl(reg, k) then redis.call('EXPIRE', k, ttl) end
  end
  redis.call('EXPIRE', idx, ttl)
  redis.call('EXPIRE', reg, ttl)
  return #ks
end
`

// refreshScript extends the TTL of every key of a room but those keeping a
// client's own TTL: KEYS[1] is the room's index, KEYS[2] its set of
// client-TTL keys, ARGV[1] the TTL in seconds.
const refreshScript = roomTTLLua + `return roomttl(KEYS[1], KEYS[2], ARGV[1])`

// indexTTLScript adds the room's state key (KEYS[2]) to its index (KEYS[1])
// and gives every indexed key but those keeping a client's own TTL (listed
// in KEYS[3]), the index and that set the TTL ARGV[1], in one call.
const indexTTLScript = roomTTLLua + `
redis.call('SADD', KEYS[1], KEYS[2])
return roomttl(KEYS[1], KEYS[3], ARGV[1])
`

// keyTTLScript puts one key of a room (KEYS[3]) in the room's index
// (KEYS[1]) and gives the index the room's TTL ARGV[1]; the key gets it
// too, unless the command just run set the key's own TTL shorter than the
// room's (ARGV[2] 'own': the key joins the set of client-TTL keys, KEYS[2]),
// left its TTL as it was on purpose ('keep': KEEPTTL, GETEX without an
// option), or an earlier command set it and it still holds (mode empty).
// 'room': the command set a TTL no shorter than the room's, or none
// (PERSIST): the key gets the room's TTL and leaves the set. One call
// instead of SADD, EXPIRE and EXPIRE.
const keyTTLScript = ownTTLLua + `
redis.call('SADD', KEYS[1], KEYS[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[2] == 'keep' then return 0 end
if ARGV[2] == 'own' then
  redis.call('SADD', KEYS[2], KEYS[3])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
  return 0
end
if ARGV[2] == 'room' then
  redis.call('SREM', KEYS[2], KEYS[3])
elseif ownttl(KEYS[2], KEYS[3]) then
  return 0
end
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 1
`

// Touch is called for every command on a room key. For an active room it
// returns, at most once per refresh interval, a command that extends the TTL
// of all the room's keys (the sliding TTL of SPEC 4.2); otherwise nil. It
// never reads the store: a room whose state this process does not know yet
// is not refreshed.
func (m *Manager) Touch(id string) [][]byte {
	now := m.now()
	m.mu.Lock()
	s, known := m.states[id]
	if !known || !m.Rules.RefreshDue(s, m.refreshed[id], now) {
		m.mu.Unlock()
		return nil
	}
	m.refreshed[id] = now
	m.mu.Unlock()
	return evalsha(refreshScript, []byte("2"), []byte(IndexKey(id)), []byte(OwnTTLKey(id)), seconds(m.Rules.TTLActive))
}

// RoomOf is the room of a key, if it belongs to one.
func (m *Manager) RoomOf(key []byte) (string, bool) {
	id, _, ok := policy.RoomOf(key, m.Rules.Prefix)
	return string(id), ok
}

// Plan decides how a write command touching room keys is carried. name is
// the lower-case command name; keys are the command's keys.
func (m *Manager) Plan(ctx context.Context, name string, args [][]byte, keys [][]byte) (Plan, error) {
	stateKeys := 0
	var p Plan
	size := 0
	for _, a := range args[1:] {
		size += len(a)
	}
	if size > m.Rules.MaxBytes {
		m.tooLarge.Add(1)
		return Plan{}, ErrTooLarge // no room can hold this write's data
	}
	for _, k := range keys {
		if _, state, ok := policy.RoomOf(k, m.Rules.Prefix); ok && state {
			stateKeys++
		}
	}
	if stateKeys > 0 && len(keys) > 1 && name != "del" && name != "unlink" {
		return Plan{}, &MultiStateKeysError{Command: strings.ToUpper(name), Prefix: m.Rules.Prefix}
	}
	if name == "del" || name == "unlink" || (name == "getdel" && stateKeys == 0) {
		// Deleting room keys changes the stored room: the store forgets them
		// first, so they are never read back from it.
		var id []byte
		for _, k := range keys {
			kid, _, ok := policy.RoomOf(k, m.Rules.Prefix)
			if !ok {
				continue
			}
			if id != nil && string(kid) != string(id) {
				return Plan{}, ErrMultiRooms
			}
			id = kid
		}
		before, _, err := m.state(ctx, string(id))
		if err != nil {
			return Plan{}, fmt.Errorf("%w (%v)", ErrStore, err)
		}
		if stateKeys > 0 {
			before = policy.Waiting // the room has no readable status any more
		}
		return Plan{Lifecycle: true, ID: string(id), State: before, args: args}, nil
	}
	if stateKeys == 1 {
		id, _, _ := policy.RoomOf(keys[0], m.Rules.Prefix)
		before, existed, err := m.state(ctx, string(id))
		if err != nil {
			// Whether this write changes the room's state cannot be known:
			// refuse it rather than risk Redis running ahead of the store.
			return Plan{}, fmt.Errorf("%w (%v)", ErrStore, err)
		}
		after, deleting, changes := m.effect(name, args, before)
		// Any write to the state key of a room the store does not have
		// creates the room.
		if (changes || !existed) && policy.Classify(existed, before, after, deleting) == policy.LifecycleWrite {
			return Plan{Lifecycle: true, ID: string(id), State: after, args: args}, nil
		}
	}
	// A state write: each key of a room joins its index and gets its TTL.
	p.After = m.ttlFor(ctx, keys, clientExpiry(name, args, m.now()))
	return p, nil
}

// TTLFor returns the commands that put room keys in their room's index and
// give them the room's TTL (unless own: the command set its TTL itself, no
// longer than the room's). Used for script keys.
func (m *Manager) TTLFor(ctx context.Context, keys [][]byte, own bool) [][][]byte {
	c := clientTTL{}
	if own {
		c = clientTTL{sets: true, ttl: -1}
	}
	return m.ttlFor(ctx, keys, c)
}

// ttlFor is TTLFor for a command that does c to its keys' TTL: state writes
// and writes queued in MULTI.
func (m *Manager) ttlFor(ctx context.Context, keys [][]byte, c clientTTL) [][][]byte {
	var after [][][]byte
	for _, k := range keys {
		id, _, ok := policy.RoomOf(k, m.Rules.Prefix)
		if !ok {
			continue
		}
		s, _, _ := m.state(ctx, string(id)) // store down: the waiting TTL, the shorter one
		secs := seconds(m.ttlOf(s))
		// The client's own TTL stands when it is shorter than the room's
		// (Rules.ClientTTL; an equal one is the same TTL).
		var mode []byte
		switch {
		case c.sets && c.ttl < 0:
			mode = []byte("keep")
		case c.sets && c.ttl > 0 && m.Rules.ClientTTL(s, c.ttl) == c.ttl:
			mode = []byte("own")
		case c.sets:
			mode = []byte("room")
		}
		after = append(after, evalsha(keyTTLScript, []byte("3"),
			[]byte(IndexKey(string(id))), []byte(OwnTTLKey(string(id))), k, secs, mode))
	}
	return after
}

// effect says what a command does to the room's state key: the state after
// it, whether it deletes the key, and whether it can change the state at all.
func (m *Manager) effect(name string, args [][]byte, before policy.State) (policy.State, bool, bool) {
	if v, ok := setValue(name, args); ok {
		s, _ := m.Rules.StateFromJSON(v)
		return s, false, true
	}
	switch name {
	case "del", "unlink", "getdel":
		return policy.Waiting, true, true
	case "hset", "hmset", "hsetnx":
		for i := 2; i+1 < len(args); i += 2 {
			if string(args[i]) == m.Rules.StatusField {
				s, _ := m.Rules.StateOf(string(args[i+1]))
				return s, false, true
			}
		}
	case "hdel":
		for _, f := range args[2:] {
			if string(f) == m.Rules.StatusField {
				return policy.Waiting, false, true
			}
		}
	}
	return before, false, false
}

// Apply carries out a lifecycle write's durable part: it reads the room from
// Redis, applies the client's command to that snapshot, and writes it to the
// store with the next version. It returns the commands to send after the
// client's command (TTLs, or deleting a completed room's keys) and a done
// function to call once their round trip has ended, saying whether it
// reached Redis (see lifecycleDone). On error nothing is held and nothing
// must be sent.
func (m *Manager) Apply(ctx context.Context, p Plan) (after [][][]byte, done func(landed bool), err error) {
	mu := m.lock(p.ID)
	mu.Lock()
	defer func() {
		if err != nil {
			mu.Unlock()
		}
	}()
	// Writes acknowledged before this one reach Redis first, so the snapshot
	// has them and they cannot land after a completed room is deleted.
	var covered int
	var keys map[string]fallback.Value
	if m.Down() {
		return nil, nil, errDown // the caller serves the write from the store
	}
	since := m.landedOf(p.ID)
	covered, keys, err = m.flushedSnapshot(ctx, p.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("read room %s: %w", p.ID, err)
	}
	stateKey := m.Rules.Prefix + p.ID
	before := roomSize(keys)
	applyToSnapshot(keys, stateKey, strings.ToLower(string(p.args[0])), p.args)
	if !m.storable(p.State, before, roomSize(keys)) {
		m.tooLarge.Add(1)
		return nil, nil, ErrTooLarge
	}
	room := fallback.Room{ID: p.ID, Status: p.State.String(), Keys: keys, UpdatedAt: m.now()}
	if p.State == policy.Completed {
		room.CompletedAt = room.UpdatedAt
	}
	if err := m.put(ctx, &room); err != nil {
		return nil, nil, err
	}
	m.lifecycle.Add(1)
	m.remember(p.ID, p.State)
	if p.State == policy.Completed {
		m.forgetSize(p.ID)
	} else {
		m.rebase(p.ID, keys, since)
	}
	if m.debounce != nil {
		// The stored document is this snapshot. Hash field lists stay valid
		// unless the write deleted keys.
		m.debounce.forgetRoom(p.ID, covered, p.State == policy.Completed || p.deletes())
	}
	m.mu.Lock()
	m.refreshed[p.ID] = m.now()
	m.mu.Unlock()
	idx := []byte(IndexKey(p.ID))
	if p.State == policy.Completed {
		del := [][]byte{[]byte("DEL"), idx, []byte(OwnTTLKey(p.ID))}
		for k := range keys {
			del = append(del, []byte(k))
		}
		if _, ok := keys[stateKey]; !ok {
			del = append(del, []byte(stateKey))
		}
		return [][][]byte{del}, m.lifecycleDone(p.ID, mu), nil
	}
	ttl, _ := m.Rules.TTL(p.State)
	after = append(after, evalsha(indexTTLScript, []byte("3"), idx, []byte(stateKey), []byte(OwnTTLKey(p.ID)), seconds(ttl)))
	return after, m.lifecycleDone(p.ID, mu), nil
}

// lifecycleDone ends a lifecycle write under its room's lock. When the round
// trip that carried it to Redis failed (a timeout, a dropped connection, the
// breaker opening: Redis may or may not have it) the store has the room and
// Redis may hold the copy before it, which would be served and could even
// go back into the store with the next snapshot. So the room is marked dirty,
// in the store too (a restart must not trust Redis's copy): it is served
// from the store until the re-sync writes it back (SPEC 4.5, "a failed Redis
// write").
func (m *Manager) lifecycleDone(id string, mu *sync.Mutex) func(landed bool) {
	return func(landed bool) {
		defer mu.Unlock()
		if landed || !m.Degradable() {
			return
		}
		m.notLanded.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), notLandedTimeout)
		defer cancel()
		if room, found, err := m.store.Get(ctx, id); err == nil && found && !room.Dirty {
			room.Dirty = true
			// A failed put is counted by put; the room is still dirty in
			// memory below, so this process serves the store's copy.
			_ = m.put(ctx, &room)
		}
		m.markDirty(id)
	}
}

// notLandedTimeout bounds marking a room dirty in the store after its
// lifecycle write failed to reach Redis.
const notLandedTimeout = 5 * time.Second

// put stores room with the version after the stored one, retrying when
// another writer stored a newer one meanwhile (the version guard).
func (m *Manager) put(ctx context.Context, room *fallback.Room) error {
	m.mu.Lock()
	delete(m.quiet, room.ID) // the stored room changes: a nil read may find it again
	m.mu.Unlock()
	for attempt := 0; ; attempt++ {
		stored, _, err := m.store.Get(ctx, room.ID)
		if err != nil {
			m.storeErrors.Add(1)
			return fmt.Errorf("%w (%v)", ErrStore, err)
		}
		room.Version = stored.Version + 1
		err = m.store.Put(ctx, *room)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fallback.ErrStale) || attempt == 2 {
			m.storeErrors.Add(1)
			return fmt.Errorf("%w (%v)", ErrStore, err)
		}
	}
}

func (m *Manager) lock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &m.locks[h.Sum32()%uint32(len(m.locks))]
}

// snapshotLua is a Lua function returning every key of a room with its type,
// value and own TTL: name, type, value, pttl, ... for keys that exist. pttl
// is the key's remaining TTL in milliseconds when it is a client's own (the
// key is listed in reg, the room's set of such keys, or reg is true: every
// TTL is, on the scratch server of an outage), else -1. It reads keys the
// index lists (not declared in KEYS: one Redis or Upstash database, not a
// cluster).
const snapshotLua = `
local function snapshot(idx, statekey, reg)
  local names = {statekey}
  for _, k in ipairs(redis.call('SMEMBERS', idx)) do
    if k ~= statekey then names[#names+1] = k end
  end
  local out = {}
  for _, k in ipairs(names) do
    local t = redis.call('TYPE', k)
    if type(t) == 'table' then t = t.ok end
    local v
    if t == 'string' then v = redis.call('GET', k)
    elseif t == 'hash' then v = redis.call('HGETALL', k)
    elseif t == 'set' then v = redis.call('SMEMBERS', k)
    elseif t == 'list' then v = redis.call('LRANGE', k, 0, -1)
    elseif t == 'zset' then v = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
    end
    if v then
      local px = -1
      if reg == true or (reg and redis.call('SISMEMBER', reg, k) == 1) then px = redis.call('PTTL', k) end
      out[#out+1] = k; out[#out+1] = t; out[#out+1] = v; out[#out+1] = px
    end
  end
  return out
end
`

// snapshotScript reads a room in one call (one billed command): KEYS[1] is
// the room's index, KEYS[2] its state key.
const snapshotScript = snapshotLua + regOfLua + `return snapshot(KEYS[1], KEYS[2], regof(KEYS[1]))`

// flushedSnapshot reads room id's snapshot with its pending writes flushed
// first, in the same call (without debouncing there are none); covered is
// as for Debouncer.flushLocked. The caller holds the room's lock.
func (m *Manager) flushedSnapshot(ctx context.Context, id string) (covered int, keys map[string]fallback.Value, err error) {
	if m.debounce != nil {
		return m.debounce.flushLocked(ctx, id, true)
	}
	keys, err = m.snapshot(ctx, id)
	return 0, keys, err
}

// snapshot reads every key of the room from Redis, by type.
func (m *Manager) snapshot(ctx context.Context, id string) (map[string]fallback.Value, error) {
	stateKey := m.Rules.Prefix + id
	r := m.exec(ctx, [][][]byte{{[]byte("EVAL"), []byte(snapshotScript), []byte("2"), []byte(IndexKey(id)), []byte(stateKey)}})
	all, err := reply(r[0])
	if err != nil {
		return nil, err
	}
	return parseSnapshot(all, m.now()), nil
}

// parseSnapshot reads snapshotLua's reply, read at now: a key's own TTL
// becomes its ExpireAt.
func parseSnapshot(all value, now time.Time) map[string]fallback.Value {
	out := map[string]fallback.Value{}
	for i := 0; i+3 < len(all.items); i += 4 {
		name, kind, v := string(all.items[i].str), string(all.items[i+1].str), all.items[i+2]
		val := fallback.Value{Type: kind}
		if px := all.items[i+3].num; px > 0 {
			val.ExpireAt = now.Add(time.Duration(px) * time.Millisecond).Truncate(time.Millisecond)
		}
		switch kind {
		case fallback.TypeString:
			val.String = v.str
		case fallback.TypeHash:
			val.Hash = map[string][]byte{}
			for j := 0; j+1 < len(v.items); j += 2 {
				val.Hash[string(v.items[j].str)] = v.items[j+1].str
			}
		case fallback.TypeSet:
			for _, it := range v.items {
				val.Set = append(val.Set, it.str)
			}
		case fallback.TypeList:
			for _, it := range v.items {
				val.List = append(val.List, it.str)
			}
		case fallback.TypeZSet:
			for j := 0; j+1 < len(v.items); j += 2 {
				score, _ := strconv.ParseFloat(string(v.items[j+1].str), 64)
				val.ZSet = append(val.ZSet, fallback.Member{Member: v.items[j].str, Score: score})
			}
		default:
			continue
		}
		out[name] = val
	}
	return out
}

// TTL applies seconds to every key of the room (ROOM.TTL); it returns how
// many keys exist.
func (m *Manager) TTL(ctx context.Context, id string, seconds int64) (int64, error) {
	keys, err := m.snapshot(ctx, id)
	if err != nil {
		return 0, err
	}
	secs := []byte(strconv.FormatInt(seconds, 10))
	cmds := [][][]byte{{[]byte("EXPIRE"), []byte(IndexKey(id)), secs}}
	for k := range keys {
		cmds = append(cmds, [][]byte{[]byte("EXPIRE"), []byte(k), secs})
	}
	for _, r := range m.exec(ctx, cmds) {
		if _, err := reply(r); err != nil {
			return 0, err
		}
	}
	return int64(len(keys)), nil
}

// KeyTTL is the remaining TTL of one key in seconds (-2: missing, -1: none).
func (m *Manager) KeyTTL(ctx context.Context, key string) (int64, error) {
	v, err := reply(m.exec(ctx, [][][]byte{{[]byte("TTL"), []byte(key)}})[0])
	return v.num, err
}

// seconds is a TTL as a command argument.
func seconds(d time.Duration) []byte {
	return strconv.AppendInt(nil, int64(d/time.Second), 10)
}

// storable reports whether a write that leaves a room in state s, taking
// it from before to after bytes, may be stored: it fits in ROOM_MAX_BYTES,
// or it does not make the room any larger. A room can be over the limit
// already (grown by what the size ledger does not see: scripts, COPY,
// another instance); a write that does not add to it, such as one that
// deletes keys, is stored all the same, so that the room can be made
// smaller. The write that completes a room is not checked at all (its own
// data is bounded by Plan): refusing it would strand the game's final
// state in Redis, never stored.
func (m *Manager) storable(s policy.State, before, after int) bool {
	return s == policy.Completed || after <= m.Rules.MaxBytes || after <= before
}

// roomSize is the bytes of a room's keys and values.
func roomSize(keys map[string]fallback.Value) int {
	n := 0
	for k, v := range keys {
		n += keySize(k, v)
	}
	return n
}

// keySize is what one key adds to its room's size: its name and its data.
func keySize(k string, v fallback.Value) int {
	n := len(k) + len(v.String)
	for f, x := range v.Hash {
		n += len(f) + len(x)
	}
	for _, x := range v.Set {
		n += len(x)
	}
	for _, x := range v.List {
		n += len(x)
	}
	for _, z := range v.ZSet {
		n += len(z.Member) + 8
	}
	return n
}

// reply parses one upstream reply; transport and error replies are errors.
func reply(r batch.Reply) (value, error) {
	if r.Err != nil {
		return value{}, r.Err
	}
	v, err := parse(r.Raw)
	if err == nil && v.kind == '-' {
		err = fmt.Errorf("%w: %s", ErrReply, v.str)
	}
	return v, err
}

// applyToSnapshot applies the client's command on the state key to the
// snapshot, so the stored document is the room as it is after the write.
func applyToSnapshot(keys map[string]fallback.Value, stateKey, name string, args [][]byte) {
	if v, ok := setValue(name, args); ok {
		keys[stateKey] = fallback.Value{Type: fallback.TypeString, String: append([]byte(nil), v...)}
		return
	}
	switch name {
	case "del", "unlink", "getdel":
		for _, k := range args[1:] {
			delete(keys, string(k))
		}
	case "hset", "hmset", "hsetnx":
		h := keys[stateKey]
		if h.Type != fallback.TypeHash {
			h = fallback.Value{Type: fallback.TypeHash, Hash: map[string][]byte{}}
		}
		for i := 2; i+1 < len(args); i += 2 {
			if _, exists := h.Hash[string(args[i])]; name == "hsetnx" && exists {
				continue
			}
			h.Hash[string(args[i])] = append([]byte(nil), args[i+1]...)
		}
		keys[stateKey] = h
	case "hdel":
		if h := keys[stateKey]; h.Type == fallback.TypeHash {
			for _, f := range args[2:] {
				delete(h.Hash, string(f))
			}
		}
	}
}
