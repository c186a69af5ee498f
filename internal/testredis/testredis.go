// Package testredis starts real redis-server processes for tests: plain, with
// a password, or with TLS (certificates made by the test, none committed).
// redis-server must be on PATH (apt-get install redis-server); a missing one
// fails the test instead of skipping it, so CI cannot pass without it.
package testredis

import (
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/internal/testcert"
)

// Options choose how the server runs.
type Options struct {
	Password string   // requirepass
	TLS      bool     // TLS only (no plaintext port), with a CA made for the test
	Args     []string // more redis-server arguments
}

// Server is a running redis-server. It is killed when the test ends.
type Server struct {
	Addr     string // host:port
	Port     int
	CAFile   string // PEM of the CA that signed the server certificate (TLS only)
	Password string
	opts     Options
	dir      string
	mu       sync.Mutex // protects cmd: Kill and Restart may come from other goroutines
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has been waited for
	t        testing.TB
}

// Start starts redis-server on a free loopback port and waits until it answers.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: apt-get install -y redis-server redis-tools")
	}
	s := &Server{opts: o, dir: t.TempDir(), t: t, Password: o.Password}
	if o.TLS {
		s.CAFile = writeCerts(t, s.dir)
	}
	var err error
	for range 5 {
		s.Port = FreePort(t)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	t.Cleanup(s.Kill)
	return s
}

// URL is the URL roomproxy's REDIS_URL would hold for this server.
func (s *Server) URL() string {
	scheme := "redis"
	if s.opts.TLS {
		scheme = "rediss"
	}
	auth := ""
	if s.Password != "" {
		auth = "default:" + s.Password + "@"
	}
	return fmt.Sprintf("%s://%slocalhost:%d", scheme, auth, s.Port)
}

func (s *Server) start() error {
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir}
	if s.opts.TLS {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(s.Port),
			"--tls-cert-file", filepath.Join(s.dir, "server.crt"),
			"--tls-key-file", filepath.Join(s.dir, "server.key"),
			"--tls-ca-cert-file", s.CAFile, "--tls-auth-clients", "no")
	} else {
		args = append(args, "--port", strconv.Itoa(s.Port))
	}
	if s.Password != "" {
		args = append(args, "--requirepass", s.Password)
	}
	args = append(args, s.opts.Args...)
	cmd := exec.Command("redis-server", args...)
	log, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", time.Now().UnixNano())))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	waited := make(chan struct{})
	go func() { exited <- cmd.Wait(); log.Close(); close(waited) }()
	s.mu.Lock()
	s.exited = waited
	s.mu.Unlock()
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited at start: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			s.mu.Lock()
			s.cmd = cmd
			s.mu.Unlock()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	return fmt.Errorf("not answering on %s", s.Addr)
}

// Kill stops the server with SIGKILL; its data is gone (no persistence).
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// Restart starts the server again, empty, on the same port. It may be called
// from any goroutine; a failure is reported with Errorf.
func (s *Server) Restart() {
	s.Kill()
	if err := s.start(); err != nil {
		s.t.Errorf("redis-server restart: %v", err)
	}
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// writeCerts makes a CA and a server certificate for the name localhost
// in dir, and returns the CA's PEM file.
func writeCerts(t testing.TB, dir string) string {
	ca, caKey := NewCA(t)
	// localhost only: connecting to 127.0.0.1 is then a host-name mismatch.
	crt, key := Issue(t, ca, caKey, []string{"localhost"}, nil)
	caFile := filepath.Join(dir, "ca.crt")
	mustWrite(t, caFile, testcert.PEM("CERTIFICATE", ca.Raw))
	mustWrite(t, filepath.Join(dir, "server.crt"), testcert.PEM("CERTIFICATE", crt))
	mustWrite(t, filepath.Join(dir, "server.key"), key)
	return caFile
}

// NewCA makes a self-signed CA (testcert.NewCA, failing t on error).
func NewCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	ca, key, err := testcert.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

// Issue signs a certificate good for a server and for a client
// (testcert.Issue, failing t on error); it returns the DER certificate and
// the PEM private key.
func Issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, names []string, ips []net.IP) ([]byte, []byte) {
	der, key, err := testcert.Issue(ca, caKey, names, ips)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func mustWrite(t testing.TB, path string, b []byte) {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
