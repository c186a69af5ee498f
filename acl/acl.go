// Package acl reads a users file in a subset of Redis's ACL syntax
// (PROXY_ACL_FILE, SPEC 8) and answers what a user may do: authenticate,
// run a command, touch a key, use a pub/sub channel. It is pure: the proxy
// package asks it, with the command table's names and categories.
//
// The subset, one user per line ("user NAME rule ..."; blank lines and lines
// starting with '#' are skipped):
//
//	on, off                      enable or disable the user
//	>password, <password         add or remove a password
//	#<sha256 hex>, !<sha256 hex> add or remove a password by its SHA-256
//	nopass, resetpass            any password works / none does
//	~pattern, allkeys, resetkeys key patterns (Redis glob); allkeys is ~*
//	&pattern, allchannels,       pub/sub channel patterns
//	resetchannels
//	+@category, -@category       commands by ACL category; +@all is
//	allcommands, nocommands      allcommands, -@all is nocommands
//	+command, -command           a command and its subcommands
//	+command|sub, -command|sub   one subcommand
//	reset                        back to a new user's state
//
// A new user is as in Redis 7: off, no password, no commands, no keys, no
// channels. Command rules apply left to right, so "+@all -@dangerous" is
// everything but the dangerous commands. Anything else (selectors, %R~ and
// %W~ key permissions) is refused with the line's number.
package acl

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Set is the users of a file.
type Set struct {
	users map[string]*User
}

// User is one user's rules.
type User struct {
	Name     string
	on       bool
	nopass   bool
	hashes   [][sha256.Size]byte
	keys     []string // key patterns
	channels []string // channel patterns
	cmdRules []cmdRule
	allowed  map[string]bool // by command name ("client|setname" for a subcommand), from Compile
}

type cmdRule struct {
	allow    bool
	category string // "@read", "@all"; or empty with name set
	name     string // "get", "client" (and its subcommands) or "client|setname"
}

// String is the rule as written: "+@read", "-client|kill".
func (r cmdRule) String() string {
	if r.allow {
		return "+" + r.category + r.name
	}
	return "-" + r.category + r.name
}

// Command is what Compile needs of one entry of the command table.
type Command struct {
	Name       string   // lower case; "client|setname" for a subcommand
	Categories []string // with the leading '@'
}

// ParseFile reads a users file.
func ParseFile(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads users from r; an error names the line.
func Parse(r io.Reader) (*Set, error) {
	s := &Set{users: map[string]*User{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if fields[0] != "user" || len(fields) < 2 {
			return nil, fmt.Errorf("line %d: want \"user NAME rule ...\"", n)
		}
		name := fields[1]
		if _, dup := s.users[name]; dup {
			return nil, fmt.Errorf("line %d: user %q defined twice", n, name)
		}
		u := &User{Name: name}
		for _, rule := range fields[2:] {
			if err := u.apply(rule); err != nil {
				return nil, fmt.Errorf("line %d: user %s: %w", n, name, err)
			}
		}
		s.users[name] = u
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(s.users) == 0 {
		return nil, fmt.Errorf("no user defined")
	}
	return s, nil
}

func (u *User) apply(rule string) error {
	switch {
	case rule == "on":
		u.on = true
	case rule == "off":
		u.on = false
	case rule == "nopass":
		u.nopass, u.hashes = true, nil
	case rule == "resetpass":
		u.nopass, u.hashes = false, nil
	case rule == "allkeys":
		u.keys = []string{"*"}
	case rule == "resetkeys":
		u.keys = nil
	case rule == "allchannels":
		u.channels = []string{"*"}
	case rule == "resetchannels":
		u.channels = nil
	case rule == "allcommands":
		u.cmdRules = append(u.cmdRules, cmdRule{allow: true, category: "@all"})
	case rule == "nocommands":
		u.cmdRules = append(u.cmdRules, cmdRule{allow: false, category: "@all"})
	case rule == "reset":
		*u = User{Name: u.Name}
	case strings.HasPrefix(rule, ">"):
		u.hashes = append(u.hashes, sha256.Sum256([]byte(rule[1:])))
		u.nopass = false
	case strings.HasPrefix(rule, "<"):
		h := sha256.Sum256([]byte(rule[1:]))
		u.hashes = slices.DeleteFunc(u.hashes, func(x [sha256.Size]byte) bool { return x == h })
	case strings.HasPrefix(rule, "#"), strings.HasPrefix(rule, "!"):
		b, err := hex.DecodeString(rule[1:])
		if err != nil || len(b) != sha256.Size {
			return fmt.Errorf("%q: want a SHA-256 in 64 hex digits", rule)
		}
		h := [sha256.Size]byte(b)
		if rule[0] == '#' {
			u.hashes, u.nopass = append(u.hashes, h), false
		} else {
			u.hashes = slices.DeleteFunc(u.hashes, func(x [sha256.Size]byte) bool { return x == h })
		}
	case strings.HasPrefix(rule, "~") && len(rule) > 1:
		u.keys = append(u.keys, rule[1:])
	case strings.HasPrefix(rule, "&") && len(rule) > 1:
		u.channels = append(u.channels, rule[1:])
	case (strings.HasPrefix(rule, "+") || strings.HasPrefix(rule, "-")) && len(rule) > 1:
		r := cmdRule{allow: rule[0] == '+'}
		if body := strings.ToLower(rule[1:]); strings.HasPrefix(body, "@") {
			r.category = body
		} else {
			r.name = body
		}
		u.cmdRules = append(u.cmdRules, r)
	default:
		return fmt.Errorf("unsupported rule %q", rule)
	}
	return nil
}

// Compile decides every command for every user once, so that a command's
// check is one map lookup. It returns the command rules that name no
// command or category of the table (likely typos), as "user: rule".
func (s *Set) Compile(cmds []Command) (unknown []string) {
	known := map[string]bool{"@all": true}
	for _, c := range cmds {
		known[c.Name] = true
		for _, cat := range c.Categories {
			known[cat] = true
		}
	}
	for _, u := range s.users {
		u.allowed = make(map[string]bool, len(cmds))
		for _, c := range cmds {
			u.allowed[c.Name] = u.decide(c)
		}
		for _, r := range u.cmdRules {
			if !known[r.category+r.name] {
				unknown = append(unknown, u.Name+": "+r.String())
			}
		}
	}
	slices.Sort(unknown)
	return unknown
}

func (u *User) decide(c Command) bool {
	parent, _, isSub := strings.Cut(c.Name, "|")
	allowed := false
	for _, r := range u.cmdRules {
		var match bool
		switch {
		case r.category == "@all":
			match = true
		case r.category != "":
			match = slices.Contains(c.Categories, r.category)
		default:
			match = r.name == c.Name || (isSub && r.name == parent)
		}
		if match {
			allowed = r.allow
		}
	}
	return allowed
}

// User returns the named user, or nil.
func (s *Set) User(name string) *User { return s.users[name] }

// Default is the user "default" when it is on and needs no password: then
// clients are that user without AUTH. Otherwise nil.
func (s *Set) Default() *User {
	if u := s.users["default"]; u != nil && u.on && u.nopass {
		return u
	}
	return nil
}

// Authenticate returns the user if it is on and pass is one of its
// passwords (any, with nopass), or nil. The comparison is in constant time
// per stored password.
func (s *Set) Authenticate(name, pass []byte) *User {
	u := s.users[string(name)]
	if u == nil || !u.on {
		sha256.Sum256(pass) // the same work as for a known user
		return nil
	}
	if u.nopass {
		return u
	}
	h := sha256.Sum256(pass)
	ok := 0
	for i := range u.hashes {
		ok |= subtle.ConstantTimeCompare(h[:], u.hashes[i][:])
	}
	if ok == 1 {
		return u
	}
	return nil
}

// AllowsCommand reports whether the user may run the command (its name as
// given to Compile).
func (u *User) AllowsCommand(name string) bool { return u.allowed[name] }

// AllKeys reports whether every key is allowed (a "*" pattern).
func (u *User) AllKeys() bool { return slices.Contains(u.keys, "*") }

// AllowsKey reports whether some key pattern matches key.
func (u *User) AllowsKey(key []byte) bool { return matchAny(u.keys, key) }

func matchAny(patterns []string, s []byte) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return Match(p, s) })
}

