package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/route"
	"github.com/piped-dev/piped/telemetry"
)

// closeGrace is how long a connection waits for the client's close frame
// after sending its own, before the socket is cut.
const closeGrace = 2 * time.Second

// maxPooledReadBuffer caps the read buffers kept for reuse; larger frames get
// a buffer of their own that the GC takes back.
const maxPooledReadBuffer = 64 << 10

// Conn is one client WebSocket. At most two goroutines touch the socket:
// the reader and the writer. The writer runs only while something is
// queued and exits when the queue is empty. The reader, on Linux, too runs
// only while a frame is being read: the server's poller (epoll) starts it
// when the socket is readable, and it exits once gorilla holds nothing
// buffered, so an idle connection parks no goroutine (see readReady).
// Without a pollable socket the reader is a goroutine of its own for the
// connection's life (serve). Send and Answer never block: they queue,
// bounded by ws.send_queue_bytes.
type Conn struct {
	// Set at construction.
	ws      *websocket.Conn
	token   string    // the address: the path token, or the verified subject
	expires time.Time // when the verified token expires; zero: never
	id      string    // unique across nodes and restarts: "<node id>.<16 hex digits>"
	hub     *Hub
	router  Router
	cfg     *connConfig

	// fd is the socket's descriptor, -1 when it has none (then every
	// message goes through the writer and the connection keeps a read
	// goroutine). Written once by start, under mu, before the poller
	// registers the connection; the poller reads it without mu, writers
	// (sendLocked) under mu.
	fd int32

	// Set when the poller registers the connection (pollable only).
	br     *bufio.Reader // gorilla's, for Buffered
	run    *pollRun
	pollID uint64
	// armed hands the reader's role over: set by the reader before it
	// re-arms epoll, swapped back by the poller before it starts the next.
	armed atomic.Bool
	// lastRead is when the client last sent anything (a frame or a pong),
	// in nanoseconds since connEpoch: the ping timer closes an idle
	// client after ws.pong_timeout, as no read deadline fires without a
	// parked reader.
	lastRead atomic.Int64

	// Owned by the read loop (one reader at a time, handed over by armed).
	bucket       tokenBucket   // ws.rate_per_second
	routeBuckets []routeBucket // one per route with a rate that this connection called, lazily
	// ctx is every call's context, done when the connection ends; made by
	// the first frame, so an idle connection holds none.
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// Guarded by mu.
	queue      [][]byte
	queued     int         // bytes in queue (and in tail)
	tail       []byte      // the unwritten end of a frame written inline: the writer writes it first
	pong       []byte      // non-nil: the writer answers the client's ping with this
	writing    bool        // a writer goroutine runs
	pingDue    bool        // the writer sends a ping next
	peerClosed bool        // the client sent a close frame: nothing more is written inline
	closing    *Disconnect // set once: no more sends; the writer closes after flushing (or at once)
	closeText  string      // set with closing, never after: the close frame's text when not closing.Reason
	flushFirst bool        // closing waits for the queue to be written
	inflight   int         // calls with an id awaiting their answer
	draining   bool        // close with 1012 once inflight reaches zero
	// ping is armed by start and stopped by finish when the connection
	// ends; in between only its own callback re-arms it, and only while
	// closing is nil, so no ping timer outlives the connection.
	ping     *time.Timer
	nextPing time.Duration // since connEpoch: when the next ping is due
	// expiry, armed by start only when expires is set and stopped by
	// finish when the connection ends, closes the connection with 4003; it
	// never re-arms itself.
	expiry *time.Timer
	// grace, armed by writeClose, cuts the socket when the client does not
	// answer our close frame in time; stopped by finish.
	grace *time.Timer
}

// connEpoch is the origin of Conn's monotonic timestamps.
var connEpoch = time.Now()

func sinceEpoch() time.Duration { return time.Since(connEpoch) }

// connConfig is shared by every connection of a server.
type connConfig struct {
	nodeID         string
	maxMessage     int64
	pingInterval   time.Duration
	pongTimeout    time.Duration
	writeTimeout   time.Duration
	sendQueueBytes int
	limits         atomic.Pointer[Limits] // swapped on reload
	routes         Routes
	log            *slog.Logger
	metrics        *telemetry.Metrics
	tracing        *telemetry.Tracing // may be nil
	disconnect     Notifier           // nil: no $disconnect notices
	binder         TokenBinder        // nil: targeted events are off; else each Conn releases its token when it ends
	readBufs       sync.Pool          // *[]byte
	poll           *poller            // nil: every connection keeps a read goroutine
}

