// Package proxy is roomproxy's client side: a RESP2/RESP3 server that any
// Redis client can use in place of Redis.
//
// It reads commands through a frameGuard that enforces the input limits and
// parses them in place with redcon's parser, answers what it can itself
// (PING, HELLO, AUTH, INFO, COMMAND, CONFIG GET, CLIENT ...), refuses what
// the command table denies, and hands everything else to an Upstream as one
// batch per client pipeline. Replies go back in request order.
//
// Concurrency: one goroutine per client connection owns its session, reads
// its commands and is the only writer to its socket. The Server's maps are
// guarded by Server.mu; counters are atomic. The command table is built once
// and read-only afterwards.
package proxy
