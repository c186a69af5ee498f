// Package policy holds roomproxy's room rules as pure functions of their
// inputs (key, state, time): which keys belong to a room, and later the TTL,
// write class and debounce timing of each. It performs no I/O and imports no
// other roomproxy package, so every rule is tested with tables alone.
package policy
