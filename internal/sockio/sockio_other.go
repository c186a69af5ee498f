//go:build !linux

package sockio

import (
	"io"
	"syscall"
)

// Off Linux, Wrap returns connections unchanged.
const supported = false

func rawRead(syscall.RawConn, []byte) (int, error)  { return 0, io.ErrUnexpectedEOF }
func rawWrite(syscall.RawConn, []byte) (int, error) { return 0, io.ErrUnexpectedEOF }
