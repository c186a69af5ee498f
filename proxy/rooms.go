package proxy

import (
	"errors"
	"strconv"
	"strings"

	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/policy"
	"github.com/roomproxy/roomproxy/rooms"
)

// touchesRoom reports whether a command's keys include a room key; cheap for
// the common case of no key with the room prefix.
func (s *session) touchesRoom(sp *Spec, args [][]byte) bool {
	prefix := s.srv.cfg.Rooms.Rules.Prefix
	found := false
	sp.eachKey(args, func(k []byte) bool {
		found = len(k) > len(prefix) && string(k[:len(prefix)]) == prefix
		return !found
	})
	return found
}

// planError is the error reply (without its "-" and line end) for a room
// write that Plan refused.
func planError(err error) string {
	if errors.Is(err, rooms.ErrStore) {
		return "TRYAGAIN room store unavailable: the write was not applied"
	}
	return "ERR " + err.Error()
}

// roomWrite carries a write to room keys: a state write is forwarded with the
// room's TTL and key index in the same pipeline; a lifecycle write is made
// durable in the room store first, and only then forwarded.
func (s *session) roomWrite(sp *Spec, args [][]byte, sl *slot) {
	m := s.srv.cfg.Rooms
	name := sp.Name
	if sp.parent != nil {
		name = sp.parent.Name
	}
	ctx, cancel := s.upstreamCtx()
	p, err := m.Plan(ctx, name, args, sp.keys(args))
	cancel()
	if err != nil {
		s.err(planError(err))
		return
	}
	down := m.Degradable() && s.roomDegraded(sp, args)
	if !p.Lifecycle {
		if !down {
			a, ok := s.admitRoomWrite(name, sp, args)
			if !ok {
				return
			}
			// Once the write is in the batch or the pending set: a drain
			// before that (settle's) would land it before it is sent.
			defer s.inFlight(a)
		}
		if s.coalesce(name, args) {
			s.touchRooms(sp.keys(args)) // for a degraded room, its flushes go to the store
			return
		}
		if down {
			s.fromStore(sp, args, true)
			return
		}
		if !s.settle(sp.keys(args), true) {
			return
		}
		if (name == "hset" || name == "hmset") && s.primeHash(args) {
			s.touchRooms(sp.keys(args))
			return
		}
		s.noteWrites(sp.keys(args))
		sl.fwd = int32(s.batch.Add(args, false))
		for _, c := range p.After {
			s.hidden(c)
		}
		s.touchRooms(sp.keys(args))
		return
	}
	if down {
		s.fromStore(sp, args, true) // written through to the store alone
		return
	}
	s.drain() // what came before is in Redis before the room is read
	ctx, cancel = s.upstreamCtx()
	after, done, err := m.Apply(ctx, p)
	cancel()
	if err != nil {
		switch {
		case errors.Is(err, rooms.ErrStore):
			s.err("TRYAGAIN room store unavailable: the write was not applied")
		case errors.Is(err, rooms.ErrTooLarge):
			s.err("ERR room document too large")
		default:
			s.err(upstreamErrorText(err))
		}
		return
	}
	first := s.batch.Add(args, false)
	sl.fwd = int32(first)
	for _, c := range after {
		s.hidden(c)
	}
	last := s.batch.Len()
	s.afterDrain = append(s.afterDrain, func() {
		landed := true // a reply from Redis, even an error reply, means the round trip reached it
		for _, r := range s.batch.Replies[first:last] {
			landed = landed && r.Err == nil
		}
		done(landed)
	})
}

// admitRoomWrite checks a write that keeps its rooms' states against
// ROOM_MAX_BYTES (rooms.Manager.AdmitWrite) and answers it when refused.
// A room that must be measured first is measured after the session's batch
// so far has reached Redis. What it counted must be landed once the write
// has reached Redis or will not be sent (inFlight).
func (s *session) admitRoomWrite(name string, sp *Spec, args [][]byte) (rooms.Admitted, bool) {
	ctx, cancel := s.upstreamCtx()
	a, err := s.srv.cfg.Rooms.AdmitWrite(ctx, name, args, sp.keys(args), s.drain)
	cancel()
	switch {
	case err == nil:
		return a, true
	case errors.Is(err, rooms.ErrTooLarge):
		s.err("ERR room document too large")
	default:
		s.err(upstreamErrorText(err))
	}
	return a, false
}

// inFlight keeps an admitted write's growth until the current batch has
// drained (drain lands it). Called once the write is in the batch, in the
// debouncer's pending set (which every snapshot flushes first), done, or
// refused: by the next drain it is in Redis or will not be. Landing later
// than that only overcounts for a moment; landing earlier (before the write
// is sent) would let a snapshot that lacks it count it as there.
func (s *session) inFlight(a rooms.Admitted) {
	if !a.Empty() {
		s.landings = append(s.landings, a)
	}
}

