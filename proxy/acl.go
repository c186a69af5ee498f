package proxy

import (
	"bytes"
	"strconv"
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
	each := func(k []byte) bool { ok = u.AllowsKey(k); return ok }
	if sp.Flags&FlagMovableKeys != 0 {
		if !movableKeys(sp.Name, args, each) {
			return false
		}
	} else {
		sp.eachKey(args, each)
	}
	return ok
}

// keyTooLarge reports whether a key of the command is longer than
// MAX_KEY_BYTES (Upstash's 32 KiB): such a command is refused here, with
// Upstash's text, instead of being acknowledged by the debouncer and then
// refused at every flush.
func (s *session) keyTooLarge(sp *Spec, args [][]byte) bool {
	limit, big := s.srv.lim.MaxKeyBytes, false
	check := func(k []byte) bool { big = len(k) > limit; return !big }
	if sp.Flags&FlagMovableKeys != 0 {
		movableKeys(sp.Name, args, check)
	} else {
		sp.eachKey(args, check)
	}
	return big
}

// movableKeys calls fn for the keys of a command whose key positions depend
// on its arguments (Redis flags it "movablekeys"), until fn returns false.
// It returns false when it cannot tell the keys (an unknown such command, a
// count that is not a number, a SORT that reads keys by pattern).
func movableKeys(name string, args [][]byte, fn func([]byte) bool) bool {
	counted := func(i int) bool { // a count at args[i], then that many keys
		if i >= len(args) {
			return false
		}
		n, err := strconv.Atoi(string(args[i]))
		if err != nil || n < 0 || n > len(args)-i-1 {
			return false
		}
		for _, k := range args[i+1 : i+1+n] {
			if !fn(k) {
				break
			}
		}
		return true
	}
	switch name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro", "blmpop", "bzmpop":
		return counted(2)
	case "sintercard", "zdiff", "zinter", "zintercard", "zunion", "lmpop", "zmpop":
		return counted(1)
	case "zdiffstore", "zinterstore", "zunionstore":
		return !fn(args[1]) || counted(2)
	case "georadius", "georadiusbymember", "sort", "sort_ro":
		if !fn(args[1]) {
			return true
		}
		for i := 2; i < len(args); i++ {
			switch opt := strings.ToLower(string(args[i])); {
			case (opt == "store" || opt == "storedist") && i+1 < len(args):
				i++
				if !fn(args[i]) {
					return true
				}
			case (opt == "by" || opt == "get") && name[0] == 's' && i+1 < len(args):
				i++
				if p := args[i]; !(opt == "by" && bytes.EqualFold(p, []byte("nosort")) || opt == "get" && string(p) == "#") {
					return false // reads the keys a pattern names
				}
			case opt == "limit" && name[0] == 's':
				i += 2
			}
		}
		return true
	case "xread", "xreadgroup":
		for i := 1; i < len(args); i++ {
			if bytes.EqualFold(args[i], []byte("streams")) {
				rest := args[i+1:]
				if len(rest) == 0 || len(rest)%2 != 0 {
					return false
				}
				for _, k := range rest[:len(rest)/2] {
					if !fn(k) {
						break
					}
				}
				return true
			}
		}
		return false
	}
	return false
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
