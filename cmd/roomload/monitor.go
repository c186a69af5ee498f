package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// monitor counts the commands the upstream executes, from its MONITOR
// stream, telling the commands a client sent (what a hosted Redis bills)
// from those a script ran inside one call ("[0 lua]"), which INFO
// commandstats counts alike.
type monitor struct {
	conn net.Conn
	done chan struct{}

	mu       sync.Mutex
	sent     map[string]int64
	inScript int64
}

// startMonitor opens a MONITOR connection to the upstream at addr
// (host:port) with an optional password.
func startMonitor(ctx context.Context, addr, password string) (*monitor, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 1<<16)
	if password != "" {
		c.Write([]byte("*2\r\n$4\r\nAUTH\r\n$" + strconv.Itoa(len(password)) + "\r\n" + password + "\r\n"))
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			c.Close()
			return nil, fmt.Errorf("MONITOR connection: AUTH failed: %q %v", line, err)
		}
	}
	c.Write([]byte("*1\r\n$7\r\nMONITOR\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
		c.Close()
		return nil, fmt.Errorf("MONITOR: %q %v", line, err)
	}
	c.SetReadDeadline(time.Time{})
	m := &monitor{conn: c, done: make(chan struct{}), sent: map[string]int64{}}
	go func() {
		defer close(m.done)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			m.count(line)
		}
	}()
	return m, nil
}

// count reads one MONITOR line: +<time> [<db> <client>] "<command>" ...
func (m *monitor) count(line string) {
	open := strings.IndexByte(line, '[')
	end := strings.IndexByte(line, ']')
	if open < 0 || end < open {
		return
	}
	rest := line[end+1:]
	q := strings.IndexByte(rest, '"')
	if q < 0 {
		return
	}
	name := rest[q+1:]
	if e := strings.IndexByte(name, '"'); e >= 0 {
		name = strings.ToLower(name[:e])
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if strings.HasSuffix(line[open:end], " lua") {
		m.inScript++
		return
	}
	if name == "info" || name == "monitor" {
		return // roomload's own
	}
	m.sent[name]++
}

// stop ends the stream (after a short pause so that the last commands'
// lines arrive) and returns the counts.
func (m *monitor) stop() (sent map[string]int64, inScript int64) {
	time.Sleep(200 * time.Millisecond)
	m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent, m.inScript
}

// upstreamReads are read-only commands: what a proxy forwards for a read,
// not a write.
var upstreamReads = map[string]bool{
	"get": true, "mget": true, "hget": true, "hmget": true, "hgetall": true, "hkeys": true, "hvals": true,
	"hlen": true, "hexists": true, "exists": true, "type": true, "strlen": true, "getrange": true,
	"smembers": true, "sismember": true, "scard": true, "lrange": true, "llen": true, "zrange": true,
	"zscore": true, "zcard": true, "ttl": true, "pttl": true, "ping": true, "hello": true, "client": true,
}
