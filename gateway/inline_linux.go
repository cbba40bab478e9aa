package gateway

import (
	"encoding/binary"
	"errors"
	"syscall"
)

// maxInlineFrame bounds the frames written inline (see Conn.sendLocked):
// header and message are built on the caller's stack, so larger messages go
// through the writer goroutine and gorilla.
const maxInlineFrame = 2048

// socketFD returns c's file descriptor, or -1 when its socket has none.
func socketFD(c *Conn) int32 {
	rc, ok := rawFD(c)
	if !ok {
		return -1
	}
	fd := int32(-1)
	if err := rc.Control(func(v uintptr) { fd = int32(v) }); err != nil {
		return -1
	}
	return fd
}

// writeTextFrame writes msg as one unmasked, final text frame (what gorilla
// writes for a server's TextMessage without compression) to the
// non-blocking socket fd with one write system call, without waiting. It
// returns the bytes of the frame written and the frame itself, which is
// buf's and lives on the caller's stack; n < len(frame) with a nil error
// means the socket's buffer is full.
func writeTextFrame(fd int, msg []byte, buf *[maxInlineFrame]byte) (n int, frame []byte, err error) {
	frame = appendTextFrameHeader(buf[:0], len(msg))
	frame = append(frame, msg...)
	for {
		n, err = syscall.Write(fd, frame)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EAGAIN) {
		return 0, frame, nil
	}
	if err != nil {
		return 0, frame, err
	}
	return n, frame, nil
}

// appendTextFrameHeader appends the header of a final, unmasked text frame
// of n payload bytes (RFC 6455 section 5.2).
func appendTextFrameHeader(dst []byte, n int) []byte {
	const finText = 0x81
	switch {
	case n < 126:
		return append(dst, finText, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, finText, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, finText, 127), uint64(n))
	}
}
