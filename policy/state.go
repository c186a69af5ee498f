package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// State is a room's lifecycle state (SPEC 4.1).
type State int

const (
	// Waiting is a room that has not started; also any room whose status
	// cannot be read.
	Waiting State = iota
	// Active is a game in progress.
	Active
	// Completed is a finished game: durable in MongoDB, gone from Redis.
	Completed
)

func (s State) String() string {
	switch s {
	case Active:
		return "active"
	case Completed:
		return "completed"
	}
	return "waiting"
}

// Rules are the room rules. The zero value is not usable; start from
// DefaultRules and change fields.
type Rules struct {
	Prefix      string           // ROOM_KEY_PREFIX
	StatusField string           // ROOM_STATUS_FIELD
	Aliases     map[string]State // lower-case status text to state
	TTLWaiting  time.Duration    // REDIS_TTL_WAITING_ROOM
	TTLActive   time.Duration    // REDIS_TTL_ACTIVE_GAME, sliding
	// RefreshEvery is the least time between two extensions of an active
	// room's TTL: activity extends every key of the room at most this often,
	// not once per command.
	RefreshEvery time.Duration
	MaxBytes     int // ROOM_MAX_BYTES: a room's keys together
}

// DefaultRules are SPEC section 10's defaults.
func DefaultRules() Rules {
	return Rules{
		Prefix:      DefaultPrefix,
		StatusField: "status",
		Aliases: map[string]State{
			"waiting": Waiting, "lobby": Waiting, "open": Waiting,
			"active": Active, "playing": Active, "in_progress": Active, "started": Active,
			"completed": Completed, "finished": Completed, "ended": Completed, "closed": Completed,
		},
		TTLWaiting:   1800 * time.Second,
		TTLActive:    3600 * time.Second,
		RefreshEvery: 60 * time.Second,
		MaxBytes:     1 << 20,
	}
}

// StateOf reads a status text. Unknown text is Waiting, with ok false.
func (r Rules) StateOf(status string) (State, bool) {
	s, ok := r.Aliases[strings.ToLower(strings.TrimSpace(status))]
	return s, ok
}

// StateFromJSON reads the status field of a JSON object. Invalid JSON, a
// document that is not an object, a missing or non-string status, and a
// document over MaxBytes are all "no readable status": Waiting, ok false.
// Only the top level is read, token by token, so a huge document costs no
// more than one pass.
func (r Rules) StateFromJSON(doc []byte) (State, bool) {
	if len(doc) > r.MaxBytes {
		return Waiting, false
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return Waiting, false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return Waiting, false
		}
		key, _ := t.(string)
		if key != r.StatusField {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return Waiting, false
			}
			continue
		}
		v, err := dec.Token()
		s, isString := v.(string)
		if err != nil || !isString {
			return Waiting, false
		}
		return r.StateOf(s)
	}
	return Waiting, false
}

// TTL is the time to live of every key of a room in state s. Completed rooms
// have none: they leave Redis (keep is false).
func (r Rules) TTL(s State) (ttl time.Duration, keep bool) {
	switch s {
	case Active:
		return r.TTLActive, true
	case Completed:
		return 0, false
	}
	return r.TTLWaiting, true
}

// ClientTTL applies a client's own EX/EXPIRE on a room key: honoured only when
// shorter than the policy's (SPEC 4.2). client <= 0 means none was given.
func (r Rules) ClientTTL(s State, client time.Duration) time.Duration {
	policy, keep := r.TTL(s)
	if !keep {
		return 0
	}
	if client > 0 && client < policy {
		return client
	}
	return policy
}

// WriteClass is how a write to a room is carried (SPEC 4.3).
type WriteClass int

const (
	// StateWrite keeps the room's state: debounced.
	StateWrite WriteClass = iota
	// LifecycleWrite creates the room, changes its state or deletes it:
	// written through to MongoDB before it is acknowledged.
	LifecycleWrite
)

// Classify tells a lifecycle write from a state write. existed says whether
// the room existed before; deleting whether the write removes the room's
// state key.
func Classify(existed bool, before, after State, deleting bool) WriteClass {
	if !existed || deleting || before != after {
		return LifecycleWrite
	}
	return StateWrite
}

// RefreshDue reports whether an active room's sliding TTL should be
// extended now, given when it was last extended.
func (r Rules) RefreshDue(s State, last, now time.Time) bool {
	return s == Active && (last.IsZero() || now.Sub(last) >= r.RefreshEvery)
}
