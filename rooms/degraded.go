package rooms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/policy"
)

// Serving rooms from the store while the upstream is unavailable (SPEC 5):
// a command on a room's keys runs on a scratch Redis loaded with the room's
// stored document (plus its writes still held by the debouncer), so it has
// Redis's own semantics and reply bytes; a write stores the room back with
// the next version and marks it dirty. Dirty rooms are served this way until
// Resync has written them back to Redis, so a pre-outage value is never
// served once the upstream is back.

// Scratch runs commands on a scratch Redis over RESP proto; the caller holds
// its lock across a load, run and read back.
type Scratch interface {
	Lock()
	Unlock()
	Exec(ctx context.Context, proto int, cmds [][][]byte) []batch.Reply
}

// degraded is the manager's outage state.
type degraded struct {
	scratch Scratch
	down    func() bool // the upstream is unavailable (breaker not closed)

	mu    sync.Mutex
	dirty map[string]struct{}

	reads, writes, errors, resynced atomic.Int64
}

// errDown: the upstream became unavailable under a write that needs it.
var errDown = errors.New("upstream unavailable")

// ErrNotRoomCommand is returned by ServeFromStore for a command whose keys
// are not all of one room.
var ErrNotRoomCommand = errors.New("not a command on one room's keys")

// SetDegraded enables serving rooms from the store while down reports the
// upstream unavailable.
func (m *Manager) SetDegraded(s Scratch, down func() bool) {
	m.deg = &degraded{scratch: s, down: down, dirty: map[string]struct{}{}}
}

// LoadDirty marks dirty the rooms the store says were written during an
// outage and not yet written back to Redis (by an earlier run of this
// process or another instance); they are served from the store until
// re-synced. Call it before serving clients.
func (m *Manager) LoadDirty(ctx context.Context) (int, error) {
	if m.deg == nil {
		return 0, nil
	}
	rooms, err := m.store.ListDirty(ctx)
	if err != nil {
		return 0, err
	}
	for _, r := range rooms {
		m.markDirty(r.ID)
	}
	return len(rooms), nil
}

// Degradable reports whether rooms are served from the store during
// outages (SetDegraded was called).
func (m *Manager) Degradable() bool { return m != nil && m.deg != nil }

// Down reports whether the upstream is unavailable.
func (m *Manager) Down() bool { return m.deg != nil && m.deg.down() }

// Dirty reports whether room id was written while the upstream was
// unavailable and is not yet back in Redis.
func (m *Manager) Dirty(id string) bool {
	if m.deg == nil {
		return false
	}
	m.deg.mu.Lock()
	_, ok := m.deg.dirty[id]
	m.deg.mu.Unlock()
	return ok
}

// Degraded reports whether commands on room id are served from the store.
func (m *Manager) Degraded(id string) bool { return m.Down() || m.Dirty(id) }

// DegradedStats are the outage counters.
type DegradedStats struct {
	Reads, Writes, Errors, Resynced, Dirty int64
}

// DegradedStats returns the outage counters.
func (m *Manager) DegradedStats() DegradedStats {
	if m.deg == nil {
		return DegradedStats{}
	}
	m.deg.mu.Lock()
	n := int64(len(m.deg.dirty))
	m.deg.mu.Unlock()
	return DegradedStats{Reads: m.deg.reads.Load(), Writes: m.deg.writes.Load(), Errors: m.deg.errors.Load(),
		Resynced: m.deg.resynced.Load(), Dirty: n}
}

func (m *Manager) markDirty(id string) {
	m.deg.mu.Lock()
	m.deg.dirty[id] = struct{}{}
	m.deg.mu.Unlock()
}

// dumpScript returns every key of the scratch server (snapshotLua's format).
const dumpScript = snapshotLua + `
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  for _, x in ipairs(snapshot('-', k, true)) do out[#out+1] = x end
end
return out
`

