package main

import (
	"bufio"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// parseCommandStats reads the calls of every command from the text of
// INFO commandstats: lines "cmdstat_<name>:calls=N,usec=...". Subcommands
// keep Redis's name ("client|setinfo"). Other lines (section headers, other
// sections) are ignored; a cmdstat line without a readable calls field is an
// error, so a format change is noticed instead of counted as zero.
func parseCommandStats(info string) (map[string]int64, error) {
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("commandstats: no ':' in %q", line)
		}
		calls := int64(-1)
		for f := range strings.SplitSeq(fields, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 0 {
					return nil, fmt.Errorf("commandstats: bad calls in %q", line)
				}
				calls = n
				break
			}
		}
		if calls < 0 {
			return nil, fmt.Errorf("commandstats: no calls in %q", line)
		}
		out[strings.ToLower(name)] = calls
	}
	return out, sc.Err()
}

// excludedUpstream are commands left out of the upstream counts: INFO is how
// roomload reads them (and what a proxy's own INFO poller sends).
var excludedUpstream = map[string]bool{"info": true}

// commandDeltas returns after minus before for every command that was called
// in between, without excludedUpstream. A command whose count went down
// means the counters were reset (CONFIG RESETSTAT, a restart) during the run.
func commandDeltas(before, after map[string]int64) (map[string]int64, error) {
	out := map[string]int64{}
	for name, a := range after {
		if excludedUpstream[name] {
			continue
		}
		d := a - before[name]
		if d < 0 {
			return nil, fmt.Errorf("upstream commandstats went backwards for %q (%d -> %d): reset during the run?", name, before[name], a)
		}
		if d > 0 {
			out[name] = d
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok && !excludedUpstream[name] {
			return nil, fmt.Errorf("upstream commandstats lost %q during the run: reset during the run?", name)
		}
	}
	return out, nil
}

// upstreamWriteCommands are the upstream commands that can carry a state
// write of a room: what a proxy may turn a client's SET or HSET into.
var upstreamWriteCommands = map[string]bool{
	"set": true, "setex": true, "psetex": true, "setnx": true, "getset": true,
	"mset": true, "msetnx": true, "hset": true, "hmset": true, "hsetnx": true,
}

// sumCommands adds the counts of the commands for which keep is true (all
// of them when keep is nil).
func sumCommands(m map[string]int64, keep map[string]bool) int64 {
	var n int64
	for name, c := range m {
		if keep == nil || keep[name] {
			n += c
		}
	}
	return n
}

// sortedByCount returns the names of m, largest count first, then by name.
func sortedByCount(m map[string]int64) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	return names
}
