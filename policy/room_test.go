package policy

import "testing"

func TestRoomOf(t *testing.T) {
	cases := []struct {
		key, prefix, id string
		state, ok       bool
	}{
		{"room:abc", "room:", "abc", true, true},
		{"room:abc:players", "room:", "abc", false, true},
		{"room:abc:players:1", "room:", "abc", false, true},
		{"room:{abc}:chat", "room:", "abc", false, true},
		{"room:{abc}", "room:", "abc", true, true},
		{"room:{}:x", "room:", "{}", false, true}, // empty tag: Redis ignores it, so do we
		{"room:{abc", "room:", "{abc", true, true},
		{"room:", "room:", "", false, false},
		{"room::x", "room:", "", false, false},
		{"rooms:abc", "room:", "", false, false},
		{"ROOM:abc", "room:", "", false, false},
		{"user:1", "room:", "", false, false},
		{"", "room:", "", false, false},
		{"game/7/x", "game/", "7/x", true, true},
		{"room:\x00\xff", "room:", "\x00\xff", true, true},
	}
	for _, c := range cases {
		id, state, ok := RoomOf([]byte(c.key), c.prefix)
		if ok != c.ok || string(id) != c.id || state != c.state {
			t.Errorf("RoomOf(%q, %q) = %q, %v, %v; want %q, %v, %v", c.key, c.prefix, id, state, ok, c.id, c.state, c.ok)
		}
	}
}

func FuzzRoomOf(f *testing.F) {
	f.Add([]byte("room:{a}:b"))
	f.Fuzz(func(t *testing.T, key []byte) {
		id, _, ok := RoomOf(key, DefaultPrefix)
		if ok && len(id) == 0 {
			t.Fatalf("empty room id for %q", key)
		}
	})
}
