package rooms

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/roomproxy/roomproxy/fallback"
	"github.com/roomproxy/roomproxy/policy"
)

// restoreScript writes one key back only if Redis does not have it, so a
// newer value written meanwhile is never overwritten, and gives it the TTL;
// not a key listed among the room's client-TTL keys (KEYS[2], OwnTTLKey):
// missing, it expired on the client's own TTL, and is not brought back.
// KEYS[1] key; ARGV[1] type, ARGV[2] the room's TTL in seconds, ARGV[3] the
// key's own TTL left in milliseconds (0: none; it is then listed in KEYS[2]),
// ARGV[4..] the value (string: the value; hash: field value ...; set, list:
// items; zset: score member ...).
const restoreScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SISMEMBER', KEYS[2], KEYS[1]) == 1 then return 0 end
local t = ARGV[1]
local n = #ARGV
local function each(cmd, step)
  local i = 4
  while i <= n do
    local j = math.min(i + 999 * step + step - 1, n)
    redis.call(cmd, KEYS[1], unpack(ARGV, i, j))
    i = j + 1
  end
end
if t == 'string' then redis.call('SET', KEYS[1], ARGV[4])
elseif t == 'hash' then each('HSET', 2)
elseif t == 'set' then each('SADD', 1)
elseif t == 'list' then each('RPUSH', 1)
elseif t == 'zset' then each('ZADD', 2)
else return 0 end
local px = tonumber(ARGV[3])
if px > 0 then
  redis.call('PEXPIRE', KEYS[1], px)
  redis.call('SADD', KEYS[2], KEYS[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
`

// ownTTLLeft is what is left at now of a key's own TTL, which runs out at
// expireAt (zero: none), in milliseconds, when it is shorter than the room's
// ttl: 0 when the key has none or one no shorter than the room's (it gets
// the room's), and expired true when it has run out (the key is not
// written). Used for stored keys (restore, re-sync) and held ones (a
// debounced flush).
func ownTTLLeft(expireAt time.Time, ttl time.Duration, now time.Time) (px int64, expired bool) {
	if expireAt.IsZero() {
		return 0, false
	}
	left := expireAt.Sub(now)
	switch {
	case left <= 0:
		return 0, true
	case left >= ttl:
		return 0, false
	}
	return max(left.Milliseconds(), 1), false
}

// Restore writes the stored room back into Redis: every key Redis does not
// have, with the room's TTL, and the key index. Completed rooms are not
// restored. Concurrent calls for one room share one store read and one
// restore. It returns how many keys were written.
func (m *Manager) Restore(ctx context.Context, id string) (int, error) {
	v, err, _ := m.flight.Do(id, func() (any, error) { return m.restore(ctx, id) })
	n, _ := v.(int)
	return n, err
}

// RestoreFor is Restore for a nil read of key. After a restore that wrote
// nothing, a nil read of the same key does not look the room up in the
// store again for quietRestore (unless this process stores the room
// meanwhile): such reads are mostly missing hash fields or keys that never
// existed, and each lookup costs a store read and a script call per stored
// key. The price: that key, evicted from Redis within that time, reads as
// missing until it passes.
func (m *Manager) RestoreFor(ctx context.Context, id, key string) (int, error) {
	now := m.now()
	m.mu.Lock()
	until, quiet := m.quiet[id][key]
	m.mu.Unlock()
	if quiet && now.Before(until) {
		return 0, nil
	}
	n, err := m.Restore(ctx, id)
	if err == nil && n == 0 {
		m.mu.Lock()
		if m.quiet[id] == nil {
			if len(m.quiet) > 1<<16 {
				clear(m.quiet) // bounded
			}
			m.quiet[id] = map[string]time.Time{}
		}
		m.quiet[id][key] = now.Add(quietRestore)
		m.mu.Unlock()
	}
	return n, err
}

// quietRestore is how long a key whose restore wrote nothing is not looked
// up in the store again on a nil read.
const quietRestore = 5 * time.Second

func (m *Manager) restore(ctx context.Context, id string) (int, error) {
	room, found, err := m.store.Get(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("%w (%v)", ErrStore, err)
	}
	if !found {
		return 0, nil
	}
	s, _ := m.Rules.StateOf(room.Status)
	m.remember(id, s)
	ttl, keep := m.Rules.TTL(s)
	if !keep || len(room.Keys) == 0 {
		return 0, nil
	}
	secs := seconds(ttl)
	idx := []byte(IndexKey(id))
	now := m.now()
	var cmds [][][]byte
	for name, v := range room.Keys {
		vals := valueArgs(v)
		px, expired := ownTTLLeft(v.ExpireAt, ttl, now)
		if len(vals) == 0 || expired {
			continue // an empty collection does not exist in Redis; an expired key is gone
		}
		cmd := append([][]byte{[]byte("EVAL"), []byte(restoreScript), []byte("2"), []byte(name), []byte(OwnTTLKey(id)),
			[]byte(v.Type), secs, strconv.AppendInt(nil, px, 10)}, vals...)
		cmds = append(cmds, cmd, [][]byte{[]byte("SADD"), idx, []byte(name)})
	}
	cmds = append(cmds, [][]byte{[]byte("EXPIRE"), idx, secs})
	restored := 0
	for i, r := range m.exec(ctx, cmds) {
		v, err := reply(r)
		if err != nil {
			return restored, err
		}
		if i%2 == 0 && i < len(cmds)-1 && v.num == 1 {
			restored++
		}
	}
	if restored > 0 {
		m.restores.Add(1)
		m.restored.Add(int64(restored))
	}
	return restored, nil
}

// WarmUp restores every waiting and active room of the store that Redis is
// missing keys of, at most perSecond rooms a second, until done or ctx ends.
// It runs beside client traffic and never blocks it.
func (m *Manager) WarmUp(ctx context.Context, perSecond int, log *slog.Logger) {
	if perSecond <= 0 {
		perSecond = 100
	}
	list, err := m.store.List(ctx, []string{policy.Waiting.String(), policy.Active.String()}, 0)
	if err != nil {
		log.Warn("room warm-up: cannot list rooms", "err", err)
		return
	}
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	rooms, keys := 0, 0
	for _, r := range list {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := m.Restore(ctx, r.ID)
		if err != nil {
			log.Warn("room warm-up: restore failed", "err", err)
			continue
		}
		if n > 0 {
			rooms++
			keys += n
		}
	}
	log.Info("room warm-up done", "rooms_in_store", len(list), "rooms_restored", rooms, "keys_restored", keys)
}

// valueArgs is a stored key's content as the arguments of the command that
// writes it: the string; hash fields and values (fields in order); set
// members; list items; sorted-set scores and members. An empty collection
// has none.
func valueArgs(v fallback.Value) [][]byte {
	switch v.Type {
	case fallback.TypeString:
		return [][]byte{v.String}
	case fallback.TypeHash:
		out := make([][]byte, 0, 2*len(v.Hash))
		for _, f := range slices.Sorted(maps.Keys(v.Hash)) {
			out = append(out, []byte(f), v.Hash[f])
		}
		return out
	case fallback.TypeSet:
		return v.Set
	case fallback.TypeList:
		return v.List
	case fallback.TypeZSet:
		out := make([][]byte, 0, 2*len(v.ZSet))
		for _, z := range v.ZSet {
			out = append(out, []byte(strconv.FormatFloat(z.Score, 'g', -1, 64)), z.Member)
		}
		return out
	}
	return nil
}
