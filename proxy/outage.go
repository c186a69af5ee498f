package proxy

import (
	"context"
	"errors"

	"github.com/roomproxy/roomproxy/rooms"
)

// Rooms during an upstream outage (SPEC 5). While the upstream is
// unavailable, and for rooms written meanwhile until they are back in
// Redis, commands on a room's keys are served from the room store; state
// writes are still debounced (their flushes go to the store). Commands on
// other keys get the upstream's fast -TRYAGAIN.

// roomDegraded reports whether the room of a command's keys is served from
// the store now.
func (s *session) roomDegraded(sp *Spec, args [][]byte) bool {
	m := s.srv.cfg.Rooms
	if m.Down() {
		return true
	}
	degraded := false
	sp.eachKey(args, func(k []byte) bool {
		if id, ok := m.RoomOf(k); ok && m.Dirty(id) {
			degraded = true
		}
		return !degraded
	})
	return degraded
}

// storeCtx bounds a command served from the room store.
func (s *session) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.srv.lim.StoreTimeout)
}

// fromStore answers a command on one room's keys from the room store.
func (s *session) fromStore(sp *Spec, args [][]byte, write bool) {
	ctx, cancel := s.storeCtx()
	raw, err := s.srv.cfg.Rooms.ServeFromStore(ctx, s.proto, args, sp.keys(args), write)
	cancel()
	if err != nil {
		s.err(storeErrorText(err))
		return
	}
	s.out = append(s.out, raw...)
}

// storeErrorText is what a client is told when the store path fails.
func storeErrorText(err error) string {
	switch {
	case errors.Is(err, rooms.ErrStore):
		return "TRYAGAIN room store unavailable: the write was not applied"
	case errors.Is(err, rooms.ErrTooLarge):
		return "ERR room document too large"
	case errors.Is(err, rooms.ErrNotRoomCommand):
		return "TRYAGAIN upstream unavailable"
	}
	return upstreamErrorText(err)
}

// rescueReads answers, from the room store, room reads whose round trip
// failed because the upstream did: a client reading a room never sees the
// upstream's failure (SPEC 5), even in the moment before the breaker opens.
func (s *session) rescueReads() {
	m := s.srv.cfg.Rooms
	for i := range s.slots {
		sl := &s.slots[i]
		if !sl.roomCmd || sl.fwd < 0 || s.batch.Replies[sl.fwd].Err == nil || sl.spec.Flags&FlagWrite != 0 {
			continue
		}
		args := s.batch.Cmds[sl.fwd]
		ctx, cancel := s.storeCtx()
		raw, err := m.ServeFromStore(ctx, s.proto, args, sl.spec.keys(args), false)
		cancel()
		if err == nil {
			s.batch.Replies[sl.fwd].Raw, s.batch.Replies[sl.fwd].Err = raw, nil
			sl.fromStore = true
		}
	}
}