// loadCmds are the commands that put a room's keys into the scratch server
// at now, and the size of the room they load: a key with its own TTL gets
// what is left of it (and dumpScript reads it back), one whose TTL has run
// out is not loaded.
func loadCmds(keys map[string]fallback.Value, now time.Time) (cmds [][][]byte, size int) {
	cmds = [][][]byte{{[]byte("FLUSHALL")}}
	for _, name := range slices.Sorted(maps.Keys(keys)) {
		v := keys[name]
		write, ok := writeCommand[v.Type]
		vals := valueArgs(v)
		if !ok || len(vals) == 0 || v.Expired(now) {
			continue
		}
		size += keySize(name, v)
		cmds = append(cmds, append([][]byte{[]byte(write), []byte(name)}, vals...))
		if !v.ExpireAt.IsZero() {
			cmds = append(cmds, [][]byte{[]byte("PEXPIRE"), []byte(name), strconv.AppendInt(nil, max(v.ExpireAt.Sub(now).Milliseconds(), 1), 10)})
		}
	}
	return cmds, size
}

// keepExpiries gives each key of a room read back from the scratch server
// the expiry it was loaded with (loaded) when the command left its TTL as
// it was: read back, what is left of the TTL comes to the millisecond
// below, and a room written many times during an outage would see its keys'
// expiries creep earlier. (The scratch server's clock does not move: a
// TTL it reports is the one loaded or set by the command.)
func keepExpiries(keys, loaded map[string]fallback.Value) {
	for name, v := range keys {
		was := loaded[name].ExpireAt
		if v.ExpireAt.IsZero() || was.IsZero() {
			continue
		}
		if d := v.ExpireAt.Sub(was); d > -2*time.Millisecond && d < 2*time.Millisecond {
			v.ExpireAt = was
			keys[name] = v
		}
	}
}

// writeCommand writes valueArgs of each type.
var writeCommand = map[string]string{
	fallback.TypeString: "SET", fallback.TypeHash: "HSET", fallback.TypeSet: "SADD",
	fallback.TypeList: "RPUSH", fallback.TypeZSet: "ZADD",
}

// roomOfKeys returns the one room all keys belong to.
func (m *Manager) roomOfKeys(keys [][]byte) (string, bool) {
	id := ""
	for _, k := range keys {
		kid, _, ok := policy.RoomOf(k, m.Rules.Prefix)
		if !ok || (id != "" && string(kid) != id) {
			return "", false
		}
		id = string(kid)
	}
	return id, id != ""
}

// ServeFromStore runs a command on one room's keys against the room store
// and returns its reply in RESP proto. A write is stored with the next
// version (write concern majority, journaled) before the reply is returned,
// and the room becomes dirty.
func (m *Manager) ServeFromStore(ctx context.Context, proto int, args, keys [][]byte, write bool) ([]byte, error) {
	id, ok := m.roomOfKeys(keys)
	if !ok || m.deg == nil {
		return nil, ErrNotRoomCommand
	}
	if write {
		// Reads need no lock: the store's document and the held writes
		// overlaid on it are each the room as of some acknowledged write.
		mu := m.lock(id)
		mu.Lock()
		defer mu.Unlock()
	}
	raw, err := m.storeRunLocked(ctx, id, proto, args, write)
	if err != nil {
		m.deg.errors.Add(1)
		return nil, err
	}
	if write {
		m.deg.writes.Add(1)
	} else {
		m.deg.reads.Add(1)
	}
	return raw, nil
}

