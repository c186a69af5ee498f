// Package batch defines the unit of work the proxy hands to an upstream: one
// client's commands, in order, with a slot for each reply.
//
// A Batch is owned by one client connection and reused for each of its
// pipelines. The connection fills it and submits it; exactly one upstream
// worker then fills every reply and calls Done; the connection reads the
// replies after Wait returns. Nothing touches a Batch between Done and the
// owner's next Reset, so no lock is needed. A reply's raw bytes may live in
// the batch's Arena: they are valid until that Reset, so an owner that keeps
// one longer copies it.
package batch

// Reply is the upstream's answer to one command: its raw RESP bytes, exactly
// as the upstream sent them, or the error that kept it from arriving.
type Reply struct {
	Raw []byte
	Err error
}

// Batch is one client's commands for one upstream round trip.
type Batch struct {
	// Proto is the RESP version the client speaks (2 or 3); the upstream
	// answers in that version so replies pass through byte for byte.
	Proto int
	// Cmds holds each command's arguments, name first.
	Cmds [][][]byte
	// ReadOnly is true while every command in the batch only reads, so that
	// the upstream may retry it after a connection failure.
	ReadOnly bool
	// Tx is true when the batch holds MULTI ... EXEC, which must stay
	// contiguous on one connection.
	Tx bool
	// Replies has one entry per command; the upstream fills them before Done.
	Replies []Reply
	// Arena holds the raw bytes of the replies of the upstream's round-trip
	// workers (other paths allocate each reply). Replies point into it until
	// the next Reset.
	Arena Arena
	done  chan struct{}
}

// New returns an empty batch ready for Add.
func New() *Batch { return &Batch{Proto: 2, done: make(chan struct{}, 1)} }

// Reset empties the batch for reuse, keeping its storage.
func (b *Batch) Reset(proto int) {
	clear(b.Cmds)
	b.Cmds = b.Cmds[:0]
	clear(b.Replies)
	b.Replies = b.Replies[:0]
	b.Arena.Reset()
	b.Proto = proto
	b.ReadOnly = true
	b.Tx = false
}

// Add appends one command; it returns the command's index in the batch.
// readOnly says whether the command only reads.
func (b *Batch) Add(args [][]byte, readOnly bool) int {
	b.ReadOnly = b.ReadOnly && readOnly
	b.Cmds = append(b.Cmds, args)
	b.Replies = append(b.Replies, Reply{})
	return len(b.Cmds) - 1
}

// Len is the number of commands in the batch.
func (b *Batch) Len() int { return len(b.Cmds) }

// Done is called once by the upstream after every reply is set.
func (b *Batch) Done() { b.done <- struct{}{} }

// Wait blocks until the upstream has called Done.
func (b *Batch) Wait() { <-b.done }

// Fail sets err as the reply of every command that has none and calls Done.
func (b *Batch) Fail(err error) {
	for i := range b.Replies {
		if b.Replies[i].Raw == nil && b.Replies[i].Err == nil {
			b.Replies[i].Err = err
		}
	}
	b.Done()
}

// Message is one pub/sub event relayed from the upstream.
type Message struct {
	// Kind is "message" or "pmessage" for a published message, or the
	// upstream's confirmation: "subscribe", "psubscribe", "unsubscribe",
	// "punsubscribe".
	Kind    string
	Pattern string // the matching pattern for a pmessage, else empty
	Channel string
	Payload string // bytes, unchanged
}
