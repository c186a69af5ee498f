package backend

import (
	"context"
	"sync"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/batch"
)

// Scratch is an in-process Redis (miniredis) on loopback that runs clients'
// commands on one room at a time while the upstream is unavailable: the room
// is loaded from the room store, the command runs with Redis's own
// semantics and reply bytes, and the room is read back. Callers hold Lock
// for the whole load, run, read back sequence.
type Scratch struct {
	sync.Mutex
	m      *miniredis.Miniredis
	c2, c3 *redis.Client
}

// NewScratch starts the scratch server.
func NewScratch() (*Scratch, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, err
	}
	opt := func(proto int) *redis.Options {
		return &redis.Options{Addr: m.Addr(), Protocol: proto, PoolSize: 1, MaxRetries: -1,
			DisableIdentity: true, ContextTimeoutEnabled: true}
	}
	return &Scratch{m: m, c2: redis.NewClient(opt(2)), c3: redis.NewClient(opt(3))}, nil
}

// Exec runs cmds in one pipeline over RESP proto (2 or 3) and returns each
// reply's raw bytes.
func (s *Scratch) Exec(ctx context.Context, proto int, cmds [][][]byte) []batch.Reply {
	c := s.c2
	if proto == 3 {
		c = s.c3
	}
	raw := make([]*redis.RawCmd, len(cmds))
	ia := argsFor(argCount(cmds))
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, args := range cmds {
			raw[i] = redis.NewRawCmd(ctx, ia.next(args)...)
			p.Process(ctx, raw[i])
		}
		return nil
	})
	out := make([]batch.Reply, len(cmds))
	for i, r := range raw {
		out[i] = replyOf(r, err)
	}
	return out
}

// Close stops the scratch server.
func (s *Scratch) Close() {
	s.c2.Close()
	s.c3.Close()
	s.m.Close()
}
