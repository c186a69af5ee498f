//go:build !race

package batch

const poisonReleased = false
