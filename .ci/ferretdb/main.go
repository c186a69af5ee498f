// Command ferretdb runs FerretDB v1 (a MongoDB-wire server) embedded, for
// roomproxy's tests only: the product's go.mod stays free of FerretDB's
// dependencies, and `go test ./...` in the repository root does not see this
// module. `go install` of FerretDB's own command panics at start (its version
// file is missing from the module zip), hence this wrapper.
//
//	ferretdb -dir /tmp/fdb -listen 127.0.0.1:0
//
// prints "mongodb://..." on stdout once it accepts connections and runs until
// SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	dir := flag.String("dir", "", "directory for the SQLite files (created if missing)")
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to listen on")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "ferretdb: -dir is required")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*dir)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	fmt.Println(f.MongoDBURI())
	<-done
}
