// Package testsupport holds small helpers shared by the test packages:
// a per-test goroutine leak check, a bounded wait for a condition, a log
// sink safe for concurrent writers, and commands built from strings.
package testsupport

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakCheck makes the test fail if goroutines it started are left once all
// its cleanups (registered after this call: servers killed, proxies stopped)
// have run, so that each fault test ends with no leak of its own, not only
// the package as a whole.
func LeakCheck(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// After failed dials go-redis probes in a goroutine that sleeps 1 s
		// between attempts and sees its pool closed only when it wakes:
		// goleak's own retries give up sooner, so wait up to 3 s first.
		for end := time.Now().Add(3 * time.Second); goleak.Find(before) != nil && time.Now().Before(end); {
			time.Sleep(50 * time.Millisecond)
		}
		goleak.VerifyNone(t, before)
	})
}

// Eventually polls cond every 10 ms until it holds, and fails the test if
// within passes first.
func Eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer safe for a logger's goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Args is a command as the proxy and the upstream engine carry it: one
// []byte per argument.
func Args(a ...string) [][]byte {
	out := make([][]byte, len(a))
	for i, s := range a {
		out[i] = []byte(s)
	}
	return out
}
