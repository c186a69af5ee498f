package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram is a log-linear latency histogram in the manner of HDR
// histograms: values below 32 are counted exactly, larger values in 32
// linear sub-buckets per power of two, so a percentile is at most 1/32
// (about 3 %) above the true value and never below it. Record is lock-free
// (one atomic add per sample), so every goroutine of a run can share one.
// The zero value is not usable; use newHistogram.
type histogram struct {
	counts []atomic.Int64 // by bucket
	n      atomic.Int64
	max    atomic.Int64
	sum    atomic.Int64
}

const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	// Buckets for every int64 >= 0: the exact range, then one octave of
	// histSub sub-buckets for each bit from histSubBits to 62.
	histBuckets = (63 - histSubBits + 1) * histSub
)

func newHistogram() *histogram {
	return &histogram{counts: make([]atomic.Int64, histBuckets)}
}

// bucketOf returns the bucket of a value >= 0.
func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - 1 - histSubBits
	return (shift+1)*histSub + int((v>>shift)&(histSub-1))
}

// bucketHigh returns the largest value counted in bucket b.
func bucketHigh(b int) uint64 {
	if b < histSub {
		return uint64(b)
	}
	shift := b/histSub - 1
	low := uint64(histSub+b%histSub) << shift
	return low + (uint64(1) << shift) - 1
}

// Record adds one duration; negative durations count as 0.
func (h *histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[bucketOf(uint64(v))].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Count is the number of samples.
func (h *histogram) Count() int64 { return h.n.Load() }

// Max is the largest sample, exactly.
func (h *histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Mean is the average sample, exactly (0 without samples).
func (h *histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the value at or below which a fraction q (0..1] of the
// samples lie: the upper bound of that sample's bucket, capped at Max. It is
// 0 without samples. Call it once recording has stopped.
func (h *histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(n))), 1)
	var seen int64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			return min(time.Duration(bucketHigh(b)), h.Max())
		}
	}
	return h.Max()
}
