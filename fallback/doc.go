// Package fallback is the durable room store: MongoDB (Mongo) in
// production and an embedded on-disk store (Embedded, bbolt) for the
// zero-configuration mode, behind one interface (Store) and one set of
// contract tests. It is the source of truth for rooms (SPEC 4.5): one
// document per room with its keys by type and a version that only increases
// and guards every write.
//
// The rooms package writes lifecycle changes through it and answers ROOM.*
// from it; read-through and warm-up are still to come.
//
// Concurrency: both stores are safe for concurrent use. Mongo serialises
// writes per room with striped mutexes; Embedded relies on bbolt's single
// writer.
package fallback