func newConn(ws *websocket.Conn, ident Identity, hub *Hub, router Router, cfg *connConfig) *Conn {
	c := &Conn{ws: ws, token: ident.Subject, expires: ident.Expires, id: cfg.newConnID(), hub: hub, router: router, cfg: cfg, fd: -1}
	c.bucket.setLimits(cfg.limits.Load())
	return c
}

// ID returns the connection's id, unique across nodes and restarts: the
// node id, a dot and 16 random hex digits.
func (c *Conn) ID() string { return c.id }

// Token returns the address the connection is registered under in the hub.
func (c *Conn) Token() string { return c.token }

// newConnID returns a fresh connection id for this node. math/rand/v2's
// generator is seeded from the OS per process, so ids differ across restarts.
func (cfg *connConfig) newConnID() string {
	var b [16]byte
	const digits = "0123456789abcdef"
	n := rand.Uint64()
	for i := range b {
		b[i] = digits[n>>(60-4*i)&0xf]
	}
	return cfg.nodeID + "." + string(b[:])
}

// Send queues msg for the client and reports whether it was accepted. It
// never blocks. When the queue would exceed ws.send_queue_bytes the client is
// closed with 4008 (slow_client): it cannot keep up, and holding more for it
// would let one client grow the node's memory without bound.
func (c *Conn) Send(msg []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(msg)
}

func (c *Conn) sendLocked(msg []byte) bool {
	if c.closing != nil {
		return false
	}
	if !c.writing && c.fd >= 0 && !c.peerClosed && len(msg)+maxFrameHeader <= maxInlineFrame {
		return c.writeInlineLocked(msg)
	}
	if c.queued+len(msg) > c.cfg.sendQueueBytes && c.queued > 0 {
		c.closeLocked(DisconnectSlow, false)
		return false
	}
	c.queue = append(c.queue, msg)
	c.queued += len(msg)
	c.startWriterLocked()
	return true
}

// maxFrameHeader is the longest header of a frame the server writes.
const maxFrameHeader = 10

// writeInlineLocked writes msg to the socket from the caller, with one
// non-blocking write, when no writer runs: most messages then cost one
// system call and no goroutine. What the socket does not take at once
// becomes tail, which a writer goroutine writes before anything else (under
// the write deadline, as any queued message). Only the writer and this
// write, under mu with no writer running, write data frames, so frames never
// interleave; pongs go through the writer (see start), and after the
// client's close frame nothing is written inline.
func (c *Conn) writeInlineLocked(msg []byte) bool {
	var buf [maxInlineFrame]byte
	n, frame, err := writeTextFrame(int(c.fd), msg, &buf)
	if err != nil {
		d := DisconnectWriteFailed
		c.closing = &d
		c.writing = true // no writer starts: nothing more is written
		c.queue, c.queued = nil, 0
		c.cut()
		return false
	}
	if n < len(frame) {
		c.tail = append([]byte(nil), frame[n:]...)
		c.queued += len(c.tail)
		c.startWriterLocked()
	}
	return true
}

// Answer delivers the answer to one of this connection's calls (see
// protocol.Answerer). It never blocks.
func (c *Conn) Answer(id, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(msg)
	if id != nil {
		c.inflight--
		if c.draining && c.inflight == 0 {
			c.closeLocked(DisconnectShutdown, true)
		}
	}
}

// Close closes the connection with d after writing what is already queued.
func (c *Conn) Close(d Disconnect) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(d, true)
}

// closeWithText is Close with text instead of d.Reason in the close frame
// (d.Reason stays the metric label and the reason logged). It reports
// false when the connection was closing already (its first reason stays).
func (c *Conn) closeWithText(d Disconnect, text string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing != nil {
		return false
	}
	c.closeText = text
	c.closeLocked(d, true)
	return true
}

// drain closes the connection with 1012 once it has no call in flight.
func (c *Conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	if c.inflight == 0 {
		c.closeLocked(DisconnectShutdown, true)
	}
}

