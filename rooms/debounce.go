package rooms

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/policy"
)

// Debouncing (SPEC 4.4): state writes to room keys are acknowledged at once
// and kept in a pending set; the upstream gets at most one write per room per
// window, all of a room's due keys in one script call, and the store gets the
// room's snapshot at most every PersistInterval or PersistEveryN writes.
// With debouncing off (a negative window) nothing is held: the debouncer
// only counts the writes to each room and stores the room's snapshots on
// the same schedule (Persisting), so that they reach the store all the same.
//
// Locking: d.mu protects the pending set and is held only for map work, never
// across I/O. A room's flush, persist and lifecycle write run under the room's
// striped lock (Manager.lock), so the three never interleave for one room and
// the store never sees a room go back in time.

// DebounceConfig configures the debouncer. Zero fields take their defaults.
type DebounceConfig struct {
	Window          time.Duration // DEBOUNCE_WINDOW_MS, default 500 ms; negative turns debouncing off
	PersistInterval time.Duration // PERSIST_INTERVAL_MS, default 5 s
	PersistEveryN   int           // PERSIST_EVERY_N, default 100
	MaxRooms        int           // PENDING_MAX_ROOMS, default 10000
	MaxBytes        int           // PENDING_MAX_BYTES, default 64 MiB
	// OnFlush, if set, is called after each room flush to Redis with its
	// duration and the age of the oldest write it carried (how long an
	// acknowledged write was held only by this process: the kill -9 loss).
	OnFlush func(took, age time.Duration)
	Logger  *slog.Logger
}