// storeRunLocked loads room id from the store and the debouncer, runs args
// (if any) on the scratch server and, for a write (or no args: the held
// writes alone), stores the result. The caller holds the room's lock.
func (m *Manager) storeRunLocked(ctx context.Context, id string, proto int, args [][]byte, write bool) ([]byte, error) {
	room, _, err := m.store.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrStore, err)
	}
	if room.Keys == nil {
		room.Keys = map[string]fallback.Value{}
	}
	var held heldWrites
	if m.debounce != nil {
		held = m.debounce.overlay(id, room.Keys)
	}
	if args == nil && len(held.keys) == 0 {
		if m.debounce != nil {
			m.debounce.dropHeld(id, held) // nothing held: only the count goes
		}
		return nil, nil
	}
	now := m.now()
	cmds, before := loadCmds(room.Keys, now) // before: the room as loaded
	if args != nil {
		cmds = append(cmds, args)
	}
	s := m.deg.scratch
	s.Lock()
	defer s.Unlock()
	replies := s.Exec(ctx, proto, cmds)
	for _, r := range replies[:len(cmds)-1] {
		if r.Err != nil {
			return nil, r.Err
		}
	}
	var raw []byte
	if args != nil {
		last := replies[len(replies)-1]
		if last.Err != nil {
			return nil, last.Err
		}
		raw = last.Raw
	}
	if !write {
		return raw, nil
	}
	dump, err := reply(s.Exec(ctx, 2, [][][]byte{{[]byte("EVAL"), []byte(dumpScript), []byte("0")}})[0])
	if err != nil {
		return nil, err
	}
	keys := parseSnapshot(dump, now) // the TTLs it read are from the load (the scratch clock stands)
	keepExpiries(keys, room.Keys)
	if len(raw) > 0 && raw[0] == '-' && len(held.keys) == 0 {
		return raw, nil // an error reply changed nothing
	}

	state := m.stateOfKeys(id, keys)
	if !m.storable(state, before, roomSize(keys)) {
		return nil, ErrTooLarge
	}
	stored := fallback.Room{ID: id, Status: state.String(), Keys: keys, UpdatedAt: m.now(), Dirty: true}
	if state == policy.Completed {
		stored.CompletedAt = stored.UpdatedAt
	}
	if err := m.put(ctx, &stored); err != nil {
		return nil, err
	}
	m.remember(id, state)
	if state == policy.Completed {
		m.forgetSize(id)
	} else {
		m.rebase(id, keys, m.landedOf(id)) // what Redis gets back when it returns
	}
	m.markDirty(id)
	if d := m.debounce; d != nil {
		d.dropHeld(id, held)
		// The stored room is all there is of it now: its hashes' field
		// lists are known, and later HSETs can be debounced again.
		for name, v := range keys {
			if v.Type == fallback.TypeHash {
				fields := make([][]byte, 0, len(v.Hash))
				for f := range v.Hash {
					fields = append(fields, []byte(f))
				}
				d.Prime(id, name, fields)
			}
		}
	}
	return raw, nil
}

// stateOfKeys reads a room's state from its state key.
func (m *Manager) stateOfKeys(id string, keys map[string]fallback.Value) policy.State {
	v, ok := keys[m.Rules.Prefix+id]
	if !ok {
		return policy.Waiting
	}
	switch v.Type {
	case fallback.TypeString:
		s, _ := m.Rules.StateFromJSON(v.String)
		return s
	case fallback.TypeHash:
		s, _ := m.Rules.StateOf(string(v.Hash[m.Rules.StatusField]))
		return s
	}
	return policy.Waiting
}

// StoreFlush writes room id's held writes to the store instead of Redis
// (the upstream is unavailable) and marks the room dirty.
func (m *Manager) storeFlushLocked(ctx context.Context, id string) error {
	_, err := m.storeRunLocked(ctx, id, 2, nil, true)
	return err
}

// resyncScript writes a room back to Redis from the store: every key the
// room's index lists and every key of the document is deleted, then the
// document's keys are written with the TTL and indexed, and the room's set
// of client-TTL keys made anew. KEYS[1] is the index, KEYS[2..] the
// document's keys; ARGV[1] the TTL in seconds (0: the room is completed, only
// delete); then per key: type, its own TTL left in milliseconds (0: none,
// the room's), n, n values (zset: score member pairs).
const resyncScript = regOfLua + `
local reg = regof(KEYS[1])
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
redis.call('DEL', reg)
for j = 2, #KEYS do redis.call('DEL', KEYS[j]) end
local ttl = tonumber(ARGV[1])
if ttl == 0 then return 0 end
local a = 2
for j = 2, #KEYS do
  local k = KEYS[j]
  local t, px, n = ARGV[a], tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  a = a + 3
  local i = a
  while i < a + n do
    local step = 1
    if t == 'hash' or t == 'zset' then step = 2 end
    local e = math.min(i + 1000 * step - 1, a + n - 1)
    if t == 'string' then redis.call('SET', k, ARGV[i])
    elseif t == 'hash' then redis.call('HSET', k, unpack(ARGV, i, e))
    elseif t == 'set' then redis.call('SADD', k, unpack(ARGV, i, e))
    elseif t == 'list' then redis.call('RPUSH', k, unpack(ARGV, i, e))
    elseif t == 'zset' then redis.call('ZADD', k, unpack(ARGV, i, e))
    end
    i = e + 1
  end
  a = a + n
  if n > 0 then
    if px > 0 then
      redis.call('PEXPIRE', k, px)
      redis.call('SADD', reg, k)
    else
      redis.call('EXPIRE', k, ttl)
    end
    redis.call('SADD', KEYS[1], k)
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
if redis.call('EXISTS', reg) == 1 then redis.call('EXPIRE', reg, ttl) end
return #KEYS - 1
`

