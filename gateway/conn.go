package gateway

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/piped-dev/piped/telemetry"
)

// closeGrace is how long a connection waits for the client's close frame
// after sending its own, before the socket is cut.
const closeGrace = 2 * time.Second

// Conn is one client WebSocket after the upgrade: the socket transport (a
// reader, reader.go, and one writer, writer.go) and the session on top of
// it (calls, limits, answers; session.go).
//
// Two roles touch the socket, and nothing else does. The reader owns every
// read: on Linux the server's poller (epoll) starts it when the socket is
// readable, it reads and handles what has arrived, control frames included,
// and hands the socket back to the poller, so an idle connection parks no
// goroutine whatever it is sent. The writer owns every byte written: data
// frames, pings, pongs and the close frame all go through it, in order
// (writer.go says how). Without a pollable socket the reader is a goroutine
// of its own for the connection's life (readLoop).
//
// Send and Answer never block: they queue, bounded by ws.send_queue_bytes.
type Conn struct {
	// Set at construction.
	nc      net.Conn
	token   string    // the address: the path token, or the verified subject
	expires time.Time // when the verified token expires; zero: never
	id      string    // unique across nodes and restarts: "<node id>.<16 hex digits>"
	hub     *Hub
	router  Router
	cfg     *connConfig

	// fd is the socket's descriptor, -1 when it has none (then every frame
	// goes through the writer goroutine and the connection keeps a read
	// goroutine). Set by start, under mu, before the poller can start a
	// reader; never changed after.
	fd int32

	// Set when the poller registers the connection (pollable only).
	run    *pollRun
	pollID uint64
	// armed hands the reader's role over: set by the reader before it
	// re-arms epoll, swapped back by the poller before it starts the next.
	armed atomic.Bool
	// lastRead is when the client last sent anything (a frame or a pong),
	// in nanoseconds since connEpoch: the ping timer closes a client that
	// sent nothing for ws.pong_timeout.
	lastRead atomic.Int64

	// Owned by the reader (one at a time, handed over by armed).
	rd           frameReader
	budget       frameBudget   // ws.frame_rate: every frame
	overBudget   bool          // the message being read drew from an empty budget: it is refused
	bucket       tokenBucket   // ws.rate_per_second
	routeBuckets []routeBucket // one per route with a rate that this connection called, lazily
	// ctx is every call's context, done when the connection ends; made by
	// the first data message, so an idle connection holds none.
	ctx    context.Context
	cancel context.CancelFunc

	mu sync.Mutex
	// Guarded by mu: the writer's state (see writer.go).
	out writeState
	// Guarded by mu: the session's.
	inflight int  // calls with an id awaiting their answer
	draining bool // close with 1012 once inflight reaches zero
	ended    bool // finish ran: no timer is armed again
	// ping is armed by start and stopped by finish; in between only its
	// own callback re-arms it, and only while the connection is open, so no
	// ping timer outlives the connection.
	ping     *time.Timer
	nextPing time.Duration // since connEpoch: when the next ping is due
	// expiry, armed by start only when expires is set and stopped by
	// finish, closes the connection with 4003; it never re-arms itself.
	expiry *time.Timer
	// grace, armed once our close frame is written, cuts the socket when the
	// client does not answer it in time; stopped by finish.
	grace *time.Timer
}

// connEpoch is the origin of Conn's monotonic timestamps.
var connEpoch = time.Now()

func sinceEpoch() time.Duration { return time.Since(connEpoch) }

// connConfig is shared by every connection of a server.
type connConfig struct {
	nodeID         string
	maxMessage     int64
	maxDepth       int // ws.max_depth
	frameRate      float64
	frameBurst     int
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
	poll           *poller            // nil: every connection keeps a read goroutine
}

func newConn(nc net.Conn, ident Identity, hub *Hub, router Router, cfg *connConfig) *Conn {
	c := &Conn{nc: nc, token: ident.Subject, expires: ident.Expires, id: cfg.newConnID(), hub: hub, router: router, cfg: cfg, fd: -1,
		budget: newFrameBudget(cfg.frameRate, cfg.frameBurst)}
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

// serve starts the connection and reads it until it ends. It owns the
// connection's registration in the hub, its timers, the socket's final
// close and the connection's context (see finish). When the server's
// poller takes the connection, serve returns at once and readers are
// started by the poller (readReady); else serve is the read loop.
func (c *Conn) serve() {
	c.start()
	if p := c.cfg.poll; p != nil && p.add(c) == nil {
		return // armed: the poller starts a reader once bytes come
	}
	c.readLoop()
}

// start arms the connection's timers.
func (c *Conn) start() {
	m := c.cfg.metrics
	m.Connections.Inc()
	m.ConnectionsTotal.Inc()
	fd := socketFD(c.nc)
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

// onPingTimer is the ping timer's function: it closes a client that sent
// nothing for ws.pong_timeout (1001 pong_timeout), else has the writer send
// a ping when one is due, and arms the timer for whichever comes next
// unless the connection is closing.
func (c *Conn) onPingTimer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out.closing != nil {
		return
	}
	now := sinceEpoch()
	deadline := time.Duration(c.lastRead.Load()) + c.cfg.pongTimeout
	if now >= deadline {
		// Nothing came, so nothing more is waited for: the socket is cut
		// once the close frame is out.
		c.beginCloseLocked(DisconnectTimeout, DisconnectTimeout.Code, DisconnectTimeout.Reason, false, true)
		return
	}
	if now >= c.nextPing {
		c.pingLocked()
		c.nextPing = now + c.cfg.pingInterval
	}
	c.ping.Reset(min(c.nextPing, deadline) - now)
}

// finish ends the connection once its reader has seen the socket end
// (with d) or been cut; it runs on the reader, once.
func (c *Conn) finish(d Disconnect) {
	c.mu.Lock()
	if c.out.closing != nil {
		d = *c.out.closing // the reason we closed for wins over how the socket ended
	}
	c.out.end(d)
	c.ended = true
	c.ping.Stop() // with closing set, under mu: the callback cannot re-arm it
	if c.expiry != nil {
		c.expiry.Stop() // a callback already running finds closing set and does nothing
	}
	if c.grace != nil {
		c.grace.Stop()
	}
	c.mu.Unlock()
	c.rd.release()
	if c.cancel != nil {
		c.cancel() // nothing can be answered any more: the router forgets our calls
	}
	if c.run != nil {
		c.cfg.poll.remove(c) // before the close: the fd may be reused at once
	}
	_ = c.nc.Close()
	if b := c.cfg.binder; b != nil {
		b.ReleaseToken(c.token)
	}
	if n := c.cfg.disconnect; n != nil {
		n.NotifyDisconnect(context.Background(), c.token, c.id, d.Code, d.Reason)
	}
	// Last of what the hub waits for (Hub.Close): the notice is queued by
	// now, and the shutdown flushes queued notices before the broker side
	// stops.
	c.hub.Remove(c)
	m := c.cfg.metrics
	m.Connections.Dec()
	m.Disconnects.WithLabelValues(d.Reason).Inc()
	if d != DisconnectNormal && d != DisconnectShutdown && d != DisconnectGone {
		c.cfg.log.Info("connection closed", "reason", d.Reason, "code", d.Code, "token_hash", telemetry.TokenHash(c.token))
	}
}

// cut ends the socket at once, without a close frame: it shuts the socket
// down, which wakes the reader (parked, or through the poller) with EOF;
// the reader's finish then closes it.
func (c *Conn) cut() {
	if shutdownSocket(c.nc) {
		return
	}
	_ = c.nc.Close()
}
