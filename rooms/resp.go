package rooms

import (
	"errors"
	"strconv"
)

// value is a parsed RESP2 reply: a bulk or status (str), an integer, nil, an
// error, or an array.
type value struct {
	kind  byte // '$', '+', ':', '-', '*', or 0 for nil
	str   []byte
	num   int64
	items []value
}

var errBadReply = errors.New("rooms: malformed upstream reply")

// parse reads one RESP2 reply from raw (the upstream speaks RESP2 to the
// room manager).
func parse(raw []byte) (value, error) {
	v, rest, err := parseOne(raw)
	if err == nil && len(rest) != 0 {
		err = errBadReply
	}
	return v, err
}

func parseOne(b []byte) (value, []byte, error) {
	line, rest, ok := cutLine(b)
	if !ok || len(line) == 0 {
		return value{}, nil, errBadReply
	}
	switch line[0] {
	case '+', '-':
		return value{kind: line[0], str: line[1:]}, rest, nil
	case ':':
		n, err := strconv.ParseInt(string(line[1:]), 10, 64)
		return value{kind: ':', num: n}, rest, err
	case '$':
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil {
			return value{}, nil, errBadReply
		}
		if n < 0 {
			return value{}, rest, nil
		}
		if len(rest) < n+2 {
			return value{}, nil, errBadReply
		}
		return value{kind: '$', str: rest[:n]}, rest[n+2:], nil
	case '*':
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil {
			return value{}, nil, errBadReply
		}
		if n < 0 {
			return value{}, rest, nil
		}
		v := value{kind: '*', items: make([]value, 0, n)}
		for range n {
			var item value
			item, rest, err = parseOne(rest)
			if err != nil {
				return value{}, nil, err
			}
			v.items = append(v.items, item)
		}
		return v, rest, nil
	}
	return value{}, nil, errBadReply
}

func cutLine(b []byte) (line, rest []byte, ok bool) {
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\r' && b[i+1] == '\n' {
			return b[:i], b[i+2:], true
		}
	}
	return nil, nil, false
}
