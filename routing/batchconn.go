package routing

import (
	"net"
	"sync"
	"sync/atomic"
)

// maxBurstBytes bounds the bytes a burst collects before they are written:
// a burst of large calls writes every maxBurstBytes, and a write at least
// this large passes straight through.
const maxBurstBytes = 64 << 10

// batchConn is the socket of the publishing connection. amqp091 flushes
// after every Publish, one write system call per call; while the
// publisher's writer holds the socket (hold, then release), writes are
// collected instead and go out together with one write at release. At all
// other times writes pass straight through, so heartbeats and the other
// frames of the connection wait at most for the burst under way.
//
// The byte stream is the library's, in its order: it writes under its own
// send lock, and collected bytes are written before any that come after
// them. Deadlines pass through to the socket (the session's CloseDeadline
// ends a write stuck on a broker that stopped reading). A failed write is
// sticky and closes the socket: the library, which counted the collected
// bytes as written, sees its connection end.
type batchConn struct {
	net.Conn // set by the dialer, before the library uses it

	holding atomic.Bool // between hold and release; set by the publisher's writer only

	mu sync.Mutex // held across socket writes
	// Guarded by mu.
	buf []byte // collected while holding; empty otherwise
	err error  // the first failed write
}

// hold makes writes collect until release. It never blocks.
func (b *batchConn) hold() { b.holding.Store(true) }

// release writes what was collected since hold, in one write, and lets
// writes through again. It blocks while the socket does not take the bytes
// (see publisher.stalled) and returns the write's error.
func (b *batchConn) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding.Store(false)
	return b.flushLocked()
}

// Write collects p while held, else writes it (after what was collected).
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.holding.Load() {
		if len(b.buf)+len(p) > maxBurstBytes {
			if err := b.flushLocked(); err != nil {
				return 0, err
			}
		}
		if len(p) < maxBurstBytes {
			b.buf = append(b.buf, p...)
			return len(p), nil
		}
	}
	return b.writeLocked(p)
}

func (b *batchConn) flushLocked() error {
	if b.err != nil || len(b.buf) == 0 {
		return b.err
	}
	_, err := b.writeLocked(b.buf)
	b.buf = b.buf[:0]
	return err
}

func (b *batchConn) writeLocked(p []byte) (int, error) {
	n, err := b.Conn.Write(p)
	if err != nil {
		b.err = err
		b.buf = nil
		_ = b.Conn.Close() // the stream lost bytes: end it for the library too
	}
	return n, err
}
