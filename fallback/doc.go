// Package fallback is the durable room store: MongoDB in production and an
// embedded on-disk store for the zero-configuration mode, behind one
// interface. It keeps rooms when Upstash fails and is the source of truth for
// their lifecycle (SPEC sections 4.5, 5, 6).
//
// Not built yet: the foundation forwards to Redis only. The rooms issue adds
// the store and its contract tests here.
package fallback