// land lands the admitted writes the session holds (drain calls it once the
// batch they went in has drained).
func (s *session) land() {
	for _, a := range s.landings {
		s.srv.cfg.Rooms.Land(a)
	}
	clear(s.landings)
	s.landings = s.landings[:0]
}

// landAll lands every admitted write the session holds, its transaction's
// too, when it closes: they are in Redis, or will never be sent.
func (s *session) landAll() {
	s.endTx()
	s.land()
}

// endTx hands the writes a transaction admitted to the session: they land
// at the next drain. EXEC calls it once its commands are in the batch (or
// ran on the lane); DISCARD and RESET at once, as nothing will be sent.
func (s *session) endTx() {
	s.landings = append(s.landings, s.tx.landings...)
	s.tx.landings = nil
}

// scriptKeys are the keys a script declares: EVAL script numkeys key ...
func scriptKeys(args [][]byte) [][]byte {
	if len(args) < 3 {
		return nil
	}
	n, err := strconv.Atoi(string(args[2]))
	if err != nil || n <= 0 || 3+n > len(args) {
		return nil
	}
	return args[3 : 3+n]
}

// roomScript forwards a script that declares room keys, followed by the
// room TTL and key index of each (SPEC 2: room TTL rules are applied to the
// declared room keys afterwards). A script cannot be seen changing a room's
// status, so it is not written through; change status with SET or HSET.
func (s *session) roomScript(args [][]byte, sl *slot) bool {
	m := s.srv.cfg.Rooms
	keys := scriptKeys(args)
	var roomKeys [][]byte
	for _, k := range keys {
		if _, ok := m.RoomOf(k); ok {
			roomKeys = append(roomKeys, k)
		}
	}
	if len(roomKeys) == 0 {
		return false
	}
	if !s.settle(roomKeys, true) {
		return true
	}
	s.noteWrites(roomKeys)
	sl.fwd = int32(s.batch.Add(args, false))
	ctx, cancel := s.upstreamCtx()
	after := m.TTLFor(ctx, roomKeys, false)
	cancel()
	for _, c := range after {
		s.hidden(c)
	}
	s.touchRooms(roomKeys)
	return true
}

// touchRooms adds, hidden after the command, the sliding-TTL refresh of each
// active room it touches when one is due.
func (s *session) touchRooms(keys [][]byte) {
	m := s.srv.cfg.Rooms
	for _, k := range keys {
		if id, ok := m.RoomOf(k); ok {
			if c := m.Touch(id); c != nil {
				s.hidden(c)
			}
		}
	}
}

// readThrough answers room reads that Redis answered with nil or an empty
// collection (the key may be missing) from the room store: the room's missing keys are written back to Redis with their TTL
// (never over a newer value), and the read runs again, so its reply is
// Redis's own, byte for byte.
func (s *session) readThrough() {
	m := s.srv.cfg.Rooms
	for i := range s.slots {
		sl := &s.slots[i]
		if !sl.roomRead || sl.fwd < 0 {
			continue
		}
		r := s.batch.Replies[sl.fwd]
		if r.Err != nil || !(isNull(r.Raw) || isEmpty(r.Raw)) {
			continue
		}
		args := s.batch.Cmds[sl.fwd]
		key := sl.spec.keys(args)[0]
		id, _, ok := policy.RoomOf(key, m.Rules.Prefix)
		if !ok {
			continue
		}
		ctx, cancel := s.upstreamCtx()
		n, err := m.RestoreFor(ctx, string(id), string(key))
		cancel()
		if err != nil || n == 0 {
			continue
		}
		s.batch.Replies[sl.fwd] = s.viaPool(true, args)[0]
		sl.fromStore = true // Redis had nothing: the room store answered
	}
}

// reloadOf appends to again the EVAL form of cmd, a hidden command, if it
// is one of the room scripts the manager sends as EVALSHA (rooms.Reload) and
// Redis answered NOSCRIPT: its script cache was emptied (a restart, a
// failover, SCRIPT FLUSH) and the call ran nothing.
func reloadOf(again [][][]byte, cmd [][]byte, r batch.Reply) [][][]byte {
	if r.Err != nil || !rooms.NoScript(r.Raw) {
		return again
	}
	if eval, ok := rooms.Reload(cmd); ok {
		again = append(again, eval)
	}
	return again
}

// reloadScripts sends the calls reloadOf collected, so that no key is left
// without its TTL or its room's index. A client's own commands are never
// sent again: only hidden calls of the manager's scripts are collected.
func (s *session) reloadScripts(again [][][]byte) {
	if len(again) == 0 {
		return
	}
	s.srv.cfg.Rooms.Reloaded(len(again))
	if s.lane != nil {
		ctx, cancel := s.upstreamCtx()
		defer cancel()
		s.onLane(ctx, again...)
		return
	}
	s.viaPool(false, again...)
}

