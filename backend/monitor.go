package backend

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Health is what the upstream's INFO said at the last poll.
type Health struct {
	Polled          time.Time `json:"polled_at"`
	OK              bool      `json:"ok"`
	UsedMemory      int64     `json:"used_memory_bytes"`
	MaxMemory       int64     `json:"maxmemory_bytes"`
	Keys            int64     `json:"keys"`
	EvictedKeys     int64     `json:"evicted_keys"`
	EvictionsPerMin float64   `json:"evictions_per_minute"`
	Role            string    `json:"role"`
	ReplicationLag  int64     `json:"replication_lag_seconds"` // the largest replica lag a master reports, or a replica's seconds since its master's last I/O
}

// MonitorConfig configures the INFO poller.
type MonitorConfig struct {
	// Interval between polls (UPSTREAM_INFO_INTERVAL, default 15 s). Each poll
	// is one INFO command, billed by Upstash like any other.
	Interval time.Duration
	// AlertPerMin logs a warning when evictions per minute exceed it
	// (EVICTION_ALERT_PER_MIN, default 100; 0 turns the warning off).
	AlertPerMin float64
	Logger      *slog.Logger
}

// Monitor polls the upstream's INFO at a bounded rate for memory, keys,
// evictions and replication, and warns about eviction storms.
type Monitor struct {
	u   *Upstream
	cfg MonitorConfig

	mu     sync.Mutex // protects last
	last   Health
	cancel context.CancelFunc
	done   chan struct{}
}

// StartMonitor starts polling; Stop ends it.
func (u *Upstream) StartMonitor(cfg MonitorConfig) *Monitor {
	if cfg.Interval <= 0 {
		cfg.Interval = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Monitor{u: u, cfg: cfg, cancel: cancel, done: make(chan struct{})}
	go m.run(ctx)
	return m
}

// Stop ends polling and waits for the poller.
func (m *Monitor) Stop() {
	m.cancel()
	<-m.done
}

// Health returns the last poll's result.
func (m *Monitor) Health() Health {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

func (m *Monitor) run(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	var lastWarn time.Time
	for {
		h := m.poll(ctx)
		if m.cfg.AlertPerMin > 0 && h.EvictionsPerMin > m.cfg.AlertPerMin && time.Since(lastWarn) >= time.Minute {
			lastWarn = time.Now()
			m.cfg.Logger.Warn("upstream is evicting keys", "evictions_per_minute", int64(h.EvictionsPerMin),
				"threshold", int64(m.cfg.AlertPerMin), "used_memory", h.UsedMemory, "maxmemory", h.MaxMemory)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// poll runs one INFO and folds it into the last result.
func (m *Monitor) poll(ctx context.Context) Health {
	ctx, cancel := context.WithTimeout(ctx, m.u.cfg.Timeout)
	defer cancel()
	m.u.commands.Add(1)
	text, err := m.u.engines[0].client.Info(ctx).Result()
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.last
	if err != nil {
		m.last.OK = false
		m.last.Polled = now
		return m.last
	}
	h := parseInfo(text)
	h.OK, h.Polled = true, now
	if prev.OK && h.EvictedKeys >= prev.EvictedKeys {
		if mins := now.Sub(prev.Polled).Minutes(); mins > 0 {
			h.EvictionsPerMin = float64(h.EvictedKeys-prev.EvictedKeys) / mins
		}
	}
	m.last = h
	return h
}

// parseInfo reads the fields Health needs from an INFO reply.
func parseInfo(text string) Health {
	var h Health
	num := func(v string) int64 { n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64); return n }
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if !ok {
			continue
		}
		switch {
		case k == "used_memory":
			h.UsedMemory = num(v)
		case k == "maxmemory":
			h.MaxMemory = num(v)
		case k == "evicted_keys":
			h.EvictedKeys = num(v)
		case k == "role":
			h.Role = v
		case k == "master_last_io_seconds_ago":
			h.ReplicationLag = num(v)
		case strings.HasPrefix(k, "slave") && strings.Contains(v, "lag="):
			for _, f := range strings.Split(v, ",") {
				if lag, ok := strings.CutPrefix(f, "lag="); ok && num(lag) > h.ReplicationLag {
					h.ReplicationLag = num(lag)
				}
			}
		case strings.HasPrefix(k, "db"):
			for _, f := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(f, "keys="); ok {
					h.Keys += num(n)
				}
			}
		}
	}
	return h
}
