package gateway

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// maxBatchBytes bounds the bytes a batch collects before they are written;
// a larger batch goes out in writes of about this size.
const maxBatchBytes = 64 << 10

// batchBufs holds the buffers of batches being written (*[]byte), so that a
// connection holds one only while its writer writes.
var batchBufs sync.Pool

// batchConn is a client's socket as gorilla/websocket writes to it. gorilla
// writes (and sets the write deadline of) every frame on its own, one write
// system call per message; between hold and release, the connection's
// writer collects the frames of a batch instead and writes them with one
// write at release, under the last write deadline set meanwhile. At all
// other times writes and deadlines pass straight through. An idle
// connection holds no buffer.
type batchConn struct {
	net.Conn

	mu sync.Mutex // held across socket writes from the buffer
	// Guarded by mu.
	buf      *[]byte   // from batchBufs, while holding
	deadline time.Time // the write deadline set while holding
	holding  bool
}

// hold makes writes collect until release.
func (b *batchConn) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// release writes what was collected since hold and lets writes through
// again; it returns the buffer to the pool.
func (b *batchConn) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = false
	err := b.flushLocked()
	if b.buf != nil {
		if cap(*b.buf) <= 2*maxBatchBytes {
			*b.buf = (*b.buf)[:0]
			batchBufs.Put(b.buf)
		}
		b.buf = nil
	}
	return err
}

func (b *batchConn) flushLocked() error {
	if b.buf == nil || len(*b.buf) == 0 {
		return nil
	}
	p := *b.buf
	*b.buf = p[:0]
	if err := b.Conn.SetWriteDeadline(b.deadline); err != nil {
		return err
	}
	_, err := b.Conn.Write(p)
	return err
}

// Write collects p while holding, else writes it.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.holding {
		return b.Conn.Write(p)
	}
	if b.buf == nil {
		if b.buf, _ = batchBufs.Get().(*[]byte); b.buf == nil {
			buf := make([]byte, 0, 4096)
			b.buf = &buf
		}
	}
	if len(*b.buf)+len(p) > maxBatchBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

// SetWriteDeadline sets the deadline of the collected write while holding,
// else the socket's.
func (b *batchConn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.holding {
		b.deadline = t
		return nil
	}
	return b.Conn.SetWriteDeadline(t)
}

// batchHijacker is a ResponseWriter whose Hijack hands out the connection
// as a *batchConn, for the upgrader.
type batchHijacker struct {
	http.ResponseWriter
}

// Hijack hijacks the underlying ResponseWriter's connection.
func (h batchHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errNotHijacker
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &batchConn{Conn: c}, brw, nil
}

// SyscallConn exposes the wrapped socket's file descriptor, so the poller
// can watch a batched connection as it watches any other (see poll_linux.go).
func (b *batchConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := b.Conn.(syscall.Conn)
	if !ok {
		return nil, errNoFD
	}
	return sc.SyscallConn()
}
