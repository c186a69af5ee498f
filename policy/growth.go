package policy

import (
	"strconv"
	"strings"
)

// Growth says how a write command can change the size of the room keys it
// writes, for ROOM_MAX_BYTES (SPEC 4.1): the size of a room is the length of
// its keys' names and of the values they hold.
type Growth int

const (
	// GrowthBounded: the command adds at most the bound WriteGrowth returns
	// to each room it writes (HSET, LPUSH, SADD, INCR, APPEND, ...).
	GrowthBounded Growth = iota
	// GrowthStrings: the command replaces whole string values with values
	// it carries (SET, SETEX, PSETEX, GETSET, MSET; StringWrites lists them),
	// so its effect on the room's size is known exactly.
	GrowthStrings
	// GrowthNone: the command can only remove data or change TTLs (DEL,
	// HDEL, LPOP, LTRIM, SREM, EXPIRE, ...).
	GrowthNone
	// GrowthUnknown: the command copies or computes data whose size its
	// arguments do not give (COPY, RENAME, SUNIONSTORE, LMOVE, BITOP,
	// scripts, ...).
	GrowthUnknown
)

// numericSlack bounds what a counter command (INCR, HINCRBYFLOAT, ZINCRBY,
// ...) can add beyond its arguments: the longest number Redis writes back.
const numericSlack = 32

// hllBytes is the largest HyperLogLog Redis keeps (the dense encoding).
const hllBytes = 12304

// WriteGrowth classifies a write command (name in lower case, args as sent)
// and, for GrowthBounded, returns the most it can add to any one room: the
// length of its arguments after the name (keys, fields, members and values)
// plus what the command itself can add beyond them. Commands not listed are
// bounded by their arguments.
func WriteGrowth(name string, args [][]byte) (Growth, int) {
	switch name {
	case "set", "setex", "psetex", "getset", "mset", "setnx", "msetnx":
		return GrowthStrings, 0
	case "del", "unlink", "getdel", "hdel", "srem", "spop", "zrem", "zremrangebyscore",
		"zremrangebylex", "zremrangebyrank", "zpopmin", "zpopmax", "lpop", "rpop", "lrem",
		"ltrim", "lmpop", "zmpop", "xdel", "xtrim", "expire", "pexpire", "expireat",
		"pexpireat", "persist", "getex", "hexpire", "hpexpire", "hexpireat", "hpexpireat",
		"hpersist", "touch":
		return GrowthNone, 0
	case "copy", "rename", "renamenx", "sort", "sunionstore", "sinterstore", "sdiffstore",
		"zunionstore", "zinterstore", "zdiffstore", "zrangestore", "georadius",
		"georadiusbymember", "geosearchstore", "bitop", "bitfield", "pfmerge", "lmove",
		"rpoplpush", "blmove", "brpoplpush", "smove", "restore", "restore-asking", "migrate",
		"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
		return GrowthUnknown, 0
	}
	n := 0
	for _, a := range args[1:] {
		n += len(a)
	}
	switch name {
	case "setrange":
		// The value lands at the offset: the string may grow to offset+len.
		if len(args) > 3 {
			off, err := strconv.ParseInt(string(args[2]), 10, 64)
			if err != nil || off < 0 {
				return GrowthBounded, n // Redis refuses it
			}
			return GrowthBounded, saturate(off) + len(args[1]) + len(args[3])
		}
	case "setbit":
		if len(args) > 2 {
			off, err := strconv.ParseInt(string(args[2]), 10, 64)
			if err != nil || off < 0 {
				return GrowthBounded, n
			}
			return GrowthBounded, saturate(off/8+1) + len(args[1])
		}
	case "pfadd":
		return GrowthBounded, n + hllBytes
	}
	return GrowthBounded, n + numericSlack
}

// saturate caps an offset far beyond any room's limit, so that adding to
// it cannot overflow.
func saturate(n int64) int {
	if n > 1<<40 {
		return 1 << 40
	}
	return int(n)
}

// StringWrite is one string key a GrowthStrings command sets, and whether
// it sets it only under a condition (NX, XX, IFEQ, SETNX, MSETNX: it may
// leave the old value in place).
type StringWrite struct {
	Key, Value  []byte
	Conditional bool
}

// StringWrites appends the keys and values of a GrowthStrings command to
// ws; ok is false when its arguments are not well formed (Redis refuses it).
func StringWrites(ws []StringWrite, name string, args [][]byte) (_ []StringWrite, ok bool) {
	switch name {
	case "set":
		if len(args) < 3 {
			return nil, false
		}
		cond := false
		for _, a := range args[3:] {
			switch strings.ToLower(string(a)) {
			case "nx", "xx", "ifeq":
				cond = true
			}
		}
		return append(ws, StringWrite{Key: args[1], Value: args[2], Conditional: cond}), true
	case "getset", "setnx":
		if len(args) != 3 {
			return nil, false
		}
		return append(ws, StringWrite{Key: args[1], Value: args[2], Conditional: name == "setnx"}), true
	case "setex", "psetex":
		if len(args) != 4 {
			return nil, false
		}
		return append(ws, StringWrite{Key: args[1], Value: args[3]}), true
	case "mset", "msetnx":
		if len(args) < 3 || len(args)%2 != 1 {
			return nil, false
		}
		for i := 1; i+1 < len(args); i += 2 {
			ws = append(ws, StringWrite{Key: args[i], Value: args[i+1], Conditional: name == "msetnx"})
		}
		return ws, true
	}
	return ws, false
}
