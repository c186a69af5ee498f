package main

import (
	"sync"
	"testing"
	"time"
)

func TestBucketsAreContiguous(t *testing.T) {
	for b := range histBuckets - 1 {
		hi := bucketHigh(b)
		if got := bucketOf(hi); got != b {
			t.Fatalf("bucketOf(bucketHigh(%d)=%d) = %d", b, hi, got)
		}
		if got := bucketOf(hi + 1); got != b+1 {
			t.Fatalf("bucketOf(%d) = %d, want the next bucket %d", hi+1, got, b+1)
		}
	}
	if got := bucketOf(1<<63 - 1); got != histBuckets-1 {
		t.Fatalf("largest value in bucket %d, want the last one %d", got, histBuckets-1)
	}
}

func TestQuantiles(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration // the true value; the estimate may be up to 1/32 above, never below
	}{
		{"empty", nil, 0.5, 0},
		{"one", []time.Duration{7 * time.Millisecond}, 0.99, 7 * time.Millisecond},
		{"exact small", seq(1, 20, 1), 0.5, 10},
		{"exact small p100", seq(1, 20, 1), 1, 20},
		{"p50 of 1..1000 us", seq(1, 1000, time.Microsecond), 0.5, 500 * time.Microsecond},
		{"p90 of 1..1000 us", seq(1, 1000, time.Microsecond), 0.9, 900 * time.Microsecond},
		{"p99 of 1..1000 us", seq(1, 1000, time.Microsecond), 0.99, 990 * time.Microsecond},
		{"p99 with an outlier", append(seq(1, 99, time.Millisecond), time.Minute), 0.99, 99 * time.Millisecond},
		{"max is exact", append(seq(1, 99, time.Millisecond), time.Minute+1), 1, time.Minute + 1},
		{"q 0 is the smallest", seq(5, 9, time.Second), 0, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistogram()
			for _, s := range tt.samples {
				h.Record(s)
			}
			got := h.Quantile(tt.q)
			if got < tt.want || got > tt.want+tt.want/histSub {
				t.Fatalf("Quantile(%v) = %v, want %v (at most 1/%d above)", tt.q, got, tt.want, histSub)
			}
		})
	}
}

func TestHistogramCountsMeanMaxAndNegative(t *testing.T) {
	h := newHistogram()
	h.Record(-time.Second)
	h.Record(2 * time.Millisecond)
	h.Record(4 * time.Millisecond)
	if h.Count() != 3 || h.Max() != 4*time.Millisecond || h.Mean() != 2*time.Millisecond {
		t.Fatalf("count %d max %v mean %v, want 3 4ms 2ms", h.Count(), h.Max(), h.Mean())
	}
	if h.Quantile(0.01) != 0 {
		t.Fatalf("a negative sample should count as 0, p1 = %v", h.Quantile(0.01))
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	h := newHistogram()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				h.Record(time.Duration(g*1000 + i))
			}
		})
	}
	wg.Wait()
	if h.Count() != 8000 || h.Max() != 7999 {
		t.Fatalf("count %d max %v, want 8000 and 7999ns", h.Count(), h.Max())
	}
}

// seq returns from*unit, (from+1)*unit, ..., to*unit.
func seq(from, to int, unit time.Duration) []time.Duration {
	var out []time.Duration
	for i := from; i <= to; i++ {
		out = append(out, time.Duration(i)*unit)
	}
	return out
}
