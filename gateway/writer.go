package gateway

import (
	"net"
	"sync"
	"time"

	"github.com/piped-dev/piped/internal/wsframe"
)

// The writer: every byte a connection writes — data frames, pings, pongs,
// the close frame, and the rest of a frame the socket took only part of —
// is written by whoever holds the writer's role, out.writing, in the order
// it was queued. The role is taken under mu:
//
//   - inline, by the caller itself, when no writer runs and the frame is
//     small: one non-blocking write of one frame, under mu, with no
//     goroutine (the fast path: most messages, every ping and pong of an
//     idle connection). What the socket does not take becomes tail, and a
//     writer goroutine takes the role to write it first;
//   - else by a writer goroutine (writeLoop), which runs while something is
//     queued: each turn takes everything queued, in order, and writes it
//     with as few system calls as it can, under ws.write_timeout.
//
// The writer's phases:
//
//	open     closing == nil: data, pings, pongs may be queued
//	closing  closing != nil: no more data is taken; pongs for pings read
//	         meanwhile still go, before the close frame
//	closed   closeTaken: the close frame is written or being written;
//	         nothing is written after it
//
// Once the close frame is out the socket is cut when the client's close was
// read already (the handshake is done), or at once for a failed connection
// (cutAfterClose), else after closeGrace unless the client answers first.
type writeState struct {
	queue   [][]byte // data messages, each one text frame
	queued  int      // bytes in queue (and in tail)
	tail    []byte   // the unwritten end of frames written inline: written first
	tailEnd bool     // tail ends with the close frame
	pong    []byte   // the payload of the pong due (pongDue)
	pongDue bool
	pingDue bool
	writing bool // the role is taken: a writer goroutine runs (or nothing may be written any more)

	closing       *Disconnect // set once: no more data; the close frame follows what is queued (or at once)
	closePayload  []byte      // the close frame's payload, set with closing
	cutAfterClose bool        // cut the socket as soon as the close frame is out
	closeTaken    bool        // the close frame is being written: nothing more is taken
	closeSent     bool        // the close frame is out
	peerClosed    bool        // the client's close frame was read
}

// end drops everything queued once the connection has ended (finish): with
// closing and closeTaken set nothing is queued or written any more.
func (w *writeState) end(d Disconnect) {
	if w.closing == nil {
		w.closing = &d
	}
	w.closeTaken = true
	w.queue, w.queued, w.tail, w.pong, w.pongDue, w.pingDue = nil, 0, nil, nil, false, false
}

// maxInlineFrame bounds the frames written inline: they are built on the
// caller's stack. Larger ones go through the writer goroutine.
const maxInlineFrame = 2048

// maxBatchBytes bounds the bytes one write of the writer goroutine
// collects; a message larger than largeMessage is written from its own
// memory with the frames before it (writev), not copied.
const (
	maxBatchBytes = 64 << 10
	largeMessage  = 16 << 10
)

// batchBufs holds the writer goroutines' buffers (*[]byte): a connection
// holds one only while its writer writes.
var batchBufs sync.Pool

// Send queues msg for the client and reports whether it was accepted. It
// never blocks. When the queue would exceed ws.send_queue_bytes the client is
// closed with 4008 (slow_client): it cannot keep up, and holding more for it
// would let one client grow the node's memory without bound. msg must not
// be modified afterwards.
func (c *Conn) Send(msg []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(msg)
}

func (c *Conn) sendLocked(msg []byte) bool {
	w := &c.out
	if w.closing != nil {
		return false
	}
	if c.canInlineLocked(len(msg)) {
		c.writeInlineLocked(wsframe.OpText, msg)
		return true
	}
	if w.queued+len(msg) > c.cfg.sendQueueBytes && w.queued > 0 {
		c.closeLocked(DisconnectSlow, false)
		return false
	}
	w.queue = append(w.queue, msg)
	w.queued += len(msg)
	c.startWriterLocked()
	return true
}

