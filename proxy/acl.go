package proxy

import (
	"strings"

	"github.com/roomproxy/roomproxy/acl"
	"github.com/roomproxy/roomproxy/policy"
)

// permitted applies the connection's ACL user (PROXY_ACL_FILE) to one
// command: the command itself, then its keys, then its pub/sub channels, with
// Redis 7.0's -NOPERM texts. It writes the refusal and returns false.
func (s *session) permitted(sp *Spec, args [][]byte) bool {
	u := s.user
	switch {
	case !u.AllowsCommand(sp.Name):
		s.err("NOPERM this user has no permissions to run the '" + sp.fullName() + "' command")
	case !u.AllKeys() && !s.keysPermitted(u, sp, args):
		s.err("NOPERM this user has no permissions to access one of the keys used as arguments")
	case !u.AllChannels() && !channelsPermitted(u, sp.Name, args):
		s.err("NOPERM this user has no permissions to access one of the channels used as arguments")
	default:
		return true
	}
	return false
}

// keysPermitted reports whether every key of the command matches one of the
// user's key patterns. A command whose keys cannot be told from its
// arguments is refused (fail closed).
func (s *session) keysPermitted(u *acl.User, sp *Spec, args [][]byte) bool {
	if strings.HasPrefix(sp.Name, "room.") {
		prefix := policy.DefaultPrefix
		if s.srv.cfg.Rooms != nil {
			prefix = s.srv.cfg.Rooms.Rules.Prefix
		}
		if sp.Name == "room.list" { // every room: the user needs all of them
			return u.HasKeyPattern(prefix + "*")
		}
		return u.AllowsKey(append([]byte(prefix), args[1]...)) // the room's state key
	}
	ok := true
	known := sp.eachKeyAll(args, func(k []byte) bool { ok = u.AllowsKey(k); return ok })
	return known && ok
}

// channelsPermitted checks the channels of the pub/sub commands that name
// them; PSUBSCRIBE's patterns must be among the user's literally, as in
// Redis.
func channelsPermitted(u *acl.User, name string, args [][]byte) bool {
	switch name {
	case "publish", "spublish":
		return u.AllowsChannel(args[1])
	case "subscribe", "ssubscribe":
		for _, ch := range args[1:] {
			if !u.AllowsChannel(ch) {
				return false
			}
		}
	case "psubscribe":
		for _, p := range args[1:] {
			if !u.AllowsChannelPattern(p) {
				return false
			}
		}
	}
	return true
}
