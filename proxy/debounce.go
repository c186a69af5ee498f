package proxy

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/roomproxy/roomproxy/rooms"
)

// Debounced state writes (SPEC 4.4). A state write to room keys that the
// debouncer can take is answered at once with the reply Redis would give;
// reads of keys with a pending write are answered from it when they can be,
// and any other command touching such a key first sends what is batched and
// flushes the rooms concerned, so effects reach Redis in acknowledgement
// order.

func (s *session) debouncer() *rooms.Debouncer {
	if m := s.srv.cfg.Rooms; m != nil {
		return m.Debouncer()
	}
	return nil
}

// positive parses a positive integer argument (an expiry).
func positive(b []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil && n > 0 && n < 1<<46
}

// setTTL reads SET key value [EX s | PX ms]: ok is false for any other
// option (NX, XX, GET, KEEPTTL, EXAT, PXAT), which needs Redis to answer.
func setTTL(args [][]byte) (time.Duration, bool) {
	switch len(args) {
	case 3:
		return 0, true
	case 5:
		n, ok := positive(args[4])
		if !ok {
			return 0, false
		}
		switch strings.ToLower(string(args[3])) {
		case "ex":
			return time.Duration(n) * time.Second, true
		case "px":
			return time.Duration(n) * time.Millisecond, true
		}
	}
	return 0, false
}

// coalesce takes a state write into the pending set and answers it; it
// returns false when the command is not one the debouncer can answer
// without Redis, or the pending set cannot take it.
func (s *session) coalesce(name string, args [][]byte) bool {
	d := s.debouncer()
	if !d.Enabled() {
		return false
	}
	m := s.srv.cfg.Rooms
	var ws []rooms.StringWrite
	switch name {
	case "set":
		ttl, ok := setTTL(args)
		if !ok {
			return false
		}
		ws = []rooms.StringWrite{{Key: string(args[1]), Value: args[2], TTL: ttl}}
	case "setex", "psetex":
		n, ok := positive(args[2])
		if !ok {
			return false
		}
		unit := time.Second
		if name == "psetex" {
			unit = time.Millisecond
		}
		ws = []rooms.StringWrite{{Key: string(args[1]), Value: args[3], TTL: time.Duration(n) * unit}}
	case "mset":
		if len(args)%2 != 1 {
			return false
		}
		for i := 1; i+1 < len(args); i += 2 {
			ws = append(ws, rooms.StringWrite{Key: string(args[i]), Value: args[i+1]})
		}
	case "hset", "hmset":
		id, ok := m.RoomOf(args[1])
		if !ok {
			return false
		}
		added, ok := d.SetFields(id, string(args[1]), args[2:])
		if !ok {
			return false
		}
		if name == "hmset" {
			s.simple("OK")
		} else {
			s.integer(int64(added))
		}
		return true
	default:
		return false
	}
	for i := range ws {
		id, ok := m.RoomOf([]byte(ws[i].Key))
		if !ok {
			return false // MSET mixing room and other keys: written through
		}
		ws[i].Room = id
	}
	if !d.SetStrings(ws) {
		d.CountWriteThrough() // the pending set is full: written through
		return false
	}
	s.simple("OK")
	return true
}

// primeHash writes an HSET or HMSET through, with the room's TTL and key
// index, and lists the hash's fields in the same script call, so that the
// next writes to the hash can be coalesced with exact replies. It answers
// the command; false means it did not run.
func (s *session) primeHash(args [][]byte) bool {
	d := s.debouncer()
	m := s.srv.cfg.Rooms
	id, ok := m.RoomOf(args[1])
	if !d.Enabled() || !ok || len(args)%2 != 0 {
		return false
	}
	ctx, cancel := s.upstreamCtx()
	added, fields, err := m.WriteHash(ctx, id, args[1], args[2:])
	cancel()
	if errors.Is(err, rooms.ErrReply) {
		return false // WRONGTYPE and the like: forwarded as it is, Redis answers in its own words
	}
	if err != nil {
		s.err(upstreamErrorText(err))
		return true
	}
	if strings.EqualFold(string(args[0]), "hmset") {
		s.simple("OK")
	} else {
		s.integer(added)
	}
	d.NoteWrite(id)
	d.Prime(id, string(args[1]), fields)
	d.CountWriteThrough()
	return true
}

