// Command latencyproxy is a benchmark helper: a TCP proxy that adds a fixed
// latency to everything it forwards, standing in for a remote Redis (for
// example a managed one in another availability zone) on a single machine.
//
// It runs Toxiproxy (github.com/Shopify/toxiproxy/v2) in-process with one
// proxy and one "latency" toxic on the downstream stream (upstream to
// client), so a request/reply round trip takes about -latency-ms longer than
// without it. Toxiproxy timestamps each chunk when it is read and releases it
// when due, so pipelined traffic keeps its throughput: the delay is not
// serialised per chunk.
//
//	go run ./bench/latencyproxy -listen 127.0.0.1:7000 -upstream 127.0.0.1:6379 -latency-ms 15
//
// It prints the address it listens on once it accepts connections, and exits
// on SIGTERM or SIGINT. bench/run.sh uses it for its --latency mode.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	upstream := flag.String("upstream", "", "address to forward to, host:port (required)")
	latencyMS := flag.Int64("latency-ms", 15, "latency added to each upstream-to-client chunk, in milliseconds (= added round-trip time)")
	jitterMS := flag.Int64("jitter-ms", 0, "random +/- jitter on that latency, in milliseconds")
	flag.Parse()
	if *upstream == "" || flag.NArg() > 0 || *latencyMS < 0 || *jitterMS < 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*listen, *upstream, *latencyMS, *jitterMS); err != nil {
		fmt.Fprintln(os.Stderr, "latencyproxy:", err)
		os.Exit(1)
	}
}

func run(listen, upstream string, latencyMS, jitterMS int64) error {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "redis", listen, upstream)
	if latencyMS > 0 || jitterMS > 0 {
		toxic := fmt.Sprintf(`{"name":"lat","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":%d,"jitter":%d}}`,
			latencyMS, jitterMS)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
			return fmt.Errorf("add latency toxic: %w", err)
		}
	}
	// Start only returns once the listener is open (or failed to open).
	if err := p.Start(); err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	fmt.Println(p.Listen) // the real address, also when -listen had port 0
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	signal.Stop(sig)
	p.Stop()
	return nil
}
