//go:build linux

package gateway

import (
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// socketFD returns nc's file descriptor, or -1 when it has none.
func socketFD(nc net.Conn) int32 {
	rc, ok := rawConn(nc)
	if !ok {
		return -1
	}
	fd := int32(-1)
	if err := rc.Control(func(v uintptr) { fd = int32(v) }); err != nil {
		return -1
	}
	return fd
}

// writeNonBlocking writes frame to the non-blocking socket fd with one
// system call, without waiting: n < len(frame) with a nil error means the
// socket's buffer is full.
func writeNonBlocking(fd int, frame []byte) (n int, err error) {
	for {
		n, err = unix.Write(fd, frame)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.EAGAIN) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// readFD reads c's non-blocking socket once (the poller's reader):
// errWouldBlock when nothing has arrived, io.EOF at its end.
func (c *Conn) readFD(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(c.fd), p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// shutdownSocket shuts nc down both ways, which wakes its reader with EOF;
// false when nc has no descriptor or is closed already.
func shutdownSocket(nc net.Conn) bool {
	rc, ok := rawConn(nc)
	if !ok {
		return false
	}
	return rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) }) == nil
}

func rawConn(nc net.Conn) (syscall.RawConn, bool) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}
