// Command roomload plays a multiplayer game workload against a Redis
// endpoint (roomproxy, or redis-server itself) and reports what it cost
// upstream and whether it stayed correct.
//
// Every room is created (SET room:<id> {"status":"waiting","seq":0,...};
// the rooms' creations are spread over the first second, or the first
// quarter of a shorter run),
// its players join (HSET room:<id>:players p<n> ...), it starts
// ({"status":"active","seq":1,...}), and then gets -writes state writes a
// second, about three in four SETs of the whole state document with a seq
// that only grows, the rest HSETs of one player's entry. Each room's writes
// are sent one after the other by the room's own goroutine. Reader
// connections of their own read the rooms (GET, HGET) at -reads a second per
// room and check read-your-writes: a read must show the last write whose
// reply had arrived before the read was sent, or a later one. At the end a
// fraction -complete of the rooms is completed, and after -settle every
// room's final state is checked at the endpoint, in the upstream, and with
// -mongo in MongoDB. The upstream's INFO commandstats before and after give
// how many commands reached it per client command.
//
// Exit status: 0 when every check passed, 1 on a stale read or a lost final
// state, 2 when the run could not be made, 130 when interrupted.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// config is the workload; see the flags for units and defaults.
type config struct {
	Addr, Upstream string
	Rooms          int
	Writes         float64 // state writes a second per room
	Duration       time.Duration
	Readers        int
	Reads          float64 // reads a second per room
	Players        int
	Complete       float64 // fraction of rooms completed at the end
	Prefix         string
	Seed           uint64
	JSON           bool
	Settle         time.Duration
	Mongo, MongoDB string
	MongoRetention time.Duration
	Conns          int // writer connections to the endpoint
	Timeout        time.Duration
}

func (c *config) validate() error {
	switch {
	case c.Addr == "":
		return errors.New("-addr: must not be empty")
	case c.Rooms < 1:
		return errors.New("-rooms: must be at least 1")
	case c.Writes < 0 || math.IsNaN(c.Writes) || math.IsInf(c.Writes, 0):
		return errors.New("-writes: must be a number >= 0")
	case c.Reads < 0 || math.IsNaN(c.Reads) || math.IsInf(c.Reads, 0):
		return errors.New("-reads: must be a number >= 0")
	case c.Duration <= 0:
		return errors.New("-duration: must be above 0")
	case c.Readers < 0:
		return errors.New("-readers: must be >= 0")
	case c.Players < 0 || c.Players > 1000:
		return errors.New("-players: must be between 0 and 1000")
	case !(c.Complete >= 0 && c.Complete <= 1):
		return errors.New("-complete: must be between 0 and 1")
	case c.Prefix == "":
		return errors.New("-prefix: must not be empty")
	case c.Settle < 0:
		return errors.New("-settle: must be >= 0")
	case c.Conns < 1:
		return errors.New("-conns: must be at least 1")
	case c.Timeout <= 0:
		return errors.New("-timeout: must be above 0")
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("roomload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: roomload [flags]\n\nPlays a game-room workload against a Redis endpoint and checks read-your-writes and final states.")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Addr, "addr", "redis://127.0.0.1:6380", "endpoint under test: roomproxy or redis-server (redis://, rediss:// or host:port)")
	fs.StringVar(&c.Upstream, "upstream", "", "the redis-server behind the endpoint, for INFO commandstats and upstream checks (default: -addr, direct mode)")
	fs.IntVar(&c.Rooms, "rooms", 200, "rooms")
	fs.Float64Var(&c.Writes, "writes", 20, "state writes a second per room")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "how long the load runs")
	fs.IntVar(&c.Readers, "readers", 8, "reader connections")
	fs.Float64Var(&c.Reads, "reads", 5, "reads a second per room, spread over the readers")
	fs.IntVar(&c.Players, "players", 4, "players per room")
	fs.Float64Var(&c.Complete, "complete", 0.25, "fraction of rooms that go to completed at the end (the rest stay active)")
	fs.StringVar(&c.Prefix, "prefix", "room:", "room key prefix (roomproxy's ROOM_KEY_PREFIX)")
	fs.Uint64Var(&c.Seed, "seed", 1, "random seed of the workload (room ids are unique per run regardless)")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON")
	fs.DurationVar(&c.Settle, "settle", 2*time.Second, "wait after the load before checking final states (longer than the endpoint's debounce window)")
	fs.StringVar(&c.Mongo, "mongo", "", "MongoDB URL of roomproxy's room store, to check final states there too (optional)")
	fs.StringVar(&c.MongoDB, "mongo-db", "roomproxy", "MongoDB database (roomproxy's MONGO_DB)")
	fs.DurationVar(&c.MongoRetention, "mongo-retention", 168*time.Hour, "roomproxy's MONGO_COMPLETED_RETENTION: opening the store ensures its TTL index, which must match")
	fs.IntVar(&c.Conns, "conns", 32, "writer connections to the endpoint (rooms share them; each room's writes stay in order)")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "dial, read and write timeout of one command")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return c, c.validate()
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "roomload:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "roomload:", err)
		return 2
	}
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "roomload:", err)
			return 2
		}
	} else {
		rep.writeText(stdout)
	}
	switch {
	case rep.Interrupted:
		return 130
	case !rep.OK:
		return 1
	}
	return 0
}
