package proxy

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// redisCommand is one entry of Redis's COMMAND reply (redis_commands.go).
type redisCommand struct {
	Name              string
	Arity             int
	Flags             []string
	First, Last, Step int
	Categories        []string
	Subcommands       []redisCommand
}

// Flag describes how the proxy carries a command.
type Flag uint32

const (
	// FlagForward: sent upstream in the client's pipeline.
	FlagForward Flag = 1 << iota
	// FlagLocal: answered by the proxy itself, also while the upstream is down.
	FlagLocal
	// FlagDenied: never forwarded; answered -NOPERM.
	FlagDenied
	// FlagUnsupported: a Redis command roomproxy does not carry (yet); it gets
	// an explicit error and nothing is forwarded.
	FlagUnsupported
	// FlagNoAuth: allowed before the client has authenticated.
	FlagNoAuth
	// FlagRead and FlagWrite mirror Redis's readonly and write flags.
	FlagRead
	FlagWrite
	// FlagBlocking: may block on the server (BLPOP, XREAD BLOCK, ...).
	FlagBlocking
	// FlagPubSub: pub/sub commands.
	FlagPubSub
	// FlagTx: transaction commands.
	FlagTx
	// FlagScript: scripting commands (EVAL, EVALSHA, SCRIPT, FCALL, FUNCTION).
	FlagScript
	// FlagMovableKeys: key positions depend on the arguments (Redis's
	// "movablekeys"); movableKeys finds them.
	FlagMovableKeys
)

// handler answers a local command. It appends the reply to s.out with the
// session's protocol and may change session state.
type handler func(s *session, args [][]byte)

// Spec is one entry of the command table: the allowlist. A command or
// subcommand that has no Spec is unknown to roomproxy.
type Spec struct {
	Name       string // lower case; "client|setname" for a subcommand
	Arity      int    // Redis's convention: n exact, -n at least n
	Flags      Flag
	First      int // key positions, as in Redis's COMMAND reply
	Last       int
	Step       int
	RedisFlags []string
	Categories []string // Redis ACL categories, with the leading '@'
	Subs       map[string]*Spec
	handler    handler
	reason     string // for FlagUnsupported
	parent     *Spec
	obs        CommandObserver
}

// Table is the command table. It is built once at start and read-only after.
type Table struct {
	m     map[string]*Spec
	names []string // top-level names, sorted, for COMMAND
}

