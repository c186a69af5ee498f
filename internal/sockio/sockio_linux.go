package sockio

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

const supported = true

// read is one read(2) of o.p once the socket is readable; 0 bytes is io.EOF.
// It is the RawConn Read callback: false parks in the poller.
func (o *op) read(fd uintptr) bool {
	for {
		m, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&o.p[0])), uintptr(len(o.p)))
		switch errno {
		case 0:
			o.n = int(m)
			if o.n == 0 {
				o.err = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // park in the poller until readable
		default:
			o.err = os.NewSyscallError("read", errno)
			return true
		}
	}
}

// write writes all of o.p, parking in the poller whenever the socket's send
// buffer is full. It is the RawConn Write callback.
func (o *op) write(fd uintptr) bool {
	for o.n < len(o.p) {
		m, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&o.p[o.n])), uintptr(len(o.p)-o.n))
		switch errno {
		case 0:
			o.n += int(m)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // park in the poller until writable
		default:
			o.err = os.NewSyscallError("write", errno)
			return true
		}
	}
	return true
}
