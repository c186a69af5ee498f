//go:build race

package batch

// poisonReleased: see Arena.reset.
const poisonReleased = true