// cut ends the socket at once, without a close frame: it shuts the socket
// down, which wakes the reader (parked, or through the poller) with EOF;
// the reader's finish then closes it.
func (c *Conn) cut() {
	if rc, ok := rawFD(c); ok {
		err := rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
		if err == nil {
			return
		}
	}
	_ = c.ws.NetConn().Close()
}

// closeLocked records the first close reason and lets the writer send the
// close frame: after the queue when flush, else at once (the queue is dropped).
func (c *Conn) closeLocked(d Disconnect, flush bool) {
	if c.closing != nil {
		return
	}
	c.closing = &d
	c.flushFirst = flush
	if !flush {
		c.queue, c.queued = nil, 0
	}
	c.startWriterLocked()
}

func (c *Conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
}

// writeLoop writes everything queued, in order, then exits; when the
// connection is closing it sends the close frame last. It is the only writer
// of data frames, pings and close frames.
func (c *Conn) writeLoop() {
	var batch [][]byte
	for {
		c.mu.Lock()
		closing := c.closing
		if closing != nil && !c.flushFirst {
			c.queue, c.queued = nil, 0
		}
		text := c.closeText
		ping := c.pingDue
		c.pingDue = false
		tail, pong := c.tail, c.pong // a tail is written even when the queue is dropped
		c.tail, c.pong = nil, nil
		batch, c.queue = c.queue, batch[:0]
		c.queued = 0
		if len(batch) == 0 && !ping && pong == nil && tail == nil && closing == nil {
			c.writing = false
			if cap(c.queue) > 64 {
				c.queue = nil // let a burst's backing array go
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		if err := c.writeBatch(frames{tail: tail, pong: pong, ping: ping, batch: batch}); err != nil {
			c.writeFailed()
			return
		}
		clear(batch)
		if closing != nil {
			// Nothing is queued after closing is set, so all is written.
			c.writeClose(*closing, text)
			return // c.writing stays true: nothing is written after a close
		}
	}
}

// frames is one turn of the writer, in the order it writes them.
type frames struct {
	tail  []byte // the rest of a frame written inline
	pong  []byte // nil: no pong due
	ping  bool
	batch [][]byte
}

func (f frames) count() int {
	n := len(f.batch)
	if f.tail != nil {
		n++
	}
	if f.pong != nil {
		n++
	}
	if f.ping {
		n++
	}
	return n
}

// writeBatch writes f; more than one frame go out together in one socket
// write (see batchConn).
func (c *Conn) writeBatch(f frames) error {
	deadline := time.Now().Add(c.cfg.writeTimeout)
	if err := c.ws.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if sock, ok := c.ws.NetConn().(*batchConn); ok && f.count() > 1 {
		sock.hold()
		err := c.writeFrames(f, deadline)
		if rerr := sock.release(); err == nil {
			err = rerr
		}
		return err
	}
	return c.writeFrames(f, deadline)
}

func (c *Conn) writeFrames(f frames, deadline time.Time) error {
	if f.tail != nil {
		nc := c.ws.NetConn()
		if err := nc.SetWriteDeadline(deadline); err != nil {
			return err
		}
		if _, err := nc.Write(f.tail); err != nil {
			return err
		}
	}
	if f.pong != nil {
		if err := c.ws.WriteControl(websocket.PongMessage, f.pong, deadline); err != nil {
			return err
		}
	}
	if f.ping {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, deadline); err != nil {
			return err
		}
	}
	for _, m := range f.batch {
		if err := c.ws.WriteMessage(websocket.TextMessage, m); err != nil {
			return err
		}
	}
	return nil
}

// writeFailed gives up on a client whose socket does not take writes.
func (c *Conn) writeFailed() {
	c.mu.Lock()
	if c.closing == nil {
		d := DisconnectWriteFailed
		c.closing = &d
	}
	c.queue, c.queued = nil, 0
	c.mu.Unlock()
	c.cut()
}

// writeClose sends the close frame, with text ("": d.Reason), and gives the
// client closeGrace to answer before the socket is cut; the read loop ends
// when either happens.
func (c *Conn) writeClose(d Disconnect, text string) {
	if text == "" {
		text = d.Reason
	}
	deadline := time.Now().Add(c.cfg.writeTimeout)
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(d.Code, text), deadline); err != nil {
		c.cut()
		return
	}
	c.mu.Lock()
	if c.grace == nil {
		c.grace = time.AfterFunc(closeGrace, c.cut)
	}
	c.mu.Unlock()
}

