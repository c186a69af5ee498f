package backend

import (
	"github.com/alicebob/miniredis/v2"
)

// Embedded is an in-process Redis-compatible server (miniredis) for the
// zero-configuration mode (SPEC section 12): with no REDIS_URL, roomproxy
// forwards to it over loopback exactly as it would to Upstash. Its data lives
// in memory and is gone when the process exits.
type Embedded struct {
	m *miniredis.Miniredis
}

// StartEmbedded starts the server on a free loopback port.
func StartEmbedded() (*Embedded, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return &Embedded{m: m}, nil
}

// URL is the redis:// URL to give Config.URL.
func (e *Embedded) URL() string { return "redis://" + e.m.Addr() }

// Close stops the server.
func (e *Embedded) Close() { e.m.Close() }
