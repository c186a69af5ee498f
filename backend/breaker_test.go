package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want Verdict
	}{
		{"nil", nil, VerdictSuccess},
		{"client went away", context.Canceled, VerdictExcluded},
		{"client went away, wrapped", fmt.Errorf("pipeline: %w", context.Canceled), VerdictExcluded},
		{"closed by roomproxy", net.ErrClosed, VerdictExcluded},
		{"go-redis closed", redis.ErrClosed, VerdictExcluded},
		{"upstream closed", errClosed, VerdictExcluded},
		{"deadline", context.DeadlineExceeded, VerdictFault},
		{"socket deadline", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, VerdictFault},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, VerdictFault},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, VerdictFault},
		{"broken pipe", &net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}, VerdictFault},
		{"EOF", io.EOF, VerdictFault},
		{"unknown authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, VerdictFault},
		{"host name", x509.HostnameError{Host: "x"}, VerdictFault},
		{"bad certificate alert", tls.AlertError(42), VerdictFault},
		{"wrong password", faultReply("WRONGPASS invalid username-password pair or user is disabled."), VerdictFault},
		{"malformed reply", errors.New("redis: invalid reply: \"?\""), VerdictFault},
	}
	for _, c := range cases {
		if got := Classify(c.err); got != c.want {
			t.Errorf("%s: Classify(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

func TestClassifyReply(t *testing.T) {
	faults := []string{
		"-LOADING Redis is loading the dataset in memory\r\n",
		"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
		"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
		"-READONLY You can't write against a read only replica.\r\n",
		"-CLUSTERDOWN The cluster is down\r\n",
		"-MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.\r\n",
		"-NOAUTH Authentication required.\r\n",
		"-WRONGPASS invalid or missing auth token\r\n",
		"-ERR max daily request limit exceeded. Limit: 10000, Usage: 10000. See https://upstash.com/docs/redis/troubleshooting/max_daily_request_limit for details\r\n",
		"-ERR max requests limit exceeded. Limit: 500000, Usage: 500000.\r\n",
		"-ERR max concurrent connections exceeded\r\n",
		"-ERR DB capacity quota exceeded\r\n",
		"-ERR max number of clients reached\r\n",
		"-ERR max monthly bandwidth limit exceeded\r\n",
		"!21\r\nLOADING still loading\r\n",
	}
	for _, r := range faults {
		if ClassifyReply([]byte(r)) != VerdictFault {
			t.Errorf("%q is not a fault", r)
		}
	}
	fine := []string{
		"+OK\r\n", "$-1\r\n", "*-1\r\n", "_\r\n", ":1\r\n", "$5\r\nERR x\r\n",
		"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
		"-ERR syntax error\r\n",
		"-ERR unknown command 'x', with args beginning with: \r\n",
		"-ERR max request size exceeded\r\n",
		"-ERR max key size exceeded\r\n",
		"-ERR max single record size exceeded\r\n",
		"-BUSYKEY Target key name already exists.\r\n",
		"-BUSYGROUP Consumer Group name already exists\r\n",
		"-NOSCRIPT No matching script. Please use EVAL.\r\n",
		"-EXECABORT Transaction discarded because of previous errors.\r\n",
		"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
		"!9\r\nSYNTAX no\r\n",
	}
	for _, r := range fine {
		if ClassifyReply([]byte(r)) != VerdictSuccess {
			t.Errorf("%q counts as a fault", r)
		}
	}
}

// fakeProbe is a probe whose answer the test sets; it can also hold the
// probe until released.
type fakeProbe struct {
	err   atomic.Pointer[error]
	hold  atomic.Pointer[chan struct{}]
	pings atomic.Int32
}

func (p *fakeProbe) set(err error) { p.err.Store(&err) }

func (p *fakeProbe) ping(ctx context.Context) error {
	p.pings.Add(1)
	if h := p.hold.Load(); h != nil {
		select {
		case <-*h:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

// recorder keeps the transitions a listener saw.
type recorder struct {
	mu  sync.Mutex
	trs []string
}

func (r *recorder) add(tr Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trs = append(r.trs, tr.From.String()+">"+tr.To.String())
}

func (r *recorder) get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.trs)
}

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

func fault(b *Breaker, err error) {
	t, _ := b.admit()
	b.record(t, err)
}

func newTestBreaker(cfg BreakerConfig) (*Breaker, *fakeProbe, *recorder) {
	p := &fakeProbe{}
	b := newBreaker(cfg, time.Second, slog.New(slog.DiscardHandler), p.ping)
	r := &recorder{}
	b.OnChange(r.add)
	return b, p, r
}

// TestBreakerStateMachine walks the breaker through an outage with a fake
// probe and the synctest clock: faults in a row open it, a success ends the
// run, nothing is probed before OpenTimeout, a failed probe reopens it, a
// good one closes it, and client outcomes outside the closed state change
// nothing.
func TestBreakerStateMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, p, r := newTestBreaker(BreakerConfig{})
		defer b.close()
		for range 4 {
			fault(b, errRefused)
		}
		fault(b, nil) // a success ends the run of faults
		for range 4 {
			fault(b, errRefused)
		}
		for range 10 {
			fault(b, context.Canceled) // clients going away count neither way
		}
		if b.State() != BreakerClosed {
			t.Fatalf("state %v after 4 faults in a row", b.State())
		}
		stale, _ := b.admit()
		fault(b, errRefused)
		if b.State() != BreakerOpen {
			t.Fatalf("state %v after 5 faults in a row", b.State())
		}
		select {
		case <-b.Closed():
			t.Fatal("Closed() is closed while open")
		default:
		}
		opened := time.Now()

		// Outcomes of round trips admitted before the opening change nothing.
		b.record(stale, nil)
		p.set(errRefused)
		time.Sleep(999 * time.Millisecond)
		synctest.Wait()
		if n := p.pings.Load(); n != 0 || b.State() != BreakerOpen {
			t.Fatalf("%d probes, state %v before OpenTimeout", n, b.State())
		}
		// The first probe after OpenTimeout fails: open again.
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		if n := p.pings.Load(); n != 1 || b.State() != BreakerOpen {
			t.Fatalf("after OpenTimeout: %d probes, state %v", n, b.State())
		}
		// The upstream answers again: the next probe closes the breaker.
		p.set(nil)
		<-b.Closed()
		if d := time.Since(opened); d < 2*time.Second || d > 3*time.Second {
			t.Errorf("closed %v after opening, want between 2 and 3 s", d)
		}
		synctest.Wait()
		want := "[closed>open open>half-open half-open>open open>half-open half-open>closed]"
		if got := r.get(); got != want {
			t.Errorf("transitions %s, want %s", got, want)
		}
		// While closed the probe sends nothing.
		n := p.pings.Load()
		time.Sleep(10 * time.Second)
		if p.pings.Load() != n {
			t.Error("the probe pinged while the breaker was closed")
		}
		st := b.Stats()
		if st.Excluded != 10 || st.Faults != 9 || st.Probes != 2 || st.LastCause != "connection" ||
			st.Transitions[BreakerClosed][BreakerOpen] != 1 || st.Transitions[BreakerHalfOpen][BreakerOpen] != 1 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestBreakerTimeoutsTripSooner: two round trips in a row that ran out their
// deadline open the breaker, before Failures faults.
func TestBreakerTimeoutsTripSooner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _, _ := newTestBreaker(BreakerConfig{})
		defer b.close()
		fault(b, context.DeadlineExceeded)
		fault(b, nil)
		fault(b, context.DeadlineExceeded)
		if b.State() != BreakerClosed {
			t.Fatal("opened on timeouts with a success between them")
		}
		fault(b, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded})
		if b.State() != BreakerOpen {
			t.Fatalf("state %v after 2 timeouts in a row", b.State())
		}
		if st := b.Stats(); st.LastCause != "timeout" {
			t.Errorf("cause %q", st.LastCause)
		}
	})
}

