package gateway

import (
	"errors"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/piped-dev/piped/internal/wsframe"
	"github.com/piped-dev/piped/protocol"
)

// readBufferSize is the buffer a reader reads the socket into, borrowed
// from a pool for one readiness event: it takes a typical call (under 500
// bytes) many times over, and every control frame. A connection keeps one
// only while a frame has partly arrived (then at most the frame's size:
// ws.max_message_bytes plus its header); an idle one holds none.
const readBufferSize = 4096

// readBufs holds the readers' buffers (*[]byte of capacity readBufferSize).
var readBufs sync.Pool

// errWouldBlock: the non-blocking socket has nothing to read now.
var errWouldBlock = errors.New("gateway: would block")

// frameReader is the read side's state between reads, owned by the reader.
type frameReader struct {
	// pending holds the start of a frame that has partly arrived; nil when
	// none. Its capacity is readBufferSize (pooled) or the frame's size.
	pending []byte
	// msg holds the fragments of a data message so far; msgOp is its
	// opcode, 0 when no fragmented message is under way.
	msg   []byte
	msgOp byte
	// discard: the client's close frame was read, or the connection failed;
	// what follows is read and dropped until the socket ends.
	discard bool
}

// release returns the reader's buffers when the connection ends.
func (r *frameReader) release() {
	putReadBuffer(r.pending)
	r.pending, r.msg = nil, nil
}

func getReadBuffer() []byte {
	if bp, ok := readBufs.Get().(*[]byte); ok {
		return (*bp)[:0]
	}
	return make([]byte, 0, readBufferSize)
}

func putReadBuffer(b []byte) {
	if cap(b) == readBufferSize {
		b = b[:0]
		readBufs.Put(&b)
	}
}

// readReady is the reader of a polled connection, started by the poller
// when the socket is readable: it reads and handles every frame that has
// arrived, control frames included, then re-arms the poller and returns.
// A frame that has partly arrived waits in rd.pending, not in a goroutine.
func (c *Conn) readReady() {
	for {
		drained, d, ok := c.readSome(c.readFD)
		if !ok {
			c.finish(d)
			return
		}
		if drained {
			if err := c.cfg.poll.arm(c); err != nil {
				c.finish(DisconnectGone)
			}
			return // the poller starts the next reader
		}
	}
}

// readLoop is the reader of a connection the poller does not watch: a
// goroutine for the connection's life, blocked in Read while idle.
func (c *Conn) readLoop() {
	for {
		if _, d, ok := c.readSome(c.nc.Read); !ok {
			c.finish(d)
			return
		}
	}
}

// readSome reads once with read and handles every whole frame read. It
// reports whether the socket is drained (a read that did not fill the
// buffer, or would block), and false with the reason when the connection
// has ended.
func (c *Conn) readSome(read func([]byte) (int, error)) (drained bool, d Disconnect, ok bool) {
	r := &c.rd
	buf := r.pending
	if buf == nil {
		buf = getReadBuffer()
	}
	n, err := read(buf[len(buf):cap(buf)])
	if n <= 0 {
		if r.pending == nil {
			putReadBuffer(buf) // borrowed for nothing; a partial frame stays pending
		}
		if errors.Is(err, errWouldBlock) {
			return true, Disconnect{}, true
		}
		return false, DisconnectGone, false
	}
	c.lastRead.Store(int64(sinceEpoch()))
	filled := len(buf)+n == cap(buf)
	buf = buf[:len(buf)+n]
	if r.discard {
		r.keep(buf, len(buf), 0)
		return !filled, Disconnect{}, true
	}
	off, need, d, ok := c.frames(buf)
	if !ok {
		r.keep(buf, len(buf), 0)
		return false, d, false
	}
	r.keep(buf, off, need)
	return !filled, Disconnect{}, true
}

// keep carries buf[off:] over to the next read, in a buffer that takes a
// frame of need bytes; an empty rest gives the buffer back.
func (r *frameReader) keep(buf []byte, off, need int) {
	rest := len(buf) - off
	switch {
	case rest == 0 || r.discard:
		putReadBuffer(buf)
		r.pending = nil
	case need > cap(buf):
		p := make([]byte, rest, need)
		copy(p, buf[off:])
		putReadBuffer(buf)
		r.pending = p
	default:
		r.pending = buf[:copy(buf, buf[off:])]
	}
}

