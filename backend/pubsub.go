package backend

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
	"github.com/roomproxy/roomproxy/batch"
)

// Subscriber is one client's subscription connection upstream, separate from
// the command pool. go-redis reconnects it and restores its subscriptions
// after a connection failure. Messages arrive on Messages until Close.
type Subscriber struct {
	u    *Upstream
	ps   *redis.PubSub
	msgs chan batch.Message
	once sync.Once
	done chan struct{} // closed when the relay goroutine has exited
}

// NewSubscriber opens nothing yet: the connection is dialed by the first
// Subscribe or PSubscribe.
func (u *Upstream) NewSubscriber(proto int) *Subscriber {
	e := u.engines[0]
	if proto == 3 {
		e = u.engines[1]
	}
	s := &Subscriber{u: u, ps: e.client.Subscribe(context.Background()), msgs: make(chan batch.Message, 128), done: make(chan struct{})}
	ping := u.cfg.PubSubPing
	if ping < 0 {
		ping = 0
	}
	in := s.ps.ChannelWithSubscriptions(redis.WithChannelSize(128), redis.WithChannelHealthCheckInterval(ping))
	go func() {
		defer close(s.done)
		defer close(s.msgs)
		for v := range in {
			switch m := v.(type) {
			case *redis.Message:
				kind := "message"
				if m.Pattern != "" {
					kind = "pmessage"
				}
				s.msgs <- batch.Message{Kind: kind, Pattern: m.Pattern, Channel: m.Channel, Payload: m.Payload}
			case *redis.Subscription:
				s.msgs <- batch.Message{Kind: m.Kind, Channel: m.Channel}
			}
		}
	}()
	return s
}

// Messages delivers messages and subscription confirmations in the order the
// upstream sent them. It is closed after Close.
func (s *Subscriber) Messages() <-chan batch.Message { return s.msgs }

// Subscribe adds channels. While the circuit breaker is not closed it fails
// at once with ErrUnavailable and sends nothing.
func (s *Subscriber) Subscribe(ctx context.Context, channels ...string) error {
	return s.guarded(func() error { return s.ps.Subscribe(ctx, channels...) })
}

// PSubscribe adds patterns, guarded like Subscribe.
func (s *Subscriber) PSubscribe(ctx context.Context, patterns ...string) error {
	return s.guarded(func() error { return s.ps.PSubscribe(ctx, patterns...) })
}

// guarded runs a subscription command past the circuit breaker and counts
// its outcome. Unsubscribing is not guarded: it also forgets the names
// locally, which must happen whatever the upstream's state.
func (s *Subscriber) guarded(send func() error) error {
	br := s.u.breaker
	ticket, ok := br.admit()
	if !ok {
		br.reject()
		return ErrUnavailable
	}
	s.u.commands.Add(1)
	err := send()
	br.record(ticket, err)
	return generic(err)
}

// Unsubscribe removes channels; none means all.
func (s *Subscriber) Unsubscribe(ctx context.Context, channels ...string) error {
	s.u.commands.Add(1)
	return s.ps.Unsubscribe(ctx, channels...)
}

// PUnsubscribe removes patterns; none means all.
func (s *Subscriber) PUnsubscribe(ctx context.Context, patterns ...string) error {
	s.u.commands.Add(1)
	return s.ps.PUnsubscribe(ctx, patterns...)
}

// Close ends the subscription connection and the relay. Messages not yet
// taken are dropped.
func (s *Subscriber) Close() error {
	var err error
	s.once.Do(func() {
		err = s.ps.Close()
		for range s.msgs { // unblock the relay if it waits on a full channel
		}
		<-s.done
	})
	return err
}
