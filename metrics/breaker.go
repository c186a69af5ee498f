package metrics

import "github.com/prometheus/client_golang/prometheus"

// BreakerStates is the closed set of the upstream circuit breaker's states,
// the values of the state, from and to labels.
var BreakerStates = []string{"closed", "open", "half-open", "recovering"}

// BreakerStats are the upstream circuit breaker's state and counters.
// Transitions is indexed [from][to] in the order of BreakerStates.
type BreakerStats struct {
	State       string
	Transitions [][]int64
	Rejected    int64 // client batches failed fast while not closed
	Faults      int64 // client round trips that counted as upstream faults
	Probes      int64 // probe PINGs sent (billed)
}

// RegisterBreaker exports the breaker's state and counters, read from fn at
// scrape time: roomproxy_breaker_state{state} (1 for the current state),
// roomproxy_breaker_transitions_total{from,to},
// roomproxy_breaker_rejected_batches_total, roomproxy_breaker_faults_total
// and roomproxy_breaker_probes_total.
func (m *Metrics) RegisterBreaker(fn func() BreakerStats) {
	m.reg.MustRegister(&breakerCollector{fn: fn,
		state: prometheus.NewDesc(namespace+"_breaker_state",
			"1 for the upstream circuit breaker's current state, 0 for the others.", []string{"state"}, nil),
		transitions: prometheus.NewDesc(namespace+"_breaker_transitions_total",
			"Changes of the upstream circuit breaker's state.", []string{"from", "to"}, nil),
		rejected: prometheus.NewDesc(namespace+"_breaker_rejected_batches_total",
			"Client batches answered -TRYAGAIN at once, without the upstream, while the breaker was not closed.", nil, nil),
		faults: prometheus.NewDesc(namespace+"_breaker_faults_total",
			"Upstream round trips that counted as faults (timeouts, connection, TLS and auth failures, LOADING/BUSY/READONLY/MASTERDOWN, quota errors).", nil, nil),
		probes: prometheus.NewDesc(namespace+"_breaker_probes_total",
			"PINGs the breaker's probe sent to the upstream (billed).", nil, nil),
	})
}

// breakerTransitions are the changes the breaker can make, as indexes into
// BreakerStates: closed>open, open>half-open, half-open>open,
// half-open>closed, half-open>recovering, recovering>open, recovering>closed.
var breakerTransitions = [][2]int{{0, 1}, {1, 2}, {2, 1}, {2, 0}, {2, 3}, {3, 1}, {3, 0}}

type breakerCollector struct {
	fn                                           func() BreakerStats
	state, transitions, rejected, faults, probes *prometheus.Desc
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.transitions
	ch <- c.rejected
	ch <- c.faults
	ch <- c.probes
}

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.fn()
	for _, st := range BreakerStates {
		v := 0.0
		if st == s.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, st)
	}
	for _, t := range breakerTransitions {
		n := int64(0)
		if t[0] < len(s.Transitions) && t[1] < len(s.Transitions[t[0]]) {
			n = s.Transitions[t[0]][t[1]]
		}
		ch <- prometheus.MustNewConstMetric(c.transitions, prometheus.CounterValue, float64(n), BreakerStates[t[0]], BreakerStates[t[1]])
	}
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(s.Rejected))
	ch <- prometheus.MustNewConstMetric(c.faults, prometheus.CounterValue, float64(s.Faults))
	ch <- prometheus.MustNewConstMetric(c.probes, prometheus.CounterValue, float64(s.Probes))
}
