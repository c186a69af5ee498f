// Command gencert writes a throwaway CA and a certificate it signed for
// localhost and 127.0.0.1 (good for a server and a client), for tests that
// run roomproxy's TLS listener from outside Go (e2e/run.sh):
//
//	go run ./tools/gencert DIR   # writes DIR/ca.crt, DIR/tls.crt, DIR/tls.key
//
// Valid for a day; nothing it writes is meant to be kept.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/roomproxy/roomproxy/internal/testcert"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gencert DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gencert:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	ca, caKey, err := testcert.NewCA()
	if err != nil {
		return err
	}
	der, key, err := testcert.Issue(ca, caKey, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{
		"ca.crt":  testcert.PEM("CERTIFICATE", ca.Raw),
		"tls.crt": testcert.PEM("CERTIFICATE", der),
		"tls.key": key,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