// serve starts the connection and reads it until it ends. It owns the
// connection's registration in the hub, its ping timer, the socket's final
// close and the connection's context (see finish). When the server's
// poller takes the connection, serve returns at once and readers are
// started by the poller (readReady); else serve is the read loop.
func (c *Conn) serve() {
	c.start()
	if p := c.cfg.poll; p != nil {
		if br := gorillaReader(c.ws); br != nil {
			// br is empty: gorilla refuses an upgrade with bytes after the request.
			c.br = br
			if p.add(c) == nil {
				return // armed: the poller starts a reader once bytes come
			}
		}
	}
	for {
		if d, ok := c.readOne(); !ok {
			c.finish(d)
			return
		}
	}
}

// start arms the connection's timers and read limits.
func (c *Conn) start() {
	m := c.cfg.metrics
	m.Connections.Inc()
	m.ConnectionsTotal.Inc()
	c.ws.SetReadLimit(c.cfg.maxMessage)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.cfg.pongTimeout))
	c.ws.SetPongHandler(func(string) error { return c.extendReadDeadline() })
	// Control frames the client asks for are written by the writer, or
	// after the last inline write (see writeInlineLocked).
	c.ws.SetPingHandler(c.onPing)
	c.ws.SetCloseHandler(c.onClose)
	fd := socketFD(c)
	now := sinceEpoch()
	c.lastRead.Store(int64(now))
	c.mu.Lock()
	c.fd = fd
	c.nextPing = now + c.cfg.pingInterval
	c.ping = time.AfterFunc(c.cfg.pingInterval, c.onPingTimer) // its callback waits for mu
	if !c.expires.IsZero() {
		// An already passed expiry fires at once: the client hears 4003.
		c.expiry = time.AfterFunc(time.Until(c.expires), func() { c.Close(DisconnectTokenExpired) })
	}
	c.mu.Unlock()
}

// onPing has the writer answer the client's ping with a pong carrying its
// data, as gorilla's default handler would.
func (c *Conn) onPing(data string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing == nil {
		c.pong = append(make([]byte, 0, len(data)), data...)
		c.startWriterLocked()
	}
	return nil
}

// onClose answers the client's close frame with the same code, as
// gorilla's default handler does, once no inline write can follow.
func (c *Conn) onClose(code int, _ string) error {
	c.mu.Lock()
	c.peerClosed = true
	c.mu.Unlock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
	return nil
}

// readReady is the reader of a polled connection: it reads frames while
// gorilla holds buffered bytes, then re-arms the poller and returns. A
// frame that has partly arrived blocks it (under the read deadline) until
// the rest comes: a goroutine is taken only while a frame is being read.
func (c *Conn) readReady() {
	for {
		d, ok := c.readOne()
		if !ok {
			c.finish(d)
			return
		}
		if c.br.Buffered() > 0 {
			continue
		}
		if err := c.cfg.poll.arm(c); err != nil {
			c.finish(DisconnectGone)
		}
		return // the poller starts the next reader
	}
}

// finish ends the connection once its reader has seen the socket end
// (with d) or been cut; it runs on the reader, once.
func (c *Conn) finish(d Disconnect) {
	c.mu.Lock()
	timedOut := c.closing == nil && d == DisconnectTimeout
	if c.closing != nil {
		d = *c.closing // the reason we closed for wins over how the socket ended
	} else {
		c.closing = &d
	}
	c.queue, c.queued = nil, 0
	c.ping.Stop() // with closing set, under mu: the callback cannot re-arm it
	if c.expiry != nil {
		c.expiry.Stop() // a callback already running finds closing set and does nothing
	}
	if c.grace != nil {
		c.grace.Stop()
	}
	c.mu.Unlock()
	if c.cancel != nil {
		c.cancel() // nothing can be answered any more: the router forgets our calls
	}

	if timedOut {
		// Tell a client that may still be listening why, without waiting long.
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(d.Code, d.Reason), time.Now().Add(time.Second))
	}
	if c.run != nil {
		c.cfg.poll.remove(c) // before the close: the fd may be reused at once
	}
	_ = c.ws.NetConn().Close()
	c.hub.Remove(c)
	if b := c.cfg.binder; b != nil {
		b.ReleaseToken(c.token)
	}
	if n := c.cfg.disconnect; n != nil {
		n.NotifyDisconnect(context.Background(), c.token, c.id, d.Code, d.Reason)
	}
	m := c.cfg.metrics
	m.Connections.Dec()
	m.Disconnects.WithLabelValues(d.Reason).Inc()
	if d != DisconnectNormal && d != DisconnectShutdown && d != DisconnectGone {
		c.cfg.log.Info("connection closed", "reason", d.Reason, "code", d.Code, "token_hash", telemetry.TokenHash(c.token))
	}
}

