package main

import (
	"errors"
	"strconv"
	"time"

	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/metrics"
	"github.com/roomproxy/roomproxy/proxy"
)

// breakerSettings are the circuit breaker's variables (see
// backend.BreakerConfig for what each one does).
func breakerSettings(c *config) []setting {
	num := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return errors.New(strconv.Quote(v) + " is not a whole number of at least 1")
			}
			*p = n
			return nil
		}
	}
	ms := func(p *time.Duration, lo int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo {
				return errors.New(strconv.Quote(v) + " is not a number of milliseconds of at least " + strconv.Itoa(lo))
			}
			*p = time.Duration(n) * time.Millisecond
			return nil
		}
	}
	b := &c.Breaker
	return []setting{
		{"BREAKER_FAILURES", "5", "failed upstream round trips in a row (timeouts, refused or reset connections, TLS or auth failures, LOADING/BUSY/READONLY/MASTERDOWN, Upstash quota errors) that open the circuit breaker", num(&b.Failures)},
		{"BREAKER_TIMEOUTS", "2", "round trips in a row that ran out REDIS_TIMEOUT_MS that open it sooner (at most BREAKER_FAILURES)", num(&b.Timeouts)},
		{"BREAKER_OPEN_MS", "1000", "how long the breaker stays open before the probe PINGs the upstream, in milliseconds", ms(&b.OpenTimeout, 10)},
		{"BREAKER_PROBE_MS", "250", "how often the probe looks at a breaker that is not closed, in milliseconds (a PING is sent only after BREAKER_OPEN_MS)", ms(&b.ProbeInterval, 10)},
		{"BREAKER_HALF_OPEN_PROBES", "1", "probe PINGs in a row that must succeed before the breaker closes", num(&b.HalfOpenProbes)},
	}
}

// breakerInfo is INFO's breaker section.
func breakerInfo(up *backend.Upstream) proxy.InfoSection {
	return proxy.InfoSection{Name: "breaker", Fields: func() [][2]string {
		st := up.Breaker().Stats()
		opened := int64(0)
		for from := range st.Transitions {
			opened += st.Transitions[from][backend.BreakerOpen]
		}
		return [][2]string{
			{"breaker_state", st.State.String()},
			{"breaker_state_seconds", strconv.FormatFloat(time.Since(st.Since).Seconds(), 'f', 1, 64)},
			{"breaker_opened", strconv.FormatInt(opened, 10)},
			{"breaker_closed", strconv.FormatInt(st.Transitions[backend.BreakerHalfOpen][backend.BreakerClosed]+st.Transitions[backend.BreakerRecovering][backend.BreakerClosed], 10)},
			{"breaker_last_cause", st.LastCause},
			{"breaker_rejected_batches", strconv.FormatInt(st.Rejected, 10)},
			{"breaker_faults", strconv.FormatInt(st.Faults, 10)},
			{"breaker_excluded", strconv.FormatInt(st.Excluded, 10)},
			{"breaker_probes", strconv.FormatInt(st.Probes, 10)},
		}
	}}
}

// breakerMetrics converts the breaker's counters for metrics.RegisterBreaker.
func breakerMetrics(up *backend.Upstream) func() metrics.BreakerStats {
	return func() metrics.BreakerStats {
		st := up.Breaker().Stats()
		tr := make([][]int64, len(st.Transitions))
		for i := range st.Transitions {
			tr[i] = st.Transitions[i][:]
		}
		return metrics.BreakerStats{State: st.State.String(), Transitions: tr,
			Rejected: st.Rejected, Faults: st.Faults, Probes: st.Probes}
	}
}
