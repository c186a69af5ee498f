// Package metrics exports roomproxy's Prometheus metrics and its health
// endpoints. Collectors are created by New into an injected registry (no
// global registration); every label comes from a closed set, never a key, a
// room id or an address. Counters are safe for concurrent use.
package metrics
