// Package backend is roomproxy's upstream side: Redis (Upstash in
// production) reached with go-redis.
//
// Upstream multiplexes every client connection over a few upstream
// connections per RESP version and pipelines batches that arrive together into
// one round trip. Replies are raw RESP bytes (go-redis RawCmd), so what a
// client receives is byte for byte what Redis sent. Deadlines reach the
// socket; only read-only round trips are ever retried.
//
// A circuit breaker (Breaker, sony/gobreaker/v2) guards the upstream: while
// it is not closed every batch fails at once with ErrUnavailable, and only its
// probe goroutine, never client traffic, closes it again (see breaker.go and
// docs/ARCHITECTURE.md, Circuit breaker).
//
// Concurrency: each engine owns Conns worker goroutines that take batches
// from a bounded queue; Close stops the breaker's goroutines and the queue,
// waits for the workers and closes the pool. Counters are atomic. Embedded
// runs miniredis for the zero-configuration mode.
package backend
