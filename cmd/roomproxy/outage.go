package main

import (
	"strconv"

	"github.com/roomproxy/roomproxy/metrics"
	"github.com/roomproxy/roomproxy/proxy"
	"github.com/roomproxy/roomproxy/rooms"
)

// fallbackInfo is INFO's fallback section.
func fallbackInfo(mgr *rooms.Manager, kind string) proxy.InfoSection {
	return proxy.InfoSection{Name: "fallback", Fields: func() [][2]string {
		st := mgr.DegradedStats()
		i := func(n int64) string { return strconv.FormatInt(n, 10) }
		return [][2]string{
			{"fallback_store", kind},
			{"fallback_serving", boolDigit(mgr.Down())},
			{"fallback_reads", i(st.Reads)},
			{"fallback_writes", i(st.Writes)},
			{"fallback_errors", i(st.Errors)},
			{"fallback_dirty_rooms", i(st.Dirty)},
			{"fallback_resynced_rooms", i(st.Resynced)},
		}
	}}
}

func fallbackMetrics(mgr *rooms.Manager) func() metrics.FallbackStats {
	return func() metrics.FallbackStats {
		st := mgr.DegradedStats()
		return metrics.FallbackStats{Reads: st.Reads, Writes: st.Writes, Errors: st.Errors, Dirty: st.Dirty, Resynced: st.Resynced}
	}
}
