package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/roomproxy/roomproxy/internal/resptest"
	"github.com/roomproxy/roomproxy/internal/testcert"
	"github.com/roomproxy/roomproxy/internal/testredis"
	"github.com/roomproxy/roomproxy/internal/testsupport"
)

// tlsCounter counts connections refused for their TLS handshake.
type tlsCounter struct {
	nopObserver
	n atomic.Int64
}

func (o *tlsCounter) Rejected(reason string) {
	if reason == "tls" {
		o.n.Add(1)
	}
}

// testCerts is a CA and a certificate it signed for localhost and
// 127.0.0.1 (good for a server and for a client).
type testCerts struct {
	pool *x509.CertPool
	cert tls.Certificate
}

func newTestCerts(t *testing.T) testCerts {
	ca, caKey := testredis.NewCA(t)
	der, keyPEM := testredis.Issue(t, ca, caKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	crt, err := tls.X509KeyPair(testcert.PEM("CERTIFICATE", der), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testCerts{pool: pool, cert: crt}
}

// tlsPing dials addr with cfg, sends PING and returns the reply, or the
// first error of the handshake, the write or the read.
func tlsPing(addr string, cfg *tls.Config) (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(encode("PING"))); err != nil {
		return "", err
	}
	return resptest.ReadReply(bufio.NewReader(c))
}

// TestTLSListener: with Config.TLS the proxy speaks TLS 1.2+ only; a
// plaintext client, an old TLS version, a client without the required
// certificate and a client that never finishes its handshake are closed
// and counted; the server goes on serving.
func TestTLSListener(t *testing.T) {
	certs := newTestCerts(t)
	obs := &tlsCounter{}
	up := newFake()
	_, addr := startServer(t, up, Config{Observer: obs, Limits: Limits{FrameTimeout: 300 * time.Millisecond},
		TLS: &tls.Config{Certificates: []tls.Certificate{certs.cert}, MinVersion: tls.VersionTLS12}})
	client := &tls.Config{RootCAs: certs.pool, ServerName: "localhost"}

	if got, err := tlsPing(addr, client); err != nil || got != "+PONG\r\n" {
		t.Fatalf("TLS PING: %q, %v", got, err)
	}
	c, err := tls.Dial("tcp", addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(encode("SET", "k", "v") + encode("GET", "k")))
	br := bufio.NewReader(c)
	for _, want := range []string{"+OK\r\n", "$1\r\nv\r\n"} {
		if got, err := resptest.ReadReply(br); err != nil || got != want {
			t.Fatalf("forwarded over TLS: %q, %v, want %q", got, err, want)
		}
	}

	// Plaintext: no RESP reply, the connection is closed.
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(5 * time.Second))
	pc.Write([]byte("*1\r\n$4\r\nPING\r\n"))
	out, err := io.ReadAll(pc)
	if len(out) > 0 && out[0] == '+' || isTimeout(err) {
		t.Fatalf("plaintext client: %q, %v; want the connection closed without a reply", out, err)
	}

	// TLS 1.1 is refused.
	if got, err := tlsPing(addr, &tls.Config{RootCAs: certs.pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11}); err == nil {
		t.Fatalf("TLS 1.1 client: %q", got)
	}

	// A client that connects and says nothing is closed after the frame
	// deadline.
	sc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(sc); isTimeout(err) {
		t.Fatal("a silent client was not closed within 5 s (frame deadline 300 ms)")
	}

	// A refused client can see its error before the server has counted it
	// (the TLS 1.1 client reads the alert and returns), so wait for the count.
	testsupport.Eventually(t, 5*time.Second, "3 TLS rejections counted (plaintext, TLS 1.1, silent)", func() bool { return obs.n.Load() == 3 })
	if n := obs.n.Load(); n != 3 {
		t.Errorf("TLS rejections counted: %d, want 3", n)
	}
	if got, err := tlsPing(addr, client); err != nil || got != "+PONG\r\n" {
		t.Fatalf("TLS PING afterwards: %q, %v", got, err)
	}
}

// TestTLSClientCertificates: with ClientCAs the proxy serves only clients
// whose certificate the CA signed.
func TestTLSClientCertificates(t *testing.T) {
	certs := newTestCerts(t)
	other := newTestCerts(t) // another CA
	_, addr := startServer(t, newFake(), Config{TLS: &tls.Config{Certificates: []tls.Certificate{certs.cert},
		MinVersion: tls.VersionTLS12, ClientCAs: certs.pool, ClientAuth: tls.RequireAndVerifyClientCert}})
	withCert := func(c ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: certs.pool, ServerName: "localhost", Certificates: c}
	}
	if got, err := tlsPing(addr, withCert()); err == nil {
		t.Fatalf("no client certificate: %q", got)
	}
	if got, err := tlsPing(addr, withCert(other.cert)); err == nil {
		t.Fatalf("a certificate of another CA: %q", got)
	}
	if got, err := tlsPing(addr, withCert(certs.cert)); err != nil || got != "+PONG\r\n" {
		t.Fatalf("a certificate of the CA: %q, %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