// readPending answers a read of a key with a pending write from the pending
// value, when the command is one that value can answer. When it cannot,
// settled reports that Redis is current for this read anyway (hash fields
// none of which is pending), so no flush is needed.
func (s *session) readPending(name string, args [][]byte) (answered, settled bool) {
	d := s.debouncer()
	if !d.Enabled() || len(args) < 2 {
		return false, false
	}
	key := string(args[1])
	var fields [][]byte
	switch name {
	case "hget", "hexists":
		fields = args[2:3]
	case "hmget":
		fields = args[2:]
	case "get", "strlen", "type", "exists":
		if len(args) != 2 {
			return false, false
		}
	default:
		return false, false
	}
	str, vals, hash, ok, none := d.Pending(key, fields)
	if !ok && !(hash && (name == "type" || name == "exists")) {
		return false, hash && none
	}
	switch {
	case name == "type" && hash:
		s.simple("hash")
	case name == "type":
		s.simple("string")
	case name == "exists":
		s.integer(1)
	case hash && name == "hget":
		s.bulk(vals[0])
	case hash && name == "hexists":
		s.integer(1)
	case hash && name == "hmget":
		s.array(len(vals))
		for _, v := range vals {
			s.bulk(v)
		}
	case !hash && name == "get":
		s.bulk(str)
	case !hash && name == "strlen":
		s.integer(int64(len(str)))
	default:
		return false, false // a string asked as a hash or back: Redis gives WRONGTYPE
	}
	d.CountRead()
	return true, false
}

// noteWrites counts a forwarded write for the snapshots of the rooms of its
// keys, once it has reached Redis, so that the room's next snapshot is taken
// after it.
func (s *session) noteWrites(keys [][]byte) {
	d := s.debouncer()
	if !d.Persisting() {
		return
	}
	m := s.srv.cfg.Rooms
	for _, k := range keys {
		if id, ok := m.RoomOf(k); ok {
			s.afterDrain = append(s.afterDrain, func() { d.NoteWrite(id) })
		}
	}
}

// settle makes Redis current for a command about to run there: if a key of
// it has a pending write (write: if a room of its keys has any), what is
// batched is sent and those rooms are flushed. If a flush fails the command
// is answered with an error and settle returns false.
func (s *session) settle(keys [][]byte, write bool) bool {
	d := s.debouncer()
	if !d.Enabled() {
		return true
	}
	m := s.srv.cfg.Rooms
	var ids []string
	for _, k := range keys {
		id, ok := m.RoomOf(k)
		if !ok {
			continue
		}
		if (write && d.HasRoom(id)) || (!write && d.HasKey(string(k))) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return true
	}
	s.drain() // what came before reaches Redis before the flush
	for _, id := range ids {
		ctx, cancel := s.upstreamCtx()
		err := d.FlushRoom(ctx, id)
		cancel()
		if err != nil {
			s.err(upstreamErrorText(err))
			return false
		}
	}
	return true
}

// settleCmds settles the room keys of several commands (a transaction's).
func (s *session) settleCmds(cmds [][][]byte) bool {
	if !s.debouncer().Enabled() {
		return true
	}
	for _, c := range cmds {
		sp := s.srv.table.lookup(c[0])
		if sp == nil {
			continue
		}
		if sp.Subs != nil && len(c) >= 2 {
			if sub := sp.sub(c[1]); sub != nil {
				sp = sub
			}
		}
		if sp.First == 0 || !s.touchesRoom(sp, c) {
			continue
		}
		if !s.settle(sp.keys(c), sp.Flags&FlagWrite != 0) {
			return false
		}
		if sp.Flags&FlagWrite != 0 {
			s.noteWrites(sp.keys(c))
		}
	}
	return true
}
