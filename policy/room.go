package policy

import "bytes"

// DefaultPrefix is the default room key prefix (ROOM_KEY_PREFIX).
const DefaultPrefix = "room:"

// RoomOf tells whether key belongs to a room and which (SPEC 4.1). The room
// id is the text inside the first {...} hash tag after the prefix, or else the
// text after the prefix up to the next ':' or the end. state reports whether
// key is the room's state document, the key prefix+id itself.
//
//	room:abc          -> abc, state
//	room:abc:players  -> abc
//	room:{abc}:chat   -> abc
//	room:             -> not a room (empty id)
//
// The returned id aliases key.
func RoomOf(key []byte, prefix string) (id []byte, state bool, ok bool) {
	if len(key) <= len(prefix) || string(key[:len(prefix)]) != prefix {
		return nil, false, false
	}
	rest := key[len(prefix):]
	if rest[0] == '{' {
		if end := bytes.IndexByte(rest, '}'); end > 1 {
			id = rest[1:end]
			return id, end == len(rest)-1, true
		}
	}
	end := bytes.IndexByte(rest, ':')
	if end < 0 {
		return rest, true, true
	}
	if end == 0 {
		return nil, false, false
	}
	return rest[:end], false, true
}