// resyncCmd builds the write back of one stored room. A key whose own TTL
// has run out is deleted and not written.
func (m *Manager) resyncCmd(room fallback.Room, found bool) [][]byte {
	names := slices.Sorted(maps.Keys(room.Keys))
	cmd := [][]byte{[]byte("EVAL"), []byte(resyncScript), strconv.AppendInt(nil, int64(len(names)+1), 10), []byte(IndexKey(room.ID))}
	for _, n := range names {
		cmd = append(cmd, []byte(n))
	}
	s, _ := m.Rules.StateOf(room.Status)
	ttl, keep := m.Rules.TTL(s)
	if !keep || !found {
		ttl = 0
	}
	cmd = append(cmd, seconds(ttl))
	now := m.now()
	for _, n := range names {
		v := room.Keys[n]
		vals := valueArgs(v)
		px, expired := ownTTLLeft(v.ExpireAt, ttl, now)
		if expired {
			vals = nil
		}
		cmd = append(cmd, []byte(v.Type), strconv.AppendInt(nil, px, 10), strconv.AppendInt(nil, int64(len(vals)), 10))
		cmd = append(cmd, vals...)
	}
	return cmd
}

// Resync writes every dirty room back to Redis from the store, at most
// perSecond rooms a second and a few at a time, so that the upstream that
// just came back is not tripped again. It stops when ctx ends or the
// upstream is down again; rooms not done stay dirty (served from the store).
// It returns how many rooms it wrote back.
func (m *Manager) Resync(ctx context.Context, perSecond int, log *slog.Logger) int {
	if m.deg == nil {
		return 0
	}
	m.deg.mu.Lock()
	ids := slices.Sorted(maps.Keys(m.deg.dirty))
	m.deg.mu.Unlock()
	if len(ids) == 0 {
		return 0
	}
	if perSecond <= 0 {
		perSecond = 500
	}
	start := time.Now()
	const workers = 8
	work := make(chan string)
	var done atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				if err := m.resyncRoom(ctx, id); err != nil {
					log.Warn("re-sync: room not written back; it stays served from the store", "err", err)
					continue
				}
				done.Add(1)
			}
		}()
	}
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
feed:
	for _, id := range ids {
		select {
		case <-ctx.Done():
			break feed
		case <-tick.C:
		}
		if m.Down() {
			break
		}
		work <- id
	}
	close(work)
	wg.Wait()
	log.Info("re-sync of rooms written during the outage", "rooms_dirty", len(ids), "rooms_written_back", done.Load(),
		"took", time.Since(start).Round(time.Millisecond).String())
	return int(done.Load())
}

// resyncRoom writes one dirty room back under its lock and clears its mark.
func (m *Manager) resyncRoom(ctx context.Context, id string) error {
	mu := m.lock(id)
	mu.Lock()
	defer mu.Unlock()
	if !m.Dirty(id) {
		return nil
	}
	opCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	room, found, err := m.store.Get(opCtx, id)
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrStore, err)
	}
	stored := room // without the held writes overlaid below
	stored.Keys = maps.Clone(room.Keys)
	room.ID = id
	if room.Keys == nil {
		room.Keys = map[string]fallback.Value{}
	}
	if m.debounce != nil {
		// Writes acknowledged since and held (not yet stored) go with it, so
		// Redis does not fall behind what reads through the proxy saw.
		m.debounce.overlay(id, room.Keys)
		found = found || len(room.Keys) > 0
	}
	if _, err := reply(m.exec(opCtx, [][][]byte{m.resyncCmd(room, found)})[0]); err != nil {
		return err
	}
	if stored.Dirty {
		// Redis has it now; a proxy started later must not re-sync it again.
		// If this fails, a later start re-syncs it once more: harmless.
		stored.Dirty = false
		stored.UpdatedAt = m.now()
		m.put(opCtx, &stored)
	}
	m.deg.mu.Lock()
	delete(m.deg.dirty, id)
	m.deg.mu.Unlock()
	m.deg.resynced.Add(1)
	return nil
}