// frames handles the whole frames at the start of buf and returns where
// the first incomplete one starts and, when its header is read, its whole
// size; false: the connection ended (the client answered our close).
func (c *Conn) frames(buf []byte) (off, need int, d Disconnect, ok bool) {
	r := &c.rd
	for !r.discard {
		h, hn, err := wsframe.ParseHeader(buf[off:])
		if err != nil {
			c.fail(err)
			break
		}
		if hn == 0 {
			return off, 0, Disconnect{}, true
		}
		if !h.IsControl() && int64(len(r.msg))+h.Length > c.cfg.maxMessage {
			c.fail(&wsframe.Error{Code: DisconnectTooBig.Code, Reason: "message over ws.max_message_bytes"})
			break
		}
		end := int64(off+hn) + h.Length
		if end > int64(len(buf)) {
			return off, int(end - int64(off)), Disconnect{}, true
		}
		p := buf[off+hn : end]
		wsframe.Unmask(p, h.Mask, 0)
		off = int(end)
		if d, ok := c.onFrame(h, p); !ok {
			return off, 0, d, false
		}
	}
	return len(buf), 0, Disconnect{}, true
}

// onFrame handles one frame; p is reused after it returns. Every frame
// draws from the connection's frame budget first.
func (c *Conn) onFrame(h wsframe.Header, p []byte) (Disconnect, bool) {
	r := &c.rd
	ok, over := true, false
	if c.budget.rate > 0 { // no clock read when the budget is off
		ok, over = c.budget.take(time.Now())
	}
	if over {
		c.fail(&wsframe.Error{Code: DisconnectRateLimited.Code, Reason: "frame rate limit exceeded (ws.frame_rate); frames refused and still sent"})
		return Disconnect{}, true
	}
	if !ok && !h.IsControl() {
		c.overBudget = true // the message this frame belongs to is refused
	}
	switch h.Op {
	case wsframe.OpPing:
		c.mu.Lock()
		c.pongLocked(p)
		c.mu.Unlock()
	case wsframe.OpPong:
		// Liveness only: lastRead is set by every read.
	case wsframe.OpClose:
		return c.onClose(p)
	case wsframe.OpText, wsframe.OpBinary:
		if r.msgOp != 0 {
			c.fail(&wsframe.Error{Code: DisconnectProtocol.Code, Reason: "a new message began before the last one's final fragment"})
			break
		}
		if h.Fin {
			c.message(h.Op, p)
			break
		}
		r.msgOp = h.Op
		r.msg = append(r.msg[:0], p...)
	case wsframe.OpContinuation:
		if r.msgOp == 0 {
			c.fail(&wsframe.Error{Code: DisconnectProtocol.Code, Reason: "continuation frame without a message"})
			break
		}
		r.msg = append(r.msg, p...)
		if h.Fin {
			c.message(r.msgOp, r.msg)
			r.msgOp, r.msg = 0, nil
		}
	}
	return Disconnect{}, true
}

// onClose handles the client's close frame: an invalid one fails the
// connection; else it is answered with the same code after what is queued,
// or, when our close frame is out already, the handshake is done and the
// connection ends (false).
func (c *Conn) onClose(p []byte) (Disconnect, bool) {
	code, _, err := wsframe.ParseClose(p)
	if err != nil {
		c.fail(err)
		return Disconnect{}, true
	}
	c.rd.discard = true // nothing may follow a close frame
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out.peerClosed = true
	if c.out.closeSent {
		return *c.out.closing, false
	}
	c.beginCloseLocked(DisconnectNormal, code, "", true, false)
	return Disconnect{}, true
}

// fail fails the connection for a protocol violation (RFC 6455 7.1.7): the
// close frame with err's code (1002, 1007 or 1009) and reason goes out at
// once, then the socket is cut; what the client sends meanwhile is dropped.
func (c *Conn) fail(err error) {
	var fe *wsframe.Error
	if !errors.As(err, &fe) {
		fe = &wsframe.Error{Code: DisconnectProtocol.Code, Reason: err.Error()}
	}
	d := DisconnectProtocol
	switch fe.Code {
	case DisconnectTooBig.Code:
		d = DisconnectTooBig
	case DisconnectBadData.Code:
		d = DisconnectBadData
	case DisconnectRateLimited.Code:
		d = DisconnectRateLimited
	}
	c.rd.discard = true
	c.mu.Lock()
	c.beginCloseLocked(d, fe.Code, fe.Reason, false, true)
	c.mu.Unlock()
}

// message handles one whole data message; p is reused after it returns.
// A text message must be valid UTF-8 (RFC 6455 8.1), else the connection
// fails with 1007.
func (c *Conn) message(op byte, p []byte) {
	if op == wsframe.OpText && !utf8.Valid(p) {
		c.fail(&wsframe.Error{Code: DisconnectBadData.Code, Reason: "text message is not valid UTF-8"})
		return
	}
	c.ensureContext()
	if c.overBudget {
		c.overBudget = false
		c.refuseOverBudget(c.ctx, op, p)
		return
	}
	if op == wsframe.OpText {
		c.handleFrame(c.ctx, p)
		return
	}
	c.reject(c.ctx, nil, protocol.CodeBadRequest, "binary frames are not supported; send JSON text frames")
}