// pongLocked answers the client's ping with a pong carrying its payload,
// unless our close frame is already on its way.
func (c *Conn) pongLocked(payload []byte) {
	w := &c.out
	if w.closeTaken {
		return
	}
	if c.canInlineLocked(len(payload)) {
		c.writeInlineLocked(wsframe.OpPong, payload)
		return
	}
	// One pong answers every ping read since the last (RFC 6455 5.5.3).
	w.pong = append(w.pong[:0], payload...)
	w.pongDue = true
	c.startWriterLocked()
}

// pingLocked sends a ping (the connection is open).
func (c *Conn) pingLocked() {
	if c.canInlineLocked(0) {
		c.writeInlineLocked(wsframe.OpPing, nil)
		return
	}
	c.out.pingDue = true
	c.startWriterLocked()
}

// closeLocked closes the connection with d: after what is queued when
// flush, else at once (the queue is dropped).
func (c *Conn) closeLocked(d Disconnect, flush bool) {
	c.beginCloseLocked(d, d.Code, d.Reason, flush, false)
}

// beginCloseLocked records d as the first close reason and has the writer
// send a close frame with code and text ("" and wsframe.CloseNoStatus: no
// payload) after what is queued (flush) or at once; cutAfter cuts the
// socket once it is out instead of waiting for the client's close. A later
// call does nothing: the first reason stays.
func (c *Conn) beginCloseLocked(d Disconnect, code int, text string, flush, cutAfter bool) {
	w := &c.out
	if w.closing != nil {
		return
	}
	w.closing = &d
	w.closePayload = wsframe.AppendClosePayload(nil, code, text)
	w.cutAfterClose = cutAfter
	if !flush {
		w.queue, w.queued = nil, 0
	}
	if c.canInlineLocked(len(w.closePayload)) {
		w.closeTaken = true
		c.writeInlineLocked(wsframe.OpClose, w.closePayload)
		return
	}
	c.startWriterLocked()
}

// canInlineLocked reports whether a frame of n payload bytes may be written
// inline: no writer holds the role (so nothing is queued before it), the
// socket has a descriptor and the frame fits on the stack.
func (c *Conn) canInlineLocked(n int) bool {
	return !c.out.writing && c.fd >= 0 && n+wsframe.MaxServerHeader <= maxInlineFrame
}

// writeInlineLocked writes one frame from the caller with one non-blocking
// write (see canInlineLocked). What the socket does not take at once becomes
// tail, which a writer goroutine writes before anything else.
func (c *Conn) writeInlineLocked(op byte, payload []byte) {
	w := &c.out
	var buf [maxInlineFrame]byte
	frame := wsframe.AppendFrame(buf[:0], op, payload)
	n, err := writeNonBlocking(int(c.fd), frame)
	if err != nil {
		c.writeFailedLocked()
		return
	}
	if n < len(frame) {
		w.tail = append([]byte(nil), frame[n:]...)
		w.tailEnd = op == wsframe.OpClose
		w.queued += len(w.tail)
		c.startWriterLocked()
		return
	}
	if op == wsframe.OpClose {
		c.closeWrittenLocked()
	}
}

func (c *Conn) startWriterLocked() {
	if !c.out.writing {
		c.out.writing = true
		go c.writeLoop()
	}
}

// turn is what one turn of the writer goroutine writes, in this order.
type turn struct {
	tail     []byte
	tailEnd  bool // tail ends with the close frame
	pong     []byte
	pongDue  bool
	ping     bool
	batch    [][]byte
	close    []byte // the close frame's payload (closeDue)
	closeDue bool
}

// takeLocked moves everything due into a turn; batch is the previous
// turn's emptied slice, for reuse.
func (c *Conn) takeLocked(batch [][]byte) turn {
	w := &c.out
	t := turn{tail: w.tail, tailEnd: w.tailEnd, pong: w.pong, pongDue: w.pongDue, ping: w.pingDue, batch: w.queue}
	w.tail, w.tailEnd, w.pongDue, w.pingDue = nil, false, false, false
	if t.pongDue {
		w.pong = nil // the turn owns it now
	}
	w.queue, w.queued = batch[:0], 0
	if w.closing != nil && !w.closeTaken {
		w.closeTaken = true
		t.close, t.closeDue = w.closePayload, true
	}
	return t
}