// onPingTimer is the ping timer's function: it closes a client that sent
// nothing for ws.pong_timeout (4000-range timeout, as the read deadline
// would), else has the writer send a ping when one is due, and arms the
// timer for whichever comes next unless the connection is closing.
func (c *Conn) onPingTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing != nil {
		return
	}
	now := sinceEpoch()
	deadline := time.Duration(c.lastRead.Load()) + c.cfg.pongTimeout
	if now >= deadline {
		c.closeLocked(DisconnectTimeout, false)
		return
	}
	if now >= c.nextPing {
		c.pingDue = true
		c.startWriterLocked()
		c.nextPing = now + c.cfg.pingInterval
	}
	c.ping.Reset(min(c.nextPing, deadline) - now)
}

func (c *Conn) extendReadDeadline() error {
	c.lastRead.Store(int64(sinceEpoch()))
	c.mu.Lock()
	closing := c.closing != nil
	c.mu.Unlock()
	if closing {
		return nil // keep the close grace deadline
	}
	return c.ws.SetReadDeadline(time.Now().Add(c.cfg.pongTimeout))
}

// readOne reads and handles one message; false: the connection ended, why.
func (c *Conn) readOne() (Disconnect, bool) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return disconnectFor(err), false
	}
	if err := c.extendReadDeadline(); err != nil {
		return DisconnectGone, false
	}
	bp := c.readBuffer()
	buf, err := readAll((*bp)[:0], r)
	if err != nil {
		c.putReadBuffer(bp, buf)
		return disconnectFor(err), false
	}
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
	if mt == websocket.TextMessage {
		c.handleFrame(c.ctx, buf)
	} else {
		c.reject(c.ctx, nil, protocol.CodeBadRequest, "binary frames are not supported; send JSON text frames")
	}
	c.putReadBuffer(bp, buf)
	return Disconnect{}, true
}

func (c *Conn) readBuffer() *[]byte {
	if bp, ok := c.cfg.readBufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 1024)
	return &b
}

func (c *Conn) putReadBuffer(bp *[]byte, buf []byte) {
	if cap(buf) <= maxPooledReadBuffer {
		*bp = buf[:0]
		c.cfg.readBufs.Put(bp)
	}
}

