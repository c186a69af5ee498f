package wiring

import (
	"context"
	"log/slog"
	"time"

	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/rooms"
)

// ServeRoomsDuringOutages makes the room manager serve rooms from the store
// while the breaker is not closed, and re-syncs the rooms written meanwhile
// each time it closes, in the background (they are served from the store
// until then). It returns a function that stops the re-sync.
func ServeRoomsDuringOutages(up *backend.Upstream, mgr *rooms.Manager, scratch *backend.Scratch, perSecond int, log *slog.Logger) (stop func()) {
	br := up.Breaker()
	mgr.SetDegraded(scratch, func() bool { return br.State() != backend.BreakerClosed })
	// Rooms an earlier run wrote during an outage and did not write back:
	// marked before any client is served, re-synced by the loop below.
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	if n, err := mgr.LoadDirty(lctx); err != nil {
		log.Warn("cannot list the rooms written during an earlier outage; they may be read from an older copy in Redis", "err", err)
	} else if n > 0 {
		log.Info("rooms written during an earlier outage are served from the room store until written back to Redis", "rooms", n)
	}
	lcancel()
	ctx, cancel := context.WithCancel(context.Background())
	kick := make(chan struct{}, 1)
	br.OnChange(func(t backend.Transition) {
		if t.To == backend.BreakerClosed {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Also every second: a room written through the store while its
		// re-sync ran is dirty again and must not wait for the next outage.
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-tick.C:
			}
			// Until no room is dirty, or the upstream fails again (the
			// next closing kicks it again).
			for mgr.DegradedStats().Dirty > 0 && !mgr.Down() && ctx.Err() == nil {
				if mgr.Resync(ctx, perSecond, log) == 0 {
					break
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}
