//go:build !linux

package proxy

import (
	"net"
	"sync/atomic"
	"syscall"
)

// rawReader: session.serveRaw is Linux only (it needs TCP_INQ).
type rawReader struct{ calls atomic.Int64 }

func enableRaw(net.Conn) syscall.RawConn { return nil }

func (g *frameGuard) readRaw(int) (bool, error) { panic("serveRaw is Linux only") }
