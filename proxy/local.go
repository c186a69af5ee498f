package proxy

import (
	"bytes"
	"crypto/subtle"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/match"
)

// Local command handlers (SPEC section 2). They answer from the session and
// the server alone, so they work while the upstream is down.

func cmdOK(s *session, _ [][]byte) { s.simple("OK") }

func cmdPing(s *session, args [][]byte) {
	if s.proto == 2 && s.sub != nil && s.subscribed() > 0 && len(args) <= 2 {
		// A RESP2 subscriber gets PING's answer in the pub/sub shape.
		s.array(2)
		s.bulkString("pong")
		if len(args) == 2 {
			s.bulk(args[1])
		} else {
			s.bulkString("")
		}
		return
	}
	switch len(args) {
	case 1:
		s.simple("PONG")
	case 2:
		s.bulk(args[1])
	default:
		s.err("ERR wrong number of arguments for 'ping' command")
	}
}

func cmdEcho(s *session, args [][]byte) { s.bulk(args[1]) }

func cmdQuit(s *session, _ [][]byte) {
	s.simple("OK")
	s.quit = true
}

func cmdReset(s *session, _ [][]byte) {
	s.drain() // what came before RESET runs under the old protocol
	s.endTx()
	s.tx = txState{}
	s.unpin()
	if s.sub != nil && s.subscribed() > 0 {
		ctx, cancel := s.upstreamCtx()
		s.sub.Unsubscribe(ctx)
		s.sub.PUnsubscribe(ctx)
		cancel()
		clear(s.channels)
		clear(s.patterns)
	}
	s.proto = 2
	s.batch.Reset(2)
	s.name = ""
	s.replyMode = replyOn
	s.noEvict, s.noTouch = false, false
	s.authed, s.user = !s.srv.authRequired(), s.srv.defaultUser()
	s.simple("RESET")
}

func cmdSelect(s *session, args [][]byte) {
	n, err := strconv.ParseInt(string(args[1]), 10, 64)
	switch {
	case err != nil:
		s.err("ERR value is not an integer or out of range")
	case n != 0:
		s.err("ERR DB index is out of range")
	default:
		s.simple("OK")
	}
}

// checkPassword compares in constant time. Without an ACL file only the
// "default" user exists; with one, the user it names becomes the
// connection's.
func (s *session) checkPassword(user, pass []byte) bool {
	if users := s.srv.cfg.Users; users != nil {
		u := users.Authenticate(user, pass)
		if u != nil {
			s.user = u
		}
		return u != nil
	}
	if !s.srv.authRequired() {
		return true
	}
	want := []byte(s.srv.cfg.Password)
	okPass := subtle.ConstantTimeCompare(pass, want) == 1
	okUser := subtle.ConstantTimeCompare(user, []byte("default")) == 1
	return okPass && okUser
}

// authFailed slows down password guessing on this connection.
func (s *session) authFailed() {
	s.srv.obs.Rejected("auth")
	s.authFailures++
	time.Sleep(min(time.Duration(s.authFailures)*50*time.Millisecond, time.Second))
	s.err("WRONGPASS invalid username-password pair or user is disabled.")
}

func cmdAuth(s *session, args [][]byte) {
	user, pass := []byte("default"), args[1]
	switch len(args) {
	case 2:
	case 3:
		user, pass = args[1], args[2]
	default:
		s.err("ERR syntax error")
		return
	}
	if !s.checkPassword(user, pass) {
		s.authFailed()
		return
	}
	s.authed = true
	s.simple("OK")
}

