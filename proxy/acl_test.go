package proxy

import (
	"strings"
	"testing"

	"github.com/roomproxy/roomproxy/acl"
)

func mustUsers(t *testing.T, text string) *acl.Set {
	t.Helper()
	s, err := acl.Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	noCmd  = "-NOPERM this user has no permissions to run the '%s' command\r\n"
	noKey  = "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
	noChan = "-NOPERM this user has no permissions to access one of the channels used as arguments\r\n"
)

func noPerm(cmd string) string { return strings.Replace(noCmd, "%s", cmd, 1) }

// TestACLUsers: with an ACL file, a connection starts as the open default
// user, AUTH and HELLO AUTH switch users, RESET switches back, and each
// user's commands, keys and channels are checked before anything is
// forwarded, inside MULTI too.
func TestACLUsers(t *testing.T) {
	users := mustUsers(t, `
user default on nopass ~public:* +@read +@connection
user game on >gpw ~room:* ~cache:* &chat:* +@all -@dangerous +sort
user reader on >rpw allkeys allchannels +@read +@connection
user gone off >x allkeys +@all
`)
	up := newFake()
	_, addr := startServer(t, up, Config{Users: users})
	c := dial(t, addr)
	steps := []struct {
		cmd  []string
		want string
	}{
		{[]string{"GET", "public:a"}, "$-1\r\n"},
		{[]string{"GET", "secret"}, noKey},
		{[]string{"SET", "public:a", "1"}, noPerm("set")},
		{[]string{"CLIENT", "INFO"}, ""}, // checked below: user=default
		{[]string{"AUTH", "gone", "x"}, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{[]string{"AUTH", "game", "nope"}, "-WRONGPASS invalid username-password pair or user is disabled.\r\n"},
		{[]string{"AUTH", "game", "gpw"}, "+OK\r\n"},
		{[]string{"SET", "room:1", "x"}, "+OK\r\n"},
		{[]string{"GET", "room:1"}, "$1\r\nx\r\n"},
		{[]string{"GET", "public:a"}, noKey},
		{[]string{"MGET", "room:1", "other"}, noKey},
		{[]string{"EVAL", "return 1", "1", "other"}, noKey},
		{[]string{"EVAL", "return 1", "x", "room:1"}, noKey}, // a count that is not one: the keys cannot be told
		{[]string{"EVAL", "return 1", "1", "room:1"}, "-ERR fake upstream does not know EVAL\r\n"},
		{[]string{"ZUNIONSTORE", "room:d", "2", "room:a", "other"}, noKey},
		{[]string{"ZUNIONSTORE", "other", "1", "room:a"}, noKey},
		{[]string{"XREAD", "COUNT", "1", "STREAMS", "room:s", "other", "0", "0"}, noKey},
		{[]string{"SORT", "room:l", "BY", "other_*"}, noKey},
		{[]string{"SORT", "room:l", "STORE", "other"}, noKey},
		{[]string{"SORT", "room:l", "BY", "nosort", "GET", "#", "STORE", "room:z"}, "-ERR fake upstream does not know SORT\r\n"},
		{[]string{"PUBLISH", "news", "m"}, noChan},
		{[]string{"SUBSCRIBE", "chat:a", "news"}, noChan},
		{[]string{"PSUBSCRIBE", "chat:a*"}, noChan}, // patterns are compared literally
		{[]string{"FLUSHALL"}, noPerm("flushall")},
		{[]string{"DEBUG", "SLEEP", "0"}, noPerm("debug")},
		{[]string{"MULTI"}, "+OK\r\n"},
		{[]string{"SET", "room:2", "y"}, "+QUEUED\r\n"},
		{[]string{"GET", "other"}, noKey},
		{[]string{"EXEC"}, "-EXECABORT Transaction discarded because of previous errors.\r\n"},
		{[]string{"HELLO", "2", "AUTH", "reader", "rpw"}, ""}, // a map; then the reader's rules
		{[]string{"GET", "anything"}, "$-1\r\n"},
		{[]string{"SET", "room:1", "z"}, noPerm("set")},
		{[]string{"RESET"}, "+RESET\r\n"},
		{[]string{"GET", "room:1"}, noKey}, // default again
	}
	for i, st := range steps {
		got := c.Do(st.cmd...)
		if st.cmd[0] == "CLIENT" && !strings.Contains(got, " user=default ") {
			t.Errorf("step %d CLIENT INFO: %q", i, got)
		}
		if st.want != "" && got != st.want {
			t.Errorf("step %d %q: %q, want %q", i, st.cmd, got, st.want)
		}
	}
	up.mu.Lock()
	_, leaked := up.kv["room:2"]
	up.mu.Unlock()
	if leaked {
		t.Error("the aborted transaction's SET reached the upstream")
	}
}

// TestACLDefaultNeedsPassword: a default user with a password makes every
// connection authenticate first; AUTH with one argument is the default
// user.
func TestACLDefaultNeedsPassword(t *testing.T) {
	_, addr := startServer(t, newFake(), Config{Users: mustUsers(t, "user default on >pw allkeys +@all")})
	c := dial(t, addr)
	if got := c.Do("GET", "k"); got != "-NOAUTH Authentication required.\r\n" {
		t.Fatalf("before AUTH: %q", got)
	}
	if got := c.Do("AUTH", "pw"); got != "+OK\r\n" {
		t.Fatalf("AUTH pw: %q", got)
	}
	if got := c.Do("GET", "k"); got != "$-1\r\n" {
		t.Fatalf("after AUTH: %q", got)
	}
}
