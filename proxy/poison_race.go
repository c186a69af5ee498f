//go:build race

package proxy

// poisonReleased: see frameGuard.release.
const poisonReleased = true
