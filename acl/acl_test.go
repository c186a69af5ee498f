package acl

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

var table = []Command{
	{Name: "get", Categories: []string{"@read", "@string", "@fast"}},
	{Name: "set", Categories: []string{"@write", "@string", "@slow"}},
	{Name: "flushall", Categories: []string{"@keyspace", "@write", "@slow", "@dangerous"}},
	{Name: "client", Categories: []string{"@slow"}},
	{Name: "client|setname", Categories: []string{"@slow", "@connection"}},
	{Name: "client|kill", Categories: []string{"@admin", "@slow", "@dangerous", "@connection"}},
	{Name: "publish", Categories: []string{"@pubsub", "@fast"}},
}

func mustParse(t *testing.T, text string) *Set {
	t.Helper()
	s, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCommandsInOrder(t *testing.T) {
	s := mustParse(t, `
# comments and blank lines are skipped

user game on >pw ~room:* +@read +@write -@dangerous
user admin on >root allkeys allcommands -client|kill
user ro on >r ~* +@all -@write +set
user sub on >s ~* +client|setname
user fresh
`)
	if unknown := s.Compile(table); len(unknown) != 0 {
		t.Fatalf("unknown rules: %v", unknown)
	}
	cases := map[string]map[string]bool{
		"game":  {"get": true, "set": true, "flushall": false, "client|setname": false, "publish": false},
		"admin": {"get": true, "flushall": true, "client|setname": true, "client|kill": false},
		"ro":    {"get": true, "set": true, "flushall": false, "publish": true},
		"sub":   {"client|setname": true, "client|kill": false, "get": false},
		"fresh": {"get": false},
	}
	for user, want := range cases {
		for cmd, ok := range want {
			if got := s.User(user).AllowsCommand(cmd); got != ok {
				t.Errorf("%s %s: %v, want %v", user, cmd, got, ok)
			}
		}
	}
	if unknown := mustParse(t, "user a on +gett -@reed +@read").Compile(table); strings.Join(unknown, ",") != "a: +gett,a: -@reed" {
		t.Errorf("unknown rules: %q", unknown)
	}
}

func TestPasswords(t *testing.T) {
	h := sha256.Sum256([]byte("hashed"))
	s := mustParse(t, "user a on >one >two <two #"+hex.EncodeToString(h[:])+"\nuser b off >pw\nuser default on nopass\nuser c on")
	for _, c := range []struct {
		user, pass string
		ok         bool
	}{
		{"a", "one", true}, {"a", "two", false}, {"a", "hashed", true}, {"a", "", false},
		{"b", "pw", false}, // off
		{"default", "anything", true},
		{"c", "", false}, // on, but no password and not nopass
		{"nobody", "x", false},
	} {
		if got := s.Authenticate([]byte(c.user), []byte(c.pass)) != nil; got != c.ok {
			t.Errorf("AUTH %s %q: %v, want %v", c.user, c.pass, got, c.ok)
		}
	}
	if s.Default() == nil {
		t.Error("default is on and nopass: clients are it without AUTH")
	}
	if mustParse(t, "user default on >pw").Default() != nil {
		t.Error("a default user with a password must not be open")
	}
}

func TestKeysAndChannels(t *testing.T) {
	s := mustParse(t, "user a on ~room:* ~cache:[ab]? &chat:* &exact\nuser b on allkeys allchannels\nuser c on ~x resetkeys")
	a := s.User("a")
	for key, ok := range map[string]bool{"room:1": true, "room:": true, "cache:a1": true, "cache:c1": false, "other": false, "room": false} {
		if a.AllowsKey([]byte(key)) != ok {
			t.Errorf("key %q: want %v", key, ok)
		}
	}
	if a.AllKeys() || !s.User("b").AllKeys() || s.User("c").AllowsKey([]byte("x")) {
		t.Error("allkeys / resetkeys")
	}
	if !a.AllowsChannel([]byte("chat:lobby")) || a.AllowsChannel([]byte("news")) {
		t.Error("channel patterns")
	}
	if !a.AllowsChannelPattern([]byte("chat:*")) || a.AllowsChannelPattern([]byte("chat:l*")) || !s.User("b").AllowsChannelPattern([]byte("x*")) {
		t.Error("PSUBSCRIBE patterns are compared literally")
	}
}

func TestParseErrors(t *testing.T) {
	for text, want := range map[string]string{
		"user a on %R~x":       "line 1: user a: unsupported rule",
		"\nuser a on\nuser a":  "line 3: user \"a\" defined twice",
		"usr a":                "line 1: want",
		"user a #zz":           "line 1: user a: \"#zz\": want a SHA-256",
		"# only a comment\n\n": "no user defined",
	} {
		if _, err := Parse(strings.NewReader(text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		ok   bool
	}{
		{"*", "", true}, {"**", "", false}, {"", "", true}, {"*", "abc", true}, {"a*", "abc", true}, {"a*c", "abc", true}, {"a*c", "abd", false},
		{"?", "", false}, {"?", "x", true}, {"h?llo", "hello", true}, {"h?llo", "hllo", false},
		{"h[ae]llo", "hallo", true}, {"h[ae]llo", "hillo", false}, {"h[^e]llo", "hallo", true}, {"h[^e]llo", "hello", false},
		{"h[a-b]llo", "hbllo", true}, {"h[a-b]llo", "hcllo", false}, {"h[b-a]llo", "hallo", true},
		{`h\*llo`, "h*llo", true}, {`h\*llo`, "hallo", false}, {`[\]]`, "]", true},
		{"room:*:players", "room:1:players", true}, {"room:*:players", "room:1:chat", false},
		{"*a*b", "xaxxb", true}, {"*a*b", "xaxxc", false}, {"a**b", "ab", true},
	} {
		if got := Match(c.p, []byte(c.s)); got != c.ok {
			t.Errorf("Match(%q, %q) = %v, want %v", c.p, c.s, got, c.ok)
		}
	}
	// A key a client chooses cannot make matching slow: many stars against
	// a long key that almost matches (exponential for naive recursion).
	start := time.Now()
	key := []byte(strings.Repeat("a", 32<<10))
	if Match("*a*a*a*a*a*a*b", key) {
		t.Error("no b in the key")
	}
	t.Logf("32 KiB key, 7 stars: %v", time.Since(start))
}

// FuzzMatch: no pattern or string makes Match panic, and a string matches
// itself with every special character escaped.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{{"*", ""}, {"[", "a"}, {`\`, `\`}, {"[a-", "b"}, {"[^]", "x"}, {"a*[b-]?", "axb-c"}} {
		f.Add(seed[0], []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, pattern string, s []byte) {
		Match(pattern, s)
		var esc strings.Builder
		for _, c := range s {
			if strings.IndexByte(`*?[]\`, c) >= 0 {
				esc.WriteByte('\\')
			}
			esc.WriteByte(c)
		}
		if !Match(esc.String(), s) {
			t.Fatalf("%q does not match its escaped self %q", s, esc.String())
		}
	})
}
