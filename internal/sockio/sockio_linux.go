package sockio

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

const supported = true

// rawRead is one read(2) of the socket once it is readable; 0 bytes is io.EOF.
func rawRead(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var cause error
	err := rc.Read(func(fd uintptr) bool {
		for {
			m, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch errno {
			case 0:
				n = int(m)
				if n == 0 {
					cause = io.EOF
				}
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // park in the poller until readable
			default:
				cause = os.NewSyscallError("read", errno)
				return true
			}
		}
	})
	if cause != nil {
		return n, cause
	}
	return n, err
}

// rawWrite writes all of p, parking in the poller whenever the socket's send
// buffer is full.
func rawWrite(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var cause error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
			switch errno {
			case 0:
				n += int(m)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // park in the poller until writable
			default:
				cause = os.NewSyscallError("write", errno)
				return true
			}
		}
		return true
	})
	if cause != nil {
		return n, cause
	}
	return n, err
}
