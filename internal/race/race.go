//go:build race

// Package race tells whether the race detector is built in. Code that hands
// out slices of a buffer it reuses overwrites released bytes in such builds
// (every test run), so that a use after release shows up as garbage in a test
// instead of passing by luck: proxy's frameGuard.release and batch's
// Arena.Reset.
package race

// Enabled is true in builds with the race detector.
const Enabled = true
