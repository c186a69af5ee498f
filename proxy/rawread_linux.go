package proxy

import (
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawReader is the receive side of session.serveRaw on Linux: recvmsg with
// TCP_INQ, so that each read also tells how much is left in the socket.
//
// Parking right after a read that returned less than there was room for is
// not enough: a FIN that came with the last data (or just before the read)
// is reported by the next read only, and Go's poller will not wake the
// session for it again. TCP_INQ's hint is the bytes still queued, or 1 once a
// FIN has arrived ("continue reading"), so the session reads again exactly
// when there is something to read, and never just to get EAGAIN.
type rawReader struct {
	msg   unix.Msghdr
	iov   unix.Iovec
	oob   [64]byte
	calls atomic.Int64 // recvmsg calls, for tests
}

// enableRaw turns TCP_INQ on for nc; serveRaw is used only where it works.
func enableRaw(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_INQ, 1)
	}); err != nil || serr != nil {
		return nil
	}
	return rc
}

// readRaw is fill for serveRaw: one non-blocking read of the socket's
// descriptor (EAGAIN when nothing is there). more reports that the socket
// still holds bytes or an end of stream, so the caller must read again
// before it parks.
func (g *frameGuard) readRaw(fd int) (more bool, err error) {
	if err := g.makeRoom(); err != nil {
		return false, err
	}
	r := &g.raw
	room := g.buf[g.w:]
	r.iov.Base = &room[0]
	r.iov.SetLen(len(room))
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	r.msg.Control = &r.oob[0]
	r.msg.SetControllen(len(r.oob))
	var n uintptr
	var errno syscall.Errno
	r.calls.Add(1)
	// RawSyscall: the socket is non-blocking, and syscall.Syscall's runtime
	// bookkeeping costs more than the call (see internal/sockio).
	for {
		n, _, errno = syscall.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.msg)), 0)
		if errno != syscall.EINTR {
			break
		}
	}
	if errno != 0 {
		return false, errno
	}
	if n == 0 {
		return false, io.EOF
	}
	g.w += int(n)
	return int(n) == len(room) || r.inq() > 0, nil
}

// inq is TCP_CM_INQ from the last recvmsg's control data; 1 if it is
// missing, so that the caller reads again rather than park on a guess.
func (r *rawReader) inq() int {
	const hdr = unix.SizeofCmsghdr
	oob := r.oob[:r.msg.Controllen]
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < hdr || int(h.Len) > len(oob) {
			break
		}
		if h.Level == unix.IPPROTO_TCP && h.Type == unix.TCP_CM_INQ && h.Len >= hdr+4 {
			return int(*(*int32)(unsafe.Pointer(&oob[hdr])))
		}
		oob = oob[cmsgAlign(int(h.Len)):]
	}
	return 1
}

func cmsgAlign(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}