// HasKeyPattern reports whether p is one of the key patterns, literally.
func (u *User) HasKeyPattern(p string) bool { return slices.Contains(u.keys, p) }

// AllChannels reports whether every channel is allowed.
func (u *User) AllChannels() bool { return slices.Contains(u.channels, "*") }

// AllowsChannel reports whether some channel pattern matches ch (PUBLISH,
// SUBSCRIBE).
func (u *User) AllowsChannel(ch []byte) bool { return matchAny(u.channels, ch) }

// AllowsChannelPattern reports whether pattern is one of the channel
// patterns, literally, or every channel is allowed (PSUBSCRIBE, as Redis
// checks it).
func (u *User) AllowsChannelPattern(pattern []byte) bool {
	return u.AllChannels() || slices.Contains(u.channels, string(pattern))
}

// Match is Redis's glob matching (stringmatchlen): '*', '?', '[...]' with
// '^' negation and ranges, and '\' escaping the next character. It runs in
// O(len(pattern) * len(s)) (backtracking only to the last '*'), so a key a
// client chooses cannot make it slow.
func Match(pattern string, s []byte) bool {
	if len(s) == 0 { // Redis's glob matches an empty string to the empty pattern only; "*" is everything (KEYS *, ~*)
		return pattern == "" || pattern == "*"
	}
	p, i := 0, 0
	star, mark := -1, 0 // the last '*' seen, and where s stood when it was
	for i < len(s) {
		if p < len(pattern) && pattern[p] == '*' {
			for p < len(pattern) && pattern[p] == '*' {
				p++
			}
			star, mark = p, i
			continue
		}
		if p < len(pattern) {
			if ok, next := matchOne(pattern, p, s[i]); ok {
				p, i = next, i+1
				continue
			}
		}
		if star < 0 {
			return false
		}
		mark++ // let the last '*' take one more byte
		p, i = star, mark
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchOne matches the pattern token at p (not '*') against c, and returns
// the index after the token.
func matchOne(pattern string, p int, c byte) (bool, int) {
	switch pattern[p] {
	case '?':
		return true, p + 1
	case '[':
		p++
		not := p < len(pattern) && pattern[p] == '^'
		if not {
			p++
		}
		match := false
		for p < len(pattern) && pattern[p] != ']' {
			switch {
			case pattern[p] == '\\' && p+1 < len(pattern):
				p++
				match = match || pattern[p] == c
			case p+2 < len(pattern) && pattern[p+1] == '-': // as Redis: even "x-]" is a range
				lo, hi := pattern[p], pattern[p+2]
				if lo > hi {
					lo, hi = hi, lo
				}
				match = match || (lo <= c && c <= hi)
				p += 2
			default:
				match = match || pattern[p] == c
			}
			p++
		}
		if p < len(pattern) {
			p++ // the ']'
		}
		return match != not, p
	case '\\':
		if p+1 < len(pattern) {
			p++
		}
	}
	return pattern[p] == c, p + 1
}