// lookup finds the top-level Spec for a command name in any case, without
// allocating.
func (t *Table) lookup(name []byte) *Spec {
	var buf [32]byte
	if len(name) > len(buf) {
		return nil
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return t.m[string(buf[:len(name)])]
}

// specMemo remembers a session's last few command names, in the case the
// client spells them, with their Specs: clients send the same few commands
// over and over, and comparing a handful of bytes is several times cheaper
// than lowercasing and hashing the name for Table.lookup (which the raw read
// loop's needsSocket and dispatch would otherwise each do for every command).
// It is used by the session's own goroutine only.
type specMemo struct {
	e    [4]memoEntry
	next uint8 // the entry the next miss replaces
}

type memoEntry struct {
	n    uint8 // length of name; 0: unused
	name [15]byte
	sp   *Spec
}

// lookup is Table.lookup through the memo. Unknown names and names longer
// than 15 bytes are not remembered.
func (m *specMemo) lookup(t *Table, name []byte) *Spec {
	for i := range m.e {
		e := &m.e[i]
		if int(e.n) == len(name) && string(e.name[:e.n]) == string(name) {
			return e.sp
		}
	}
	sp := t.lookup(name)
	if sp != nil && len(name) > 0 && len(name) <= len(m.e[0].name) {
		e := &m.e[m.next%uint8(len(m.e))]
		m.next++
		e.n = uint8(copy(e.name[:], name))
		e.sp = sp
	}
	return sp
}

// sub finds a subcommand of sp in any case.
func (sp *Spec) sub(name []byte) *Spec {
	return sp.Subs[strings.ToLower(string(name))]
}

// register adds a Spec; a second registration of one name is a programming
// error and panics at start.
func (t *Table) register(sp *Spec) {
	if _, dup := t.m[sp.Name]; dup {
		panic(fmt.Sprintf("proxy: command %q registered twice", sp.Name))
	}
	t.m[sp.Name] = sp
	t.names = append(t.names, sp.Name)
}

// fullName is the name Redis uses in its error texts: "get", "config|get".
func (sp *Spec) fullName() string { return sp.Name }

// kind is the command's class for metrics: "read", "write" or "other".
func (sp *Spec) kind() string {
	switch {
	case sp.Flags&FlagWrite != 0:
		return "write"
	case sp.Flags&FlagRead != 0:
		return "read"
	}
	return "other"
}

// keys returns the keys of a command from its key positions (Redis's
// first, last, step); commands whose keys are not positional have none here.
func (sp *Spec) keys(args [][]byte) [][]byte {
	var keys [][]byte
	sp.eachKey(args, func(k []byte) bool { keys = append(keys, k); return true })
	return keys
}

// eachKey calls fn for each key of the command, in order, until fn returns
// false; it allocates nothing.
func (sp *Spec) eachKey(args [][]byte, fn func([]byte) bool) {
	if sp.First <= 0 || sp.Step <= 0 {
		return
	}
	last := sp.Last
	if last < 0 {
		last += len(args)
	}
	for i := sp.First; i <= last && i < len(args); i += sp.Step {
		if !fn(args[i]) {
			return
		}
	}
}

// eachKeyAll is eachKey for every command, those whose key positions depend
// on their arguments included (movableKeys). It returns false when the keys
// cannot be told; fn may then not have seen them all.
func (sp *Spec) eachKeyAll(args [][]byte, fn func([]byte) bool) bool {
	if sp.Flags&FlagMovableKeys != 0 {
		return movableKeys(sp.Name, args, fn)
	}
	sp.eachKey(args, fn)
	return true
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

// arityOK applies Redis's arity rule to argc (the command name included).
func (sp *Spec) arityOK(argc int) bool {
	if sp.Arity >= 0 {
		return argc == sp.Arity
	}
	return argc >= -sp.Arity
}

// The proxy's policy on top of Redis's own table.
var (
	// localCommands are answered by the proxy (SPEC section 2).
	localCommands = map[string]handler{
		"ping": cmdPing, "echo": cmdEcho, "quit": cmdQuit, "reset": cmdReset,
		"hello": cmdHello, "auth": cmdAuth, "select": cmdSelect,
		"readonly": cmdOK, "readwrite": cmdOK, "info": cmdInfo,
		"command": cmdCommand, "command|count": cmdCommandCount,
		"command|docs": cmdCommandDocs, "command|info": cmdCommandInfo,
		"command|list":   cmdCommandList,
		"config|get":     cmdConfigGet,
		"client|setname": cmdClientSetName, "client|getname": cmdClientGetName,
		"client|setinfo": cmdClientSetInfo, "client|id": cmdClientID,
		"client|info": cmdClientInfo, "client|no-evict": cmdClientFlag,
		"client|no-touch": cmdClientFlag, "client|reply": cmdClientReply,
		"multi": cmdMulti, "exec": cmdExec, "discard": cmdDiscard,
		"watch": cmdWatch, "unwatch": cmdUnwatch,
		"room.get": cmdRoomGet, "room.list": cmdRoomList, "room.ttl": cmdRoomTTL, "room.flush": cmdRoomFlush,
		"subscribe": cmdSubscribe, "psubscribe": cmdSubscribe,
		"unsubscribe": cmdUnsubscribe, "punsubscribe": cmdUnsubscribe,
	}
	// noAuthCommands may run before AUTH, as in Redis.
	noAuthCommands = []string{"auth", "hello", "quit", "reset"}
	// deniedCommands are refused on top of everything Redis flags "admin":
	// whole-keyspace and dangerous commands (SPEC section 2).
	deniedCommands = []string{
		"flushall", "flushdb", "swapdb", "migrate", "keys", "acl", "cluster", "module",
		"script|flush", "script|kill", "function|flush", "function|delete",
		"function|restore", "function|kill", "client|tracking", "client|caching",
		"client|getredir", "client|trackinginfo",
	}
	// unsupportedCommands are refused with a clear error: sharded pub/sub
	// does not exist on Upstash, and roomproxy does not emulate it.
	unsupportedCommands = map[string]string{
		"ssubscribe":   "sharded pub/sub is not available on Upstash; use SUBSCRIBE",
		"sunsubscribe": "sharded pub/sub is not available on Upstash; use UNSUBSCRIBE",
		"spublish":     "sharded pub/sub is not available on Upstash; use PUBLISH",
	}
)

// newerSubcommands are Redis 7.2 additions that current client libraries send
// when they connect (go-redis and node-redis send CLIENT SETINFO).
var newerSubcommands = map[string][]redisCommand{
	"client": {
		{Name: "client|setinfo", Arity: 4, Flags: []string{"noscript", "loading", "stale"}, Categories: []string{"@slow", "@connection"}},
		{Name: "client|no-touch", Arity: 3, Flags: []string{"noscript", "loading", "stale"}, Categories: []string{"@slow", "@connection"}},
	},
}

// roomCommands are roomproxy's own commands (SPEC 4.6), listed by COMMAND.
var roomCommands = []redisCommand{
	{Name: "room.flush", Arity: 2, Flags: []string{"write", "fast"}, Categories: []string{"@write", "@fast"}},
	{Name: "room.get", Arity: 2, Flags: []string{"readonly", "fast"}, Categories: []string{"@read", "@fast"}},
	{Name: "room.list", Arity: -1, Flags: []string{"readonly"}, Categories: []string{"@read", "@slow"}},
	{Name: "room.ttl", Arity: 3, Flags: []string{"write", "fast"}, Categories: []string{"@write", "@fast"}},
}

// NewTable builds the command table from Redis's own description of its
// commands and roomproxy's policy.
func NewTable() *Table {
	t := &Table{m: make(map[string]*Spec)}
	for _, rc := range redisCommands {
		if extra := newerSubcommands[rc.Name]; extra != nil {
			rc.Subcommands = append(slices.Clone(rc.Subcommands), extra...)
		}
		t.register(newSpec(rc, nil))
	}
	for _, rc := range roomCommands {
		t.register(newSpec(rc, nil))
	}
	slices.Sort(t.names)
	return t
}

func newSpec(rc redisCommand, parent *Spec) *Spec {
	sp := &Spec{
		Name: rc.Name, Arity: rc.Arity, First: rc.First, Last: rc.Last, Step: rc.Step,
		RedisFlags: rc.Flags, Categories: rc.Categories, parent: parent,
	}
	for _, f := range rc.Flags {
		switch f {
		case "readonly":
			sp.Flags |= FlagRead
		case "write":
			sp.Flags |= FlagWrite
		case "blocking":
			sp.Flags |= FlagBlocking
		case "pubsub":
			sp.Flags |= FlagPubSub
		case "movablekeys":
			sp.Flags |= FlagMovableKeys
		}
	}
	if slices.Contains([]string{"multi", "exec", "discard", "watch", "unwatch"}, rc.Name) {
		sp.Flags |= FlagTx
	}
	if slices.Contains(rc.Categories, "@scripting") {
		sp.Flags |= FlagScript
	}
	top := rc.Name
	if parent != nil {
		top = parent.Name
	}
	switch {
	case localCommands[rc.Name] != nil:
		sp.Flags |= FlagLocal
		sp.handler = localCommands[rc.Name]
	case slices.Contains(deniedCommands, rc.Name) || slices.Contains(deniedCommands, top):
		sp.Flags |= FlagDenied
	case slices.Contains(rc.Flags, "admin"):
		sp.Flags |= FlagDenied
	case unsupportedCommands[rc.Name] != "":
		sp.Flags |= FlagUnsupported
		sp.reason = unsupportedCommands[rc.Name]
	case parent != nil && parent.Flags&FlagLocal != 0:
		// A subcommand of a local command that the proxy does not answer
		// (CLIENT KILL is admin and caught above; this is the rest).
		sp.Flags |= FlagUnsupported
		sp.reason = "this subcommand"
	default:
		sp.Flags |= FlagForward
	}
	if slices.Contains(noAuthCommands, rc.Name) {
		sp.Flags |= FlagNoAuth
	}
	if len(rc.Subcommands) > 0 {
		sp.Subs = make(map[string]*Spec, len(rc.Subcommands))
		for _, s := range rc.Subcommands {
			sub := newSpec(s, sp)
			// Redis names subcommands "config|get"; the key is the part after '|'.
			sp.Subs[s.Name[strings.IndexByte(s.Name, '|')+1:]] = sub
		}
	}
	return sp
}

// walk calls fn for every Spec, subcommands after their parent.
func (t *Table) walk(fn func(*Spec)) {
	for _, n := range t.names {
		sp := t.m[n]
		fn(sp)
		for _, k := range sortedKeys(sp.Subs) {
			fn(sp.Subs[k])
		}
	}
}

func sortedKeys(m map[string]*Spec) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sortStrings(s []string) { slices.Sort(s) }
