// Package testmongo starts a real MongoDB-wire server for tests: FerretDB v1
// on SQLite, through the wrapper in .ci/ferretdb, built by scripts/deps.sh
// (`bash scripts/deps.sh` or `make deps`). A missing binary fails the test
// with that instruction rather than skipping, so CI cannot pass without it.
package testmongo

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is a running FerretDB. It stops when the test ends.
type Server struct {
	URL string // mongodb://127.0.0.1:PORT/
	cmd *exec.Cmd
}

// Binary is where scripts/deps.sh puts the wrapper, unless
// ROOMPROXY_FERRETDB names another one.
func Binary() string {
	if p := os.Getenv("ROOMPROXY_FERRETDB"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", ".ci", "ferretdb", "bin", "ferretdb")
}

// Start runs FerretDB on a free loopback port with its data in a temp dir.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("FerretDB wrapper not built at %s: run `bash scripts/deps.sh` (it builds .ci/ferretdb)", bin)
	}
	cmd := exec.Command(bin, "-dir", t.TempDir(), "-listen", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Server{cmd: cmd}
	t.Cleanup(s.Stop)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "mongodb://") {
				lines <- sc.Text()
			}
		}
	}()
	select {
	case s.URL = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatal("FerretDB did not start within 30 s")
	}
	return s
}

// Stop ends the server (SIGKILL: FerretDB is wedged by some inputs and must
// never hold up a test).
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
		s.cmd.Wait()
	}
}