// TestBreakerClientTrafficNeverCloses: while the probe holds the half-open
// slot, client outcomes (even successes) are not counted, and the breaker
// stays rejecting; it closes only when the probe reports.
func TestBreakerClientTrafficNeverCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, p, _ := newTestBreaker(BreakerConfig{Failures: 1})
		defer b.close()
		ticket, _ := b.admit()
		hold := make(chan struct{})
		p.hold.Store(&hold)
		fault(b, errRefused)
		time.Sleep(1300 * time.Millisecond) // probes every 250 ms; the first after OpenTimeout is at 1.25 s
		synctest.Wait()                     // the probe is blocked in its PING: half-open
		if b.State() != BreakerHalfOpen {
			t.Fatalf("state %v", b.State())
		}
		for range 100 {
			if _, ok := b.admit(); ok {
				t.Fatal("client traffic admitted while half-open")
			}
			b.record(ticket, nil)
		}
		if b.State() != BreakerHalfOpen {
			t.Fatalf("client successes moved the breaker to %v", b.State())
		}
		close(hold)
		<-b.Closed()
	})
}

// TestBreakerOnRecover: the hook runs once per recovery, after the probe's
// PING and before traffic is admitted; an error reopens the breaker and the
// hook runs again at the next recovery.
func TestBreakerOnRecover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _, r := newTestBreaker(BreakerConfig{Failures: 1})
		defer b.close()
		var calls atomic.Int32
		release := make(chan error)
		b.SetRecover(func(ctx context.Context) error {
			calls.Add(1)
			return <-release
		})
		fault(b, errRefused)
		time.Sleep(1300 * time.Millisecond) // probes every 250 ms; the first after OpenTimeout is at 1.25 s
		synctest.Wait()
		if b.State() != BreakerRecovering || calls.Load() != 1 {
			t.Fatalf("state %v, %d hook calls", b.State(), calls.Load())
		}
		if _, ok := b.admit(); ok {
			t.Fatal("traffic admitted while recovering")
		}
		release <- errors.New("store down")
		synctest.Wait()
		if b.State() != BreakerOpen {
			t.Fatalf("state %v after the hook failed", b.State())
		}
		time.Sleep(1300 * time.Millisecond) // probes every 250 ms; the first after OpenTimeout is at 1.25 s
		synctest.Wait()
		if calls.Load() != 2 {
			t.Fatalf("%d hook calls", calls.Load())
		}
		release <- nil
		<-b.Closed()
		time.Sleep(5 * time.Second)
		if calls.Load() != 2 {
			t.Fatalf("%d hook calls after closing", calls.Load())
		}
		synctest.Wait()
		want := "[closed>open open>half-open half-open>recovering recovering>open open>half-open half-open>recovering recovering>closed]"
		if got := r.get(); got != want {
			t.Errorf("transitions %s, want %s", got, want)
		}
		if st := b.Stats(); st.LastCause != "recover" {
			t.Errorf("cause %q", st.LastCause)
		}
	})
}

// TestBreakerHalfOpenProbes: with HalfOpenProbes 3, three PINGs in a row
// must succeed before the breaker closes.
func TestBreakerHalfOpenProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, p, _ := newTestBreaker(BreakerConfig{Failures: 1, HalfOpenProbes: 3})
		defer b.close()
		fault(b, errRefused)
		<-b.Closed()
		if n := p.pings.Load(); n != 3 {
			t.Fatalf("closed after %d probes", n)
		}
	})
}

// BenchmarkBreakerClosed is the breaker's share of a round trip while it is
// closed and the upstream answers: admit and record a success.
func BenchmarkBreakerClosed(b *testing.B) {
	br, _, _ := newTestBreaker(BreakerConfig{})
	defer br.close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t, ok := br.admit()
			if !ok {
				b.Fatal("not admitted")
			}
			br.record(t, nil)
		}
	})
}