// readAll appends r to buf; the read limit is enforced by the websocket reader.
func readAll(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// handleFrame validates one text frame and hands it to the router, or
// answers it locally (ping, errors). buf is reused after it returns.
func (c *Conn) handleFrame(ctx context.Context, buf []byte) {
	f, err := protocol.ParseFrame(buf)
	if err != nil {
		var fe *protocol.FrameError
		if errors.As(err, &fe) {
			c.reject(ctx, fe.ID, protocol.CodeBadRequest, fe.Reason)
		} else {
			c.reject(ctx, nil, protocol.CodeBadRequest, err.Error())
		}
		return
	}
	if f.TraceParent != "" && c.cfg.tracing != nil {
		// A client may start the trace: its call span becomes our parent.
		ctx = c.cfg.tracing.Propagator.Extract(ctx, telemetry.FrameCarrier{TraceParent: f.TraceParent, TraceState: f.TraceState})
	}
	if f.Method == "ping" {
		c.Send(protocol.AppendPong(nil, f.ID))
		return
	}
	if f.Method[0] == '$' {
		c.reject(ctx, f.ID, protocol.CodeBadRequest, "methods starting with $ are reserved")
		return
	}
	lim := c.cfg.limits.Load()
	now := time.Now()
	c.bucket.setLimits(lim)
	if !c.bucket.allow(now) {
		c.reject(ctx, f.ID, protocol.CodeTooManyRequests, "call rate limit exceeded (ws.rate_per_second)")
		return
	}
	rt := c.cfg.routes.Lookup(f.Method)
	if rt == nil {
		c.reject(ctx, f.ID, protocol.CodeUnknownMethod, "no route for method "+strconv.Quote(f.Method))
		return
	}
	if rt.Rate > 0 && !c.routeBucket(rt).allow(now) {
		c.reject(ctx, f.ID, protocol.CodeTooManyRequests, "call rate limit of "+rt.Name+" exceeded ("+
			strconv.FormatFloat(rt.Rate, 'g', -1, 64)+" calls/s, burst "+strconv.Itoa(rt.Burst)+")")
		return
	}
	if rt.MaxPayloadBytes > 0 && len(f.Payload) > rt.MaxPayloadBytes {
		c.reject(ctx, f.ID, protocol.CodePayloadTooLarge, "payload is "+strconv.Itoa(len(f.Payload))+" bytes; "+
			rt.Name+" takes at most "+strconv.Itoa(rt.MaxPayloadBytes)+" (max_payload_bytes)")
		return
	}
	c.mu.Lock()
	switch {
	case c.closing != nil:
		c.mu.Unlock()
		return
	case c.draining:
		c.mu.Unlock()
		c.reject(ctx, f.ID, protocol.CodeShuttingDown, "the node is shutting down; reconnect and call again")
		return
	case f.ID != nil && c.inflight >= lim.MaxInflight:
		c.mu.Unlock()
		c.reject(ctx, f.ID, protocol.CodeTooManyRequests, "too many calls in flight on this connection (ws.max_inflight)")
		return
	}
	if f.ID != nil {
		c.inflight++
	}
	c.mu.Unlock()
	c.router.Call(ctx, c.token, &f, rt, c)
}

// maxRouteBuckets bounds a connection's per-route buckets; beyond it the
// oldest goes (after reloads, buckets of routes no table holds any more).
const maxRouteBuckets = 16

// routeBucket returns the connection's bucket for rt (which has a rate),
// making it on first use. Owned by the read loop.
func (c *Conn) routeBucket(rt *route.Route) *tokenBucket {
	for i := range c.routeBuckets {
		if c.routeBuckets[i].rt == rt {
			return &c.routeBuckets[i].bucket
		}
	}
	if len(c.routeBuckets) == maxRouteBuckets {
		c.routeBuckets = append(c.routeBuckets[:0], c.routeBuckets[1:]...)
	}
	c.routeBuckets = append(c.routeBuckets, routeBucket{rt: rt, bucket: newTokenBucket(rt.Rate, rt.Burst)})
	return &c.routeBuckets[len(c.routeBuckets)-1].bucket
}

// reject answers a frame with an error without involving the broker,
// under a span of its own with an error status.
func (c *Conn) reject(ctx context.Context, id []byte, code, message string) {
	c.cfg.metrics.CallErrors.WithLabelValues(code).Inc()
	if t := c.cfg.tracing; t != nil {
		_, span := t.Tracer().Start(ctx, "reject", trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() {
			span.SetStatus(codes.Error, code)
			span.SetAttributes(attribute.String("piped.error.code", code), attribute.String("piped.error.message", message),
				attribute.String("piped.token_hash", telemetry.TokenHash(c.token)))
		}
		span.End()
	}
	c.Send(protocol.AppendError(nil, id, code, message))
}

// disconnectFor maps a read error to the reason the connection ended.
func disconnectFor(err error) Disconnect {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return DisconnectNormal
	case errors.Is(err, websocket.ErrReadLimit):
		return DisconnectTooBig
	case errors.As(err, &ne) && ne.Timeout():
		return DisconnectTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return DisconnectGone
	default:
		return DisconnectProtocol
	}
}

// rawFD returns the file descriptor of c's socket, or false when c's net.Conn
// has none (then c keeps a read goroutine).
func rawFD(c *Conn) (syscall.RawConn, bool) {
	sc, ok := c.ws.NetConn().(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}