func cmdHello(s *session, args [][]byte) {
	proto := s.proto
	if len(args) >= 2 {
		v, err := strconv.ParseInt(string(args[1]), 10, 64)
		if err != nil {
			s.err("ERR Protocol version is not an integer or out of range")
			return
		}
		if v < 2 || v > 3 {
			s.err("NOPROTO unsupported protocol version")
			return
		}
		proto = int(v)
	}
	var user, pass, name []byte
	haveAuth, haveName := false, false
	for i := 2; i < len(args); i++ {
		more := len(args) - i - 1
		switch opt := strings.ToLower(string(args[i])); {
		case opt == "auth" && more >= 2:
			user, pass, haveAuth = args[i+1], args[i+2], true
			i += 2
		case opt == "setname" && more >= 1:
			name, haveName = args[i+1], true
			i++
		default:
			s.err("ERR Syntax error in HELLO option '" + string(args[i]) + "'")
			return
		}
	}
	if !s.authed && !haveAuth {
		s.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		return
	}
	if haveAuth {
		if !s.checkPassword(user, pass) {
			s.authFailed()
			return
		}
		s.authed = true
	}
	if haveName {
		if !validClientName(name) {
			s.err("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		s.name = string(name)
	}
	if proto != s.proto {
		// Commands before HELLO are answered in the old protocol, by an
		// upstream connection speaking it.
		s.drain()
		s.proto = proto
		s.batch.Reset(proto)
	}
	s.mapHeader(7)
	s.bulkString("server")
	s.bulkString("redis")
	s.bulkString("version")
	s.bulkString(redisVersion)
	s.bulkString("proto")
	s.integer(int64(s.proto))
	s.bulkString("id")
	s.integer(s.id)
	s.bulkString("mode")
	s.bulkString("standalone")
	s.bulkString("role")
	s.bulkString("master")
	s.bulkString("modules")
	s.array(0)
}

// validClientName follows Redis: printable ASCII without spaces.
func validClientName(name []byte) bool {
	for _, c := range name {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

func cmdClientSetName(s *session, args [][]byte) {
	if !validClientName(args[2]) {
		s.err("ERR Client names cannot contain spaces, newlines or special characters.")
		return
	}
	s.name = string(args[2])
	s.simple("OK")
}

func cmdClientGetName(s *session, _ [][]byte) {
	if s.name == "" {
		s.null()
		return
	}
	s.bulkString(s.name)
}

func cmdClientSetInfo(s *session, args [][]byte) {
	val := string(args[3])
	if strings.ContainsAny(val, " \r\n") {
		s.err("ERR " + string(args[2]) + " cannot contain spaces, newlines or special characters.")
		return
	}
	switch strings.ToLower(string(args[2])) {
	case "lib-name":
		s.libName = val
	case "lib-ver":
		s.libVer = val
	default:
		s.err("ERR Unrecognized option '" + string(args[2]) + "'")
		return
	}
	s.simple("OK")
}

func cmdClientID(s *session, _ [][]byte) { s.integer(s.id) }

func cmdClientInfo(s *session, _ [][]byte) { s.verbatim(s.clientInfo()) }

// clientInfo is one line in the format of Redis's CLIENT INFO / CLIENT LIST.
func (s *session) clientInfo() []byte {
	now := time.Now()
	idle := now.Sub(time.Unix(0, s.lastCmd.Load()))
	flags := "N"
	if s.noEvict {
		flags = "e"
	}
	if s.noTouch {
		flags += "T"
	}
	var b bytes.Buffer
	b.WriteString("id=" + strconv.FormatInt(s.id, 10))
	b.WriteString(" addr=" + s.addr + " laddr=" + s.laddr + " fd=-1")
	b.WriteString(" name=" + s.name)
	b.WriteString(" age=" + strconv.FormatInt(int64(now.Sub(s.created).Seconds()), 10))
	b.WriteString(" idle=" + strconv.FormatInt(int64(idle.Seconds()), 10))
	b.WriteString(" flags=" + flags + " db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info")
	user := "default"
	if s.user != nil {
		user = s.user.Name
	}
	b.WriteString(" user=" + user + " redir=-1 resp=" + strconv.Itoa(s.proto))
	b.WriteString(" lib-name=" + s.libName + " lib-ver=" + s.libVer + "\n")
	return b.Bytes()
}

func cmdClientFlag(s *session, args [][]byte) {
	var on bool
	switch strings.ToLower(string(args[2])) {
	case "on":
		on = true
	case "off":
	default:
		s.err("ERR syntax error")
		return
	}
	if strings.EqualFold(string(args[1]), "no-evict") {
		s.noEvict = on
	} else {
		s.noTouch = on
	}
	s.simple("OK")
}

func cmdClientReply(s *session, args [][]byte) {
	switch strings.ToLower(string(args[2])) {
	case "on":
		s.replyMode = replyOn
		s.simple("OK")
	case "off":
		s.replyMode = replyOff
		s.quietNow = true
	case "skip":
		if s.replyMode != replyOff {
			s.replyMode = replySkip
		}
		s.quietNow = true
	default:
		s.err("ERR syntax error")
	}
}

// configValues is the synthesized CONFIG GET set. It describes roomproxy, not
// the upstream: the upstream's configuration is never revealed.
func (s *session) configValues() [][2]string {
	l := s.srv.lim
	return [][2]string{
		{"appendonly", "no"},
		{"databases", "1"},
		{"maxclients", strconv.Itoa(l.MaxClients)},
		{"maxmemory", "0"},
		{"maxmemory-policy", "noeviction"},
		{"proto-max-bulk-len", strconv.Itoa(l.MaxRequestBytes)},
		{"save", ""},
		{"timeout", strconv.Itoa(int(l.IdleTimeout.Seconds()))},
	}
}

func cmdConfigGet(s *session, args [][]byte) {
	var hits [][2]string
	for _, kv := range s.configValues() {
		for _, pat := range args[2:] {
			if match.Match(kv[0], strings.ToLower(string(pat))) {
				hits = append(hits, kv)
				break
			}
		}
	}
	s.mapHeader(len(hits))
	for _, kv := range hits {
		s.bulkString(kv[0])
		s.bulkString(kv[1])
	}
}

func cmdInfo(s *session, args [][]byte) {
	s.verbatim(s.srv.info(args[1:]))
}

// commandEntry writes one COMMAND INFO entry in Redis 7's ten-field shape.
func (s *session) commandEntry(sp *Spec) {
	s.array(10)
	s.bulkString(sp.Name)
	s.integer(int64(sp.Arity))
	s.setHeader(len(sp.RedisFlags))
	for _, f := range sp.RedisFlags {
		s.simple(f)
	}
	s.integer(int64(sp.First))
	s.integer(int64(sp.Last))
	s.integer(int64(sp.Step))
	s.setHeader(len(sp.Categories))
	for _, c := range sp.Categories {
		s.simple(c)
	}
	s.setHeader(0) // tips
	s.array(0)     // key specs
	subs := sortedKeys(sp.Subs)
	s.array(len(subs))
	for _, k := range subs {
		s.commandEntry(sp.Subs[k])
	}
}

// visible reports whether COMMAND lists a command: denied ones are hidden.
func visible(sp *Spec) bool { return sp.Flags&FlagDenied == 0 }

func (s *session) visibleNames() []string {
	var names []string
	for _, n := range s.srv.table.names {
		if visible(s.srv.table.m[n]) {
			names = append(names, n)
		}
	}
	return names
}

func cmdCommand(s *session, _ [][]byte) {
	names := s.visibleNames()
	s.array(len(names))
	for _, n := range names {
		s.commandEntry(s.srv.table.m[n])
	}
}

func cmdCommandCount(s *session, _ [][]byte) { s.integer(int64(len(s.visibleNames()))) }

func cmdCommandList(s *session, _ [][]byte) {
	names := s.visibleNames()
	s.array(len(names))
	for _, n := range names {
		s.bulkString(n)
	}
}

func cmdCommandInfo(s *session, args [][]byte) {
	if len(args) == 2 {
		cmdCommand(s, args)
		return
	}
	s.array(len(args) - 2)
	for _, a := range args[2:] {
		sp := s.srv.table.lookup(a)
		if sp == nil || !visible(sp) {
			s.null()
			continue
		}
		s.commandEntry(sp)
	}
}

// cmdCommandDocs answers with no documentation; redis-cli then falls back to
// its built-in hints.
func cmdCommandDocs(s *session, _ [][]byte) { s.mapHeader(0) }