func (t *turn) empty() bool {
	return t.tail == nil && !t.pongDue && !t.ping && len(t.batch) == 0 && !t.closeDue
}

// writeLoop is the writer goroutine: it writes everything queued, turn by
// turn, then gives the role up and exits; after the close frame it keeps
// the role, so nothing is written after it.
func (c *Conn) writeLoop() {
	var batch [][]byte
	for {
		c.mu.Lock()
		t := c.takeLocked(batch)
		if t.empty() {
			c.out.writing = false
			if cap(c.out.queue) > 64 {
				c.out.queue = nil // let a burst's backing array go
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		if err := c.writeTurn(&t); err != nil {
			c.mu.Lock()
			c.writeFailedLocked()
			c.mu.Unlock()
			return
		}
		if t.closeDue || t.tailEnd {
			c.mu.Lock()
			c.closeWrittenLocked()
			c.mu.Unlock()
			return
		}
		clear(t.batch)
		batch = t.batch
	}
}

// writeTurn writes t's frames, collected in a pooled buffer and written
// with one system call per maxBatchBytes; a large message goes out from its
// own memory together with what precedes it.
func (c *Conn) writeTurn(t *turn) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.cfg.writeTimeout)); err != nil {
		return err
	}
	bp, _ := batchBufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 4096)
		bp = &b
	}
	buf := append((*bp)[:0], t.tail...)
	if t.pongDue {
		buf = wsframe.AppendFrame(buf, wsframe.OpPong, t.pong)
	}
	if t.ping {
		buf = wsframe.AppendFrame(buf, wsframe.OpPing, nil)
	}
	var err error
	for _, m := range t.batch {
		if len(m) > largeMessage {
			bufs := net.Buffers{buf, wsframe.AppendHeader(nil, wsframe.OpText, len(m)), m}
			if _, err = bufs.WriteTo(c.nc); err != nil {
				break
			}
			buf = buf[:0]
			continue
		}
		if len(buf)+len(m)+wsframe.MaxServerHeader > maxBatchBytes && len(buf) > 0 {
			if _, err = c.nc.Write(buf); err != nil {
				break
			}
			buf = buf[:0]
		}
		buf = wsframe.AppendFrame(buf, wsframe.OpText, m)
	}
	if err == nil && t.closeDue {
		buf = wsframe.AppendFrame(buf, wsframe.OpClose, t.close)
	}
	if err == nil && len(buf) > 0 {
		_, err = c.nc.Write(buf)
	}
	if cap(buf) <= 2*maxBatchBytes {
		*bp = buf[:0]
		batchBufs.Put(bp)
	}
	return err
}

// closeWrittenLocked follows the close frame out: the handshake is done
// when the client's close was read, and a failed connection is not waited
// for, so the socket is cut; else the client has closeGrace to answer.
func (c *Conn) closeWrittenLocked() {
	w := &c.out
	w.closeSent = true
	if w.peerClosed || w.cutAfterClose {
		c.cut()
		return
	}
	if c.grace == nil && !c.ended {
		c.grace = time.AfterFunc(closeGrace, c.cut)
	}
}

// writeFailedLocked gives up on a client whose socket does not take
// writes: nothing more is written (the role stays taken), and the socket
// is cut, which ends the reader.
func (c *Conn) writeFailedLocked() {
	w := &c.out
	if w.closing == nil {
		d := DisconnectWriteFailed
		w.closing = &d
	}
	w.writing, w.closeTaken = true, true
	w.queue, w.queued, w.tail, w.pong, w.pongDue, w.pingDue = nil, 0, nil, nil, false, false
	c.cut()
}