// isEmpty reports an empty aggregate: what HGETALL, SMEMBERS, LRANGE or
// ZRANGE answer for a key that does not exist.
func isEmpty(raw []byte) bool {
	switch string(raw) {
	case "*0\r\n", "%0\r\n", "~0\r\n":
		return true
	}
	return false
}

func (s *session) roomsOff() bool {
	if s.srv.cfg.Rooms == nil {
		s.err("ERR rooms are not enabled on this proxy")
		return true
	}
	return false
}

// cmdRoomGet answers ROOM.GET id from the room store, with the TTL of the
// room's state key in Redis, where the room's reads are served from now
// (redis, or store during an outage and until its re-sync), and how many of
// its keys have acknowledged writes the store does not have yet.
func cmdRoomGet(s *session, args [][]byte) {
	if s.roomsOff() {
		return
	}
	m := s.srv.cfg.Rooms
	ctx, cancel := s.upstreamCtx()
	defer cancel()
	room, found, err := m.Store().Get(ctx, string(args[1]))
	if err != nil {
		s.err("TRYAGAIN room store unavailable")
		return
	}
	if !found {
		s.null()
		return
	}
	s.drain()
	ttl, err := m.KeyTTL(ctx, m.Rules.Prefix+room.ID)
	if err != nil {
		ttl = -3 // unknown: the upstream did not answer
	}
	names := make([]string, 0, len(room.Keys))
	for k := range room.Keys {
		names = append(names, k)
	}
	sortStrings(names)
	source := "redis"
	if m.Degradable() && m.Degraded(room.ID) {
		source = "store"
	}
	s.mapHeader(8)
	s.bulkString("id")
	s.bulkString(room.ID)
	s.bulkString("status")
	s.bulkString(room.Status)
	s.bulkString("version")
	s.integer(room.Version)
	s.bulkString("ttl")
	s.integer(ttl)
	s.bulkString("updated_at_ms")
	s.integer(room.UpdatedAt.UnixMilli())
	s.bulkString("source")
	s.bulkString(source)
	s.bulkString("pending_keys")
	s.integer(int64(m.Debouncer().HeldKeys(room.ID)))
	s.bulkString("keys")
	s.array(len(names))
	for _, n := range names {
		s.bulkString(n)
	}
}

// cmdRoomList answers ROOM.LIST [state] [COUNT n]: room ids from the store,
// active ones by default.
func cmdRoomList(s *session, args [][]byte) {
	if s.roomsOff() {
		return
	}
	state, count := "active", 0
	for i := 1; i < len(args); i++ {
		a := strings.ToLower(string(args[i]))
		switch {
		case a == "count" && i+1 < len(args):
			n, err := strconv.Atoi(string(args[i+1]))
			if err != nil || n < 0 {
				s.err("ERR value is not an integer or out of range")
				return
			}
			count = n
			i++
		case a == "waiting" || a == "active" || a == "completed":
			state = a
		default:
			s.err("ERR syntax error")
			return
		}
	}
	ctx, cancel := s.upstreamCtx()
	defer cancel()
	list, err := s.srv.cfg.Rooms.Store().List(ctx, []string{state}, count)
	if err != nil {
		s.err("TRYAGAIN room store unavailable")
		return
	}
	s.array(len(list))
	for _, r := range list {
		s.bulkString(r.ID)
	}
}

// cmdRoomTTL answers ROOM.TTL id seconds: every key of the room gets the TTL.
func cmdRoomTTL(s *session, args [][]byte) {
	if s.roomsOff() {
		return
	}
	secs, err := strconv.ParseInt(string(args[2]), 10, 64)
	if err != nil || secs <= 0 {
		s.err("ERR value is not an integer or out of range")
		return
	}
	s.drain()
	ctx, cancel := s.upstreamCtx()
	defer cancel()
	n, err := s.srv.cfg.Rooms.TTL(ctx, string(args[1]), secs)
	if err != nil {
		s.err(upstreamErrorText(err))
		return
	}
	s.integer(n)
}

// cmdRoomFlush answers ROOM.FLUSH id: the room's pending writes go to Redis
// and its snapshot to the room store now.
func cmdRoomFlush(s *session, args [][]byte) {
	if s.roomsOff() {
		return
	}
	s.drain()
	if d := s.debouncer(); d.Persisting() {
		ctx, cancel := s.upstreamCtx()
		err := d.PersistRoom(ctx, string(args[1]))
		cancel()
		if err != nil {
			s.err(upstreamErrorText(err))
			return
		}
	}
	s.simple("OK")
}