func (c DebounceConfig) withDefaults() DebounceConfig {
	if c.Window == 0 {
		c.Window = 500 * time.Millisecond
	}
	if c.PersistInterval <= 0 {
		c.PersistInterval = 5 * time.Second
	}
	if c.PersistEveryN <= 0 {
		c.PersistEveryN = 100
	}
	if c.MaxRooms <= 0 {
		c.MaxRooms = 10000
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// pendingKey is one key's writes not yet in Redis: a whole string value, or
// hash fields.
type pendingKey struct {
	room   string
	hash   bool
	str    []byte
	expire time.Time // the client's own expiry of a string (SET EX, SETEX); zero: the policy's
	fields map[string]pendingField
	seq    uint64    // the last write
	sent   uint64    // the last write Redis has: writes up to it are held until the store has them too
	since  time.Time // ack time of the oldest write not yet sent; zero while all are in flight
	bytes  int
}

type pendingField struct {
	val []byte
	seq uint64
}

// pendingRoom is a room with writes not yet in Redis or not yet stored.
type pendingRoom struct {
	keys      map[string]*pendingKey
	lastFlush time.Time
	writes    int       // writes since the last snapshot was stored
	firstSeen time.Time // the first of those
	persisted time.Time // when the last snapshot was stored
}

// DebounceStats are the debouncer's counters and gauges.
type DebounceStats struct {
	Coalesced, WriteThrough, Flushes, FlushedKeys, FlushErrors, Overruns int64
	Snapshots, SnapshotErrors, PendingReads                              int64
	PendingRooms, PendingKeys, PendingBytes                              int64
	MaxAgeMs                                                             int64 // the oldest write a flush carried, since start
}

// Debouncer is the pending set and its flusher.
type Debouncer struct {
	m   *Manager
	cfg DebounceConfig

	mu    sync.Mutex
	keys  map[string]*pendingKey
	rooms map[string]*pendingRoom
	known map[string]map[string]*knownFields // by room, then hash key: fields known, for HSET replies without asking Redis
	bytes int
	seq   uint64

	coalesced, writeThrough, flushes, flushedKeys, flushErrors, overruns atomic.Int64
	snapshots, snapshotErrors, maxAgeMs, pendingReads                    atomic.Int64
	warned                                                               atomic.Int64 // unix ns of the last failure warning
}

type knownFields struct {
	fields map[string]struct{}
	at     time.Time
}

// knownLife is how long a hash's field list is trusted after its last write:
// well under any room TTL, so an expired hash is never taken for a live one.
const knownLife = 60 * time.Second

// NewDebouncer returns the debouncer of m; m's lifecycle writes flush through
// it. Run must be called for writes to reach Redis.
func (m *Manager) NewDebouncer(cfg DebounceConfig) *Debouncer {
	d := &Debouncer{m: m, cfg: cfg.withDefaults(), keys: map[string]*pendingKey{},
		rooms: map[string]*pendingRoom{}, known: map[string]map[string]*knownFields{}}
	m.debounce = d
	return d
}

// Enabled reports whether state writes are debounced.
func (d *Debouncer) Enabled() bool { return d != nil && d.cfg.Window > 0 }

// Persisting reports whether rooms' snapshots are stored every
// PersistInterval or PersistEveryN writes: with debouncing on or off
// (SPEC 4.3: a write that is not a lifecycle write reaches the store with
// the room's next snapshot), as long as there is a debouncer.
func (d *Debouncer) Persisting() bool { return d != nil }

// gap is the least time between two snapshots (or two tries) of one room:
// the window, or persistGap with debouncing off.
func (d *Debouncer) gap() time.Duration {
	if d.cfg.Window > 0 {
		return d.cfg.Window
	}
	return persistGap
}

// persistGap is gap with debouncing off.
const persistGap = 500 * time.Millisecond

// Window is the debounce window.
func (d *Debouncer) Window() time.Duration { return d.cfg.Window }

// admit reports whether room id may take add more bytes of debounced writes
// now: the room is not completed, and the pending set has room. Called with
// d.mu held.
func (d *Debouncer) admit(id string, add int) bool {
	d.m.mu.Lock()
	s, known := d.m.states[id]
	d.m.mu.Unlock()
	if known && s == policy.Completed {
		return false
	}
	if d.bytes+add > d.cfg.MaxBytes {
		return false
	}
	if _, ok := d.rooms[id]; !ok && len(d.rooms) >= d.cfg.MaxRooms {
		return false
	}
	return true
}

func (d *Debouncer) roomLocked(id string, now time.Time) *pendingRoom {
	r := d.rooms[id]
	if r == nil {
		r = &pendingRoom{keys: map[string]*pendingKey{}}
		d.rooms[id] = r
	}
	if r.writes == 0 {
		r.firstSeen = now
	}
	r.writes++
	return r
}

func (d *Debouncer) keyLocked(r *pendingRoom, id, key string, hash bool, now time.Time) *pendingKey {
	k := d.keys[key]
	if k == nil || k.hash != hash {
		if k != nil { // a string replaced by a hash or back: only one kind is pending
			d.bytes -= k.bytes
		}
		k = &pendingKey{room: id, hash: hash}
		d.keys[key] = k
		r.keys[key] = k
	}
	d.seq++
	k.seq = d.seq
	if k.since.IsZero() {
		k.since = now
	}
	return k
}

// StringWrite is one string value of a debounced write.
type StringWrite struct {
	Room, Key string
	Value     []byte
	TTL       time.Duration // the client's own TTL (SET EX, SETEX); 0 for none
}

// SetStrings records SET-family writes (all or none). It returns false when
// they cannot be coalesced (pending set full, room completed): the caller
// writes them through instead.
func (d *Debouncer) SetStrings(ws []StringWrite) bool {
	if !d.Enabled() {
		return false
	}
	now := d.m.now()
	add := 0
	for _, w := range ws {
		add += len(w.Key) + len(w.Value)
	}
	d.mu.Lock()
	for _, w := range ws {
		if !d.admit(w.Room, add) {
			d.mu.Unlock()
			return false
		}
	}
	for _, w := range ws {
		r := d.roomLocked(w.Room, now)
		k := d.keyLocked(r, w.Room, w.Key, false, now)
		d.bytes -= k.bytes
		k.str = append([]byte(nil), w.Value...) // a flush in flight may still be sending the old one
		k.expire = time.Time{}
		if w.TTL > 0 {
			k.expire = now.Add(w.TTL)
		}
		k.bytes = len(w.Key) + len(w.Value)
		d.bytes += k.bytes
		delete(d.known[w.Room], w.Key)
	}
	d.mu.Unlock()
	d.coalesced.Add(int64(len(ws)))
	return true
}

// SetFields records an HSET-family write of field value pairs. It returns
// how many fields are new (HSET's reply) and ok; ok is false when the
// hash's fields are not known (Prime them with a write-through) or the write
// cannot be coalesced.
func (d *Debouncer) SetFields(room, key string, fv [][]byte) (added int, ok bool) {
	if !d.Enabled() || len(fv)%2 != 0 {
		return 0, false
	}
	now := d.m.now()
	add := len(key)
	for _, a := range fv {
		add += len(a)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	kf := d.known[room][key]
	if kf == nil || now.Sub(kf.at) > knownLife || !d.admit(room, add) {
		return 0, false
	}
	if k := d.keys[key]; k != nil && !k.hash {
		return 0, false // a pending string: let Redis answer WRONGTYPE
	}
	r := d.roomLocked(room, now)
	k := d.keyLocked(r, room, key, true, now)
	if k.fields == nil {
		k.fields = map[string]pendingField{}
		k.bytes = len(key)
		d.bytes += k.bytes
	}
	for i := 0; i < len(fv); i += 2 {
		f := string(fv[i])
		if _, ok := kf.fields[f]; !ok {
			kf.fields[f] = struct{}{}
			added++
		}
		if old, ok := k.fields[f]; ok {
			k.bytes -= len(f) + len(old.val)
			d.bytes -= len(f) + len(old.val)
		}
		k.fields[f] = pendingField{val: append([]byte(nil), fv[i+1]...), seq: k.seq}
		k.bytes += len(f) + len(fv[i+1])
		d.bytes += len(f) + len(fv[i+1])
	}
	kf.at = now
	d.coalesced.Add(1)
	return added, true
}

// Prime records a hash's fields as Redis listed them (HKEYS right after a
// written-through HSET), so that later HSETs can be coalesced.
func (d *Debouncer) Prime(room, key string, fields [][]byte) {
	if !d.Enabled() {
		return
	}
	set := make(map[string]struct{}, len(fields))
	for _, f := range fields {
		set[string(f)] = struct{}{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if k := d.keys[key]; k != nil && k.hash {
		for f := range k.fields { // held fields exist too
			set[f] = struct{}{}
		}
	}
	if d.known[room] == nil {
		if len(d.known) > 1<<16 {
			clear(d.known) // bounded: forget them all; HSETs prime again
		}
		d.known[room] = map[string]*knownFields{}
	}
	d.known[room][key] = &knownFields{fields: set, at: d.m.now()}
}

// NoteWrite counts a write to a room that was not coalesced (INCR, LPUSH,
// a written-through HSET ...): its result reaches the store with the room's
// next snapshot. It forgets the field lists of the room's hashes, which
// the write may have changed.
func (d *Debouncer) NoteWrite(room string) {
	if !d.Persisting() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.forgetKnownLocked(room)
	d.m.mu.Lock()
	_, stored := d.m.states[room]
	d.m.mu.Unlock()
	if !stored {
		return // a room the store does not have: nothing to snapshot
	}
	d.roomLocked(room, d.m.now())
}

func (d *Debouncer) forgetKnownLocked(room string) { delete(d.known, room) }

// Pending returns a copy of a key's pending string value, or of the asked
// hash fields' pending values. ok is false when the key has no pending
// write, or (for fields) when any asked field is not pending: the caller
// then flushes the key's room and asks Redis, unless none is true: none of
// the asked fields is pending, so Redis has their latest values as they are.
func (d *Debouncer) Pending(key string, fields [][]byte) (str []byte, vals [][]byte, hash, ok, none bool) {
	if !d.Enabled() {
		return nil, nil, false, false, true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	k := d.keys[key]
	if k == nil {
		return nil, nil, false, false, true
	}
	if !k.hash {
		if !k.expire.IsZero() && !d.m.now().Before(k.expire) {
			return nil, nil, false, false, false // expired: the flush deletes it
		}
		return append([]byte(nil), k.str...), nil, false, true, false
	}
	missing := 0
	for _, f := range fields {
		v, ok := k.fields[string(f)]
		if !ok {
			missing++
			continue
		}
		vals = append(vals, append([]byte(nil), v.val...))
	}
	if missing > 0 {
		return nil, nil, true, false, len(fields) > 0 && missing == len(fields)
	}
	return nil, vals, true, len(fields) > 0, false
}

// HasKey reports whether key has a write not yet in Redis.
func (d *Debouncer) HasKey(key string) bool {
	if !d.Enabled() {
		return false
	}
	d.mu.Lock()
	k, ok := d.keys[key]
	ok = ok && k.seq > k.sent
	d.mu.Unlock()
	return ok
}

// HasRoom reports whether room has writes not yet in Redis.
func (d *Debouncer) HasRoom(room string) bool {
	if !d.Enabled() {
		return false
	}
	d.mu.Lock()
	r := d.rooms[room]
	ok := r != nil && unflushedLocked(r)
	d.mu.Unlock()
	return ok
}

// Stats returns the counters.
func (d *Debouncer) Stats() DebounceStats {
	if d == nil {
		return DebounceStats{}
	}
	d.mu.Lock()
	st := DebounceStats{PendingKeys: int64(len(d.keys)), PendingBytes: int64(d.bytes)}
	for _, r := range d.rooms {
		if len(r.keys) > 0 {
			st.PendingRooms++
		}
	}
	d.mu.Unlock()
	st.Coalesced, st.WriteThrough = d.coalesced.Load(), d.writeThrough.Load()
	st.Flushes, st.FlushedKeys, st.FlushErrors = d.flushes.Load(), d.flushedKeys.Load(), d.flushErrors.Load()
	st.Overruns, st.Snapshots, st.SnapshotErrors = d.overruns.Load(), d.snapshots.Load(), d.snapshotErrors.Load()
	st.MaxAgeMs, st.PendingReads = d.maxAgeMs.Load(), d.pendingReads.Load()
	return st
}

// CountWriteThrough counts a state write that could not be coalesced.
func (d *Debouncer) CountWriteThrough() { d.writeThrough.Add(1) }

// flushScript writes a room's pending keys in one call. KEYS[1] is the
// room's index, KEYS[2..] the keys. ARGV[1] is the room's TTL in seconds;
// ARGV[2] the room's state key when the call should also return the room's
// snapshot (snapshotLua), else empty; then for each key: kind (s: string, h:
// hash fields, x: delete, its own expiry passed), the key's TTL in ms (0: the
// room's), n, and n values.
const flushScript = snapshotLua + ownTTLLua + regOfLua + `
local ttl = ARGV[1]
local reg = regof(KEYS[1])
local a = 3
for j = 2, #KEYS do
  local k = KEYS[j]
  local t, px, n = ARGV[a], tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  a = a + 3
  if t == 's' then
    if px > 0 then
      redis.call('SET', k, ARGV[a], 'PX', px)
      redis.call('SADD', reg, k)
    else
      redis.call('SET', k, ARGV[a], 'EX', ttl)
      redis.call('SREM', reg, k)
    end
  elseif t == 'h' then
    local i = a
    while i < a + n do
      local e = math.min(i + 1999, a + n - 1)
      redis.call('HSET', k, unpack(ARGV, i, e))
      i = e + 1
    end
    if not ownttl(reg, k) then redis.call('EXPIRE', k, ttl) end
  else
    redis.call('DEL', k)
  end
  a = a + n
  if t ~= 'x' then redis.call('SADD', KEYS[1], k) end
end
redis.call('EXPIRE', KEYS[1], ttl)
if redis.call('EXISTS', reg) == 1 then redis.call('EXPIRE', reg, ttl) end
if ARGV[2] ~= '' then return snapshot(KEYS[1], ARGV[2], reg) end
return #KEYS - 1
`

// flushed is what one room's flush sent: each key's seq, to clear only
// what has not been written again since.
type flushed struct {
	key   string
	seq   uint64
	since time.Time
}

// buildFlushLocked builds the flush of one room. Called with d.mu held.
func (d *Debouncer) buildFlushLocked(id string, r *pendingRoom, now time.Time, snap bool) (cmd [][]byte, sent []flushed, oldest time.Time) {
	if len(r.keys) == 0 {
		return nil, nil, time.Time{}
	}
	ttl := d.m.roomTTL(id)
	names := make([]string, 0, len(r.keys))
	for n, k := range r.keys {
		if k.seq > k.sent {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	cmd = [][]byte{[]byte("EVAL"), []byte(flushScript), strconv.AppendInt(nil, int64(len(names)+1), 10), []byte(IndexKey(id))}
	for _, n := range names {
		cmd = append(cmd, []byte(n))
	}
	cmd = append(cmd, seconds(ttl), nil)
	if snap {
		cmd[len(cmd)-1] = []byte(d.m.Rules.Prefix + id)
	}
	for _, n := range names {
		k := r.keys[n]
		if !k.since.IsZero() && (oldest.IsZero() || k.since.Before(oldest)) {
			oldest = k.since
		}
		sent = append(sent, flushed{key: n, seq: k.seq, since: k.since})
		k.since = time.Time{}
		switch {
		case k.hash:
			fs := make([]string, 0, len(k.fields))
			for f, v := range k.fields {
				if v.seq > k.sent {
					fs = append(fs, f)
				}
			}
			cmd = append(cmd, []byte("h"), []byte("0"), strconv.AppendInt(nil, int64(2*len(fs)), 10))
			slices.Sort(fs)
			for _, f := range fs {
				cmd = append(cmd, []byte(f), k.fields[f].val)
			}
		default:
			// A client's TTL stands only when shorter than the room's (px 0:
			// the room's, like a key written without a TTL); one that has
			// run out deletes the key.
			px, expired := ownTTLLeft(k.expire, ttl, now)
			if expired {
				cmd = append(cmd, []byte("x"), []byte("0"), []byte("0"))
				continue
			}
			cmd = append(cmd, []byte("s"), strconv.AppendInt(nil, px, 10), []byte("1"), k.str)
		}
	}
	return cmd, sent, oldest
}

// settleLocked records what a flush wrote. Writes Redis now has stay held
// (served to reads, counted in the caps) until the store has them too, so
// that an upstream that loses its data loses no acknowledged state write;
// for a room the store does not keep they are dropped at once. Called with
// d.mu held.
func (d *Debouncer) settleLocked(id string, r *pendingRoom, sent []flushed, ok bool, now time.Time) {
	for _, f := range sent {
		k := d.keys[f.key]
		if k == nil {
			continue
		}
		if !ok {
			if k.since.IsZero() || (!f.since.IsZero() && f.since.Before(k.since)) {
				k.since = f.since // still pending, as old as it was
			}
			continue
		}
		k.sent = max(k.sent, f.seq)
	}
	if ok {
		r.lastFlush = now
		if !d.storedRoomLocked(id) {
			d.dropStoredLocked(id, r)
		}
	}
	if len(r.keys) == 0 && r.writes == 0 {
		delete(d.rooms, id)
	}
}

// dropStoredLocked forgets the room's writes that Redis has (all of them
// are in the store now, or the store does not keep the room). Called with
// d.mu held.
func (d *Debouncer) dropStoredLocked(id string, r *pendingRoom) {
	for name, k := range r.keys {
		if k.hash {
			for f, fv := range k.fields {
				if fv.seq <= k.sent {
					k.bytes -= len(f) + len(fv.val)
					d.bytes -= len(f) + len(fv.val)
					delete(k.fields, f)
				}
			}
			if len(k.fields) > 0 {
				continue
			}
		} else if k.seq > k.sent {
			continue
		}
		d.bytes -= k.bytes
		delete(d.keys, name)
		delete(r.keys, name)
	}
}

// unflushedLocked reports whether the room has writes Redis does not have.
func unflushedLocked(r *pendingRoom) bool {
	for _, k := range r.keys {
		if k.seq > k.sent {
			return true
		}
	}
	return false
}

// flushLocked writes room id's pending keys to Redis. The caller holds the
// room's lock. covered is how many of the room's counted writes are in Redis
// once it returns without error: what a snapshot taken now holds. With snap,
// it also returns the room's snapshot, read in the same call.
func (d *Debouncer) flushLocked(ctx context.Context, id string, snap bool) (covered int, keys map[string]fallback.Value, err error) {
	if d.m.Degraded(id) {
		if snap {
			return 0, nil, errDown
		}
		return 0, nil, d.m.storeFlushLocked(ctx, id)
	}
	d.mu.Lock()
	r := d.rooms[id]
	if r != nil {
		covered = r.writes
	}
	if r == nil || !unflushedLocked(r) {
		d.mu.Unlock()
		if snap {
			keys, err = d.m.snapshot(ctx, id)
		}
		return covered, keys, err
	}
	start := d.m.now()
	cmd, sent, oldest := d.buildFlushLocked(id, r, start, snap)
	d.mu.Unlock()
	v, err := reply(d.m.exec(ctx, [][][]byte{cmd})[0])
	now := d.m.now()
	d.mu.Lock()
	d.settleLocked(id, r, sent, err == nil, now)
	d.mu.Unlock()
	if err != nil {
		d.flushErrors.Add(1)
		return 0, nil, err
	}
	if snap {
		keys = parseSnapshot(v, d.m.now())
	}
	d.flushes.Add(1)
	d.flushedKeys.Add(int64(len(sent)))
	if !oldest.IsZero() {
		age := now.Sub(oldest)
		if ms := age.Milliseconds(); ms > d.maxAgeMs.Load() {
			d.maxAgeMs.Store(ms)
		}
		if age > 2*d.cfg.Window {
			d.overruns.Add(1)
		}
		if d.cfg.OnFlush != nil {
			d.cfg.OnFlush(now.Sub(start), age)
		}
	}
	return covered, keys, nil
}

// FlushRoom writes room id's pending keys to Redis now (before a command that
// is not coalesced touches the room, and for ROOM.FLUSH).
func (d *Debouncer) FlushRoom(ctx context.Context, id string) error {
	if !d.HasRoom(id) {
		return nil
	}
	mu := d.m.lock(id)
	mu.Lock()
	defer mu.Unlock()
	_, _, err := d.flushLocked(ctx, id, false)
	return err
}

// PersistRoom flushes room id and stores its snapshot now.
func (d *Debouncer) PersistRoom(ctx context.Context, id string) error {
	return d.flushAndPersist(ctx, id, true)
}

// flushDue is the flusher's task for one room: flush it, and store its
// snapshot, read in the same call, when one is due.
func (d *Debouncer) flushDue(ctx context.Context, id string) error {
	return d.flushAndPersist(ctx, id, false)
}

func (d *Debouncer) flushAndPersist(ctx context.Context, id string, always bool) error {
	mu := d.m.lock(id)
	mu.Lock()
	defer mu.Unlock()
	if d.m.Degraded(id) {
		err := d.m.storeFlushLocked(ctx, id) // held writes go to the store instead
		if err != nil {
			d.retryLater(id, true) // once a window, not every tick
		}
		return err
	}
	persist := d.persistDue(id, d.m.now()) || always
	if persist && !d.storedRoom(id) {
		persist = false
		defer d.takeWrites(id) // nothing to store: forget the count
	}
	since := d.m.landedOf(id)
	covered, keys, err := d.flushLocked(ctx, id, persist)
	if err != nil || !persist {
		return err
	}
	return d.persistLocked(ctx, id, covered, keys, since)
}

// storedRoom reports whether the store has room id in a state that takes
// snapshots (known, not completed).
func (d *Debouncer) storedRoom(id string) bool { return d.storedRoomLocked(id) }

// storedRoomLocked is storedRoom; it takes only the manager's state lock, so
// it may be called with d.mu held.
func (d *Debouncer) storedRoomLocked(id string) bool {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	s, ok := d.m.states[id]
	return ok && s != policy.Completed
}

func (d *Debouncer) takeWrites(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.rooms[id]; r != nil {
		d.takeWritesLocked(id, r, r.writes)
	}
}

func (d *Debouncer) persistDue(id string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rooms[id]
	return r != nil && d.persistDueLocked(r, now)
}

// persistDueLocked: a snapshot is read from Redis, which changes at most once
// a window, so never more often than that, however many writes come.
func (d *Debouncer) persistDueLocked(r *pendingRoom, now time.Time) bool {
	return r.writes > 0 && now.Sub(r.persisted) >= d.gap() &&
		(r.writes >= d.cfg.PersistEveryN || now.Sub(r.firstSeen) >= d.cfg.PersistInterval)
}

// persistLocked stores the room's snapshot (keys, read with the flush) and
// takes covered writes off the room's count, and rebases the room's size
// ledger on it (since: Manager.rebase). The caller holds the room's lock and
// has flushed the room.
func (d *Debouncer) persistLocked(ctx context.Context, id string, covered int, keys map[string]fallback.Value, since int) error {
	d.m.mu.Lock()
	s := d.m.states[id]
	d.m.mu.Unlock()
	room := fallback.Room{ID: id, Status: s.String(), Keys: keys, UpdatedAt: d.m.now()}
	if err := d.m.put(ctx, &room); err != nil {
		d.snapshotErrors.Add(1)
		d.retryLater(id, false)
		return err
	}
	d.snapshots.Add(1)
	d.m.rebase(id, keys, since) // the room's size ledger (size.go)
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.rooms[id]; r != nil {
		r.persisted = d.m.now()
		d.dropStoredLocked(id, r)
		d.takeWritesLocked(id, r, covered)
	}
	return nil
}

func (d *Debouncer) takeWritesLocked(id string, r *pendingRoom, covered int) {
	r.writes = max(r.writes-covered, 0)
	if r.writes > 0 {
		r.firstSeen = d.m.now()
	}
	if len(r.keys) == 0 && r.writes == 0 {
		delete(d.rooms, id)
	}
}

// forgetRoom takes the writes a lifecycle write's stored snapshot covered
// off the room's count (its pending keys were flushed first).
func (d *Debouncer) forgetRoom(id string, covered int, fields bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if fields {
		d.forgetKnownLocked(id)
	} else {
		delete(d.known[id], d.m.Rules.Prefix+id)
	}
	if r := d.rooms[id]; r != nil {
		r.persisted = d.m.now()
		d.dropStoredLocked(id, r)
		d.takeWritesLocked(id, r, covered)
	}
}

// due lists the rooms whose writes should go to Redis now, and those whose
// snapshot should be stored.
func (d *Debouncer) due(now time.Time, all bool) (flush, persist []string) {
	down := d.m.Down()
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, r := range d.rooms {
		if all {
			persist = append(persist, id) // PersistRoom flushes first
			continue
		}
		if down || d.m.Dirty(id) {
			// Everything held goes to the store, once a window per room:
			// Redis may have lost what it had, or be behind the store.
			// Without debouncing nothing is held, and a snapshot of Redis
			// would be behind the store: nothing to do.
			if d.Enabled() && (len(r.keys) > 0 || r.writes > 0) && now.Sub(r.lastFlush) >= d.cfg.Window {
				flush = append(flush, id)
			}
			continue
		}
		if unflushedLocked(r) {
			oldest := time.Time{}
			for _, k := range r.keys {
				if !k.since.IsZero() && (oldest.IsZero() || k.since.Before(oldest)) {
					oldest = k.since
				}
			}
			from := oldest
			if r.lastFlush.After(from) {
				from = r.lastFlush
			}
			if !oldest.IsZero() && now.Sub(from) >= d.cfg.Window {
				flush = append(flush, id)
			}
		}
		if !unflushedLocked(r) && d.persistDueLocked(r, now) {
			persist = append(persist, id)
		}
	}
	return flush, persist
}

// Run flushes due rooms and stores due snapshots until ctx ends. Rooms are
// flushed concurrently (the upstream engine pipelines concurrent calls into
// shared round trips), by at most workers goroutines.
func (d *Debouncer) Run(ctx context.Context) {
	if !d.Persisting() {
		return
	}
	tick := time.NewTicker(max(d.gap()/10, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.pass(ctx, false)
	}
}

const flushWorkers = 32

// pass flushes (all: every room) and stores due snapshots; it returns how
// many rooms could not be flushed or stored.
func (d *Debouncer) pass(ctx context.Context, all bool) int {
	flush, persist := d.due(d.m.now(), all)
	if len(flush) == 0 && len(persist) == 0 {
		return 0
	}
	var failed atomic.Int64
	work := make(chan func(), len(flush)+len(persist))
	queue := func(ids []string, limit time.Duration, do func(context.Context, string) error) {
		for _, id := range ids {
			work <- func() {
				opCtx, cancel := context.WithTimeout(ctx, limit)
				defer cancel()
				if err := do(opCtx, id); err != nil {
					failed.Add(1)
				}
			}
		}
	}
	queue(flush, 5*time.Second, d.flushDue)
	queue(persist, 10*time.Second, d.PersistRoom)
	close(work)
	var wg sync.WaitGroup
	for range min(flushWorkers, len(flush)+len(persist)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				f()
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		// At most one line every 10 s: a pass runs every window/10.
		if now := d.m.now(); now.Sub(time.Unix(0, d.warned.Load())) >= 10*time.Second {
			d.warned.Store(now.UnixNano())
			d.cfg.Logger.Warn("debounce: rooms not flushed or stored; they stay pending and are retried once a window", "rooms", n)
		}
	}
	return int(failed.Load())
}

// ErrPendingLeft is returned by Drain when writes could not all be flushed.
var ErrPendingLeft = errors.New("debounce: pending writes left")

// Drain flushes every pending write to Redis and stores every room's
// snapshot, retrying until done or ctx ends (SIGTERM, SPEC 11). It logs how
// many rooms were left if ctx ended first.
func (d *Debouncer) Drain(ctx context.Context) error {
	if !d.Persisting() {
		return nil
	}
	for {
		failed := d.pass(ctx, true)
		st := d.Stats()
		d.mu.Lock()
		left := len(d.rooms)
		d.mu.Unlock()
		if failed == 0 && left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			d.cfg.Logger.Error("shutdown: pending room writes not flushed", "rooms", left, "keys", st.PendingKeys, "bytes", st.PendingBytes)
			return ErrPendingLeft
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Debouncer returns the manager's debouncer (nil when writes are not
// debounced; a nil Debouncer is disabled and safe to call).
func (m *Manager) Debouncer() *Debouncer { return m.debounce }

// CountRead counts a read answered from a pending write.
func (d *Debouncer) CountRead() { d.pendingReads.Add(1) }

// hashScript writes hash fields through with the room's TTL and key index,
// and lists the hash's fields, in one call: KEYS[1] the room's index, KEYS[2]
// the hash; ARGV[1] the TTL in seconds, ARGV[2..] field value pairs. It
// returns HSET's reply followed by the field names.
const hashScript = ownTTLLua + regOfLua + `
local added = 0
local i = 2
while i < #ARGV do
  local e = math.min(i + 1999, #ARGV)
  added = added + redis.call('HSET', KEYS[2], unpack(ARGV, i, e))
  i = e + 1
end
if not ownttl(regof(KEYS[1]), KEYS[2]) then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
redis.call('SADD', KEYS[1], KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local out = redis.call('HKEYS', KEYS[2])
table.insert(out, 1, added)
return out
`

// WriteHash writes field value pairs to a room's hash, with the room's TTL
// and key index, in one call, and returns how many fields were new and the
// hash's fields after the write.
func (m *Manager) WriteHash(ctx context.Context, room string, key []byte, fv [][]byte) (int64, [][]byte, error) {
	ttl := m.roomTTL(room)
	cmd := append([][]byte{[]byte("EVAL"), []byte(hashScript), []byte("2"), []byte(IndexKey(room)), key, seconds(ttl)}, fv...)
	v, err := reply(m.exec(ctx, [][][]byte{cmd})[0])
	if err != nil {
		return 0, nil, err
	}
	if v.kind != '*' || len(v.items) == 0 {
		return 0, nil, errBadReply
	}
	fields := make([][]byte, 0, len(v.items)-1)
	for _, it := range v.items[1:] {
		fields = append(fields, it.str)
	}
	return v.items[0].num, fields, nil
}

// roomTTL is the TTL the room's keys get now, from its cached state.
func (m *Manager) roomTTL(id string) time.Duration {
	m.mu.Lock()
	s := m.states[id]
	m.mu.Unlock()
	return m.ttlOf(s)
}

// ttlOf is the TTL of a room's keys in state s. A completed room's late keys
// get the waiting TTL: they must not live for ever.
func (m *Manager) ttlOf(s policy.State) time.Duration {
	ttl, keep := m.Rules.TTL(s)
	if !keep {
		ttl = m.Rules.TTLWaiting
	}
	return ttl
}

// heldWrites records what overlay put into a room's document: each key's
// last write, to drop only those once the document is stored.
type heldWrites struct {
	keys map[string]uint64
}

// overlay applies the room's held writes (not yet in the store) to keys.
func (d *Debouncer) overlay(id string, keys map[string]fallback.Value) heldWrites {
	h := heldWrites{keys: map[string]uint64{}}
	if !d.Enabled() {
		return h
	}
	now := d.m.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rooms[id]
	if r == nil {
		return h
	}
	for name, k := range r.keys {
		h.keys[name] = k.seq
		if !k.hash {
			if !k.expire.IsZero() && !now.Before(k.expire) {
				delete(keys, name)
				continue
			}
			keys[name] = fallback.Value{Type: fallback.TypeString, String: append([]byte(nil), k.str...), ExpireAt: k.expire}
			continue
		}
		v := keys[name]
		if v.Type != fallback.TypeHash {
			v = fallback.Value{Type: fallback.TypeHash, Hash: map[string][]byte{}}
		}
		for f, fv := range k.fields {
			v.Hash[f] = append([]byte(nil), fv.val...)
		}
		keys[name] = v
	}
	return h
}

// dropHeld forgets the writes overlay applied, now that the store has them,
// and the room's snapshot count.
func (d *Debouncer) dropHeld(id string, h heldWrites) {
	if !d.Enabled() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.rooms[id]
	if r == nil {
		return
	}
	now := d.m.now()
	for name, seq := range h.keys {
		k := r.keys[name]
		if k == nil {
			continue
		}
		if k.hash {
			for f, fv := range k.fields {
				if fv.seq <= seq {
					k.bytes -= len(f) + len(fv.val)
					d.bytes -= len(f) + len(fv.val)
					delete(k.fields, f)
				}
			}
			if len(k.fields) > 0 {
				continue
			}
		} else if k.seq != seq {
			continue
		}
		d.bytes -= k.bytes
		delete(d.keys, name)
		delete(r.keys, name)
	}
	r.lastFlush, r.persisted = now, now
	d.takeWritesLocked(id, r, r.writes)
}

// retryLater makes a room whose flush to the store (flush) or snapshot
// failed wait a window before the flusher tries again; its flushes to
// Redis are not held back.
func (d *Debouncer) retryLater(id string, flush bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.rooms[id]; r != nil {
		now := d.m.now()
		r.persisted = now
		if flush {
			r.lastFlush = now
		}
	}
}

// HeldKeys is how many keys of room id have acknowledged writes the store
// does not have yet.
func (d *Debouncer) HeldKeys(id string) int {
	if !d.Enabled() {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.rooms[id]; r != nil {
		return len(r.keys)
	}
	return 0
}
