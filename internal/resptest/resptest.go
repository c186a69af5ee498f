// Package resptest reads raw RESP2 and RESP3 replies for tests that compare
// bytes, so a status reply and a bulk string can never be confused.
package resptest

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
)

// ReadReply reads one complete reply, nested aggregates included, and returns
// its exact bytes.
func ReadReply(br *bufio.Reader) (string, error) {
	var out []byte
	err := read(br, &out)
	return string(out), err
}

func read(br *bufio.Reader, out *[]byte) error {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return err
	}
	*out = append(*out, line...)
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return fmt.Errorf("bad reply line %q", line)
	}
	body := string(line[1 : len(line)-2])
	switch line[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return nil
	case '$', '=', '!':
		n, err := strconv.Atoi(body)
		if err != nil {
			return fmt.Errorf("bad length %q", line)
		}
		if n < 0 {
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		*out = append(*out, buf...)
		return nil
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(body)
		if err != nil {
			return fmt.Errorf("bad length %q", line)
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range max(n, 0) {
			if err := read(br, out); err != nil {
				return err
			}
		}
		if line[0] == '|' { // an attribute precedes the real reply
			return read(br, out)
		}
		return nil
	}
	return fmt.Errorf("unknown reply type %q", line)
}
