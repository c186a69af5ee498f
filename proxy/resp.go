package proxy

import (
	"strconv"

	"github.com/tidwall/redcon"
)

// Reply encoders for local answers. Each appends to s.out in the session's
// protocol: a RESP2 client never sees a RESP3 type.

func (s *session) simple(str string) { s.out = redcon.AppendString(s.out, str) }
func (s *session) err(msg string)    { s.out = redcon.AppendError(s.out, msg) }
func (s *session) integer(n int64)   { s.out = redcon.AppendInt(s.out, n) }
func (s *session) bulk(b []byte)     { s.out = redcon.AppendBulk(s.out, b) }
func (s *session) bulkString(str string) {
	s.out = redcon.AppendBulkString(s.out, str)
}
func (s *session) array(n int) { s.out = redcon.AppendArray(s.out, n) }

// null is a missing value: "$-1" in RESP2, "_" in RESP3.
func (s *session) null() {
	if s.proto == 3 {
		s.out = append(s.out, "_\r\n"...)
		return
	}
	s.out = append(s.out, "$-1\r\n"...)
}

// aggregate starts a RESP3 aggregate of type t ('%' map, '~' set, '>' push)
// with n entries, or in RESP2 the array of n2 elements that stands for it.
func (s *session) aggregate(t byte, n, n2 int) {
	if s.proto == 3 {
		s.out = append(s.out, t)
		s.out = strconv.AppendInt(s.out, int64(n), 10)
		s.out = append(s.out, '\r', '\n')
		return
	}
	s.array(n2)
}

// mapHeader starts a map of n pairs: "%n" in RESP3, a flat array of 2n in RESP2.
func (s *session) mapHeader(n int) { s.aggregate('%', n, 2*n) }

// setHeader starts a set of n members: "~n" in RESP3, an array in RESP2.
func (s *session) setHeader(n int) { s.aggregate('~', n, n) }

// pushHeader starts a pub/sub frame: a push in RESP3, an array in RESP2.
func (s *session) pushHeader(n int) { s.aggregate('>', n, n) }

// verbatim is free text such as INFO's: "=" with a "txt:" format in RESP3, a
// bulk string in RESP2, as Redis sends it.
func (s *session) verbatim(text []byte) {
	if s.proto == 3 {
		s.out = append(s.out, '=')
		s.out = strconv.AppendInt(s.out, int64(len(text)+4), 10)
		s.out = append(s.out, "\r\ntxt:"...)
		s.out = append(s.out, text...)
		s.out = append(s.out, '\r', '\n')
		return
	}
	s.bulk(text)
}
