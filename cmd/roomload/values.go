package main

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strconv"
)

// stateBytes is about the size of a room's state document.
const stateBytes = 200

// appendState appends a room state document: status, seq (strictly
// increasing per room), a tick, a timestamp, one position per player, and
// padding up to stateBytes.
func appendState(b []byte, status string, seq, tick, tsMillis int64, players int, rng *rand.Rand) []byte {
	start := len(b)
	b = append(b, `{"status":"`...)
	b = append(b, status...)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"tick":`...)
	b = strconv.AppendInt(b, tick, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, tsMillis, 10)
	b = append(b, `,"pos":[`...)
	for p := range players {
		if p > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(rng.IntN(2001)-1000), 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(rng.IntN(2001)-1000), 10)
		b = append(b, ']')
	}
	b = append(b, ']')
	const padOpen, padClose = `,"pad":"`, `"}`
	if n := stateBytes - (len(b) - start) - len(padOpen) - len(padClose); n > 0 {
		b = append(b, padOpen...)
		for i := range n {
			b = append(b, byte('a'+i%26))
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendPlayer appends a player's entry of the players hash; seq is
// strictly increasing per player.
func appendPlayer(b []byte, name string, seq, score int64, ready bool) []byte {
	b = append(b, `{"name":"`...)
	b = append(b, name...)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"score":`...)
	b = strconv.AppendInt(b, score, 10)
	b = append(b, `,"ready":`...)
	b = strconv.AppendBool(b, ready)
	return append(b, '}')
}

var errNoSeq = errors.New("no numeric seq field")

// parseSeq reads the seq field of a state document or a player entry.
func parseSeq(v []byte) (int64, error) {
	var doc struct {
		Seq *int64 `json:"seq"`
	}
	if err := json.Unmarshal(v, &doc); err != nil {
		return 0, err
	}
	if doc.Seq == nil {
		return 0, errNoSeq
	}
	return *doc.Seq, nil
}

// verdict is what a read showed.
type verdict int

const (
	readFresh      verdict = iota // seq at or after the last acknowledged write
	readStale                     // seq before the last write acknowledged before the read was sent
	readUnparsable                // not JSON, or no seq
)

// checkRead judges a read's value against acked, the seq of the last write
// of that key whose reply had arrived before the read was sent: a proxy that
// reads its own writes must return that write or a later one.
func checkRead(v []byte, acked int64) (int64, verdict) {
	seq, err := parseSeq(v)
	if err != nil {
		return 0, readUnparsable
	}
	if seq < acked {
		return seq, readStale
	}
	return seq, readFresh
}
