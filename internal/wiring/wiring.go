// Package wiring adapts the backend to the interfaces the proxy declares.
// Go needs this small bridge because backend returns concrete types (*Lane,
// *Subscriber) while proxy asks for its own interfaces; neither package may
// import the other. cmd/roomproxy and the integration tests both use it, so
// the tests run exactly the production wiring.
package wiring

import (
	"context"

	"github.com/roomproxy/roomproxy/backend"
	"github.com/roomproxy/roomproxy/batch"
	"github.com/roomproxy/roomproxy/proxy"
	"github.com/roomproxy/roomproxy/rooms"
)

// Upstream presents a backend.Upstream as a proxy.Upstream.
func Upstream(u *backend.Upstream) proxy.Upstream { return upstream{u} }

type upstream struct{ *backend.Upstream }

func (u upstream) Lane(ctx context.Context, proto int) (proxy.Lane, error) {
	l, err := u.AcquireLane(ctx, proto)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (u upstream) Subscriber(proto int) proxy.Subscriber { return u.NewSubscriber(proto) }

// Exec runs commands upstream over RESP2 in one round trip and waits for
// them: what the room manager uses to read and expire room keys.
func Exec(u *backend.Upstream) rooms.Exec {
	return func(_ context.Context, cmds [][][]byte) []batch.Reply {
		b := batch.New()
		b.Reset(2)
		for _, c := range cmds {
			b.Add(c, false)
		}
		u.Submit(b)
		b.Wait()
		return b.Replies
	}
}
