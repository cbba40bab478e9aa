// Package routing is the broker side of a node: it declares the node's
// RabbitMQ topology, publishes client calls with publisher confirms,
// consumes the node's in-queue and routes results and events back to the
// connections, and keeps all of that alive across broker restarts.
package routing

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
)

// Hub is what the router needs from the connection side: writing a message
// to every connection of a token on this node, and what control messages
// need (ControlHub, in control.go). It must not block and returns how many
// connections it reached.
type Hub interface {
	Broadcast(token string, msg []byte) int
	ControlHub
}

// Options are the router's dependencies and settings.
type Options struct {
	NodeID string
	AMQP   config.AMQP
	// Routes holds the route table; the router declares or checks the
	// exchanges of its routes at every broker session and swaps it in
	// SetRoutes. Nil: a table of the default route alone, with Timeout.
	Routes  *routetable.Holder
	Timeout time.Duration // requests.timeout, for the table made when Routes is nil
	Hub     Hub
	Logger  *slog.Logger
	Metrics *telemetry.Metrics
	Tracing *telemetry.Tracing // nil: no spans and no trace propagation
	// SubjectHeader adds the AMQP header x-piped-subject (the caller's
	// token, which is a verified JWT subject in auth mode "jwt") to calls.
	SubjectHeader bool
}

// Router publishes calls and dispatches the in-queue. Create it with New,
// run it with Run; Call and Ready may be used from any goroutine at any time.
type Router struct {
	// Set at construction.
	urls               []string // amqp.urls, or amqp.url alone
	nodeID             string
	topo               Topology
	prefetch           int
	maxMessage         int // amqp.max_message_bytes; 0: no bound (tests)
	heartbeat          time.Duration
	confirmTimeout     time.Duration
	reconnectMin       time.Duration
	reconnectMax       time.Duration
	routes             *routetable.Holder
	hub                Hub
	log                *slog.Logger
	metrics            *telemetry.Metrics
	pending            *pendingTable
	bufs               sync.Pool // *[]byte for call bodies
	tracer             trace.Tracer
	prop               propagation.TextMapPropagator
	processSpanName    string
	callDurationResult prometheus.Observer
	exchanges          exchangeMetas
	subjectHeader      bool
	events             *eventBindings // nil: targeted events are off

	pub     atomic.Pointer[publisher] // nil while not connected
	blocked atomic.Bool
	// notices counts lifecycle notices queued and not yet confirmed or
	// failed, for FlushNotices.
	notices atomic.Int64

	mu sync.Mutex
	// Guarded by mu.
	notReady error // why the router is not connected; nil while a session runs

	routesMu sync.Mutex // held across the broker I/O of declaring route exchanges
	// Guarded by routesMu.
	sessConn *amqp.Connection // the running session's consume connection; nil between sessions
}

// New returns a Router; it does not connect until Run.
func New(o Options) *Router {
	nonce := make([]byte, 4)
	_, _ = crand.Read(nonce)
	tracer, tracing := tracerOf(o.Tracing)
	topo := NewTopology(o.AMQP, o.NodeID)
	routes := o.Routes
	if routes == nil {
		t, err := routetable.Compile(nil, routetable.Default{NodeID: o.NodeID, Exchange: topo.ExchangeOut, Timeout: o.Timeout, Enabled: true})
		if err != nil {
			panic(err) // no routes: nothing to be invalid
		}
		routes = routetable.NewHolder(t)
	}
	r := &Router{
		tracer:             tracer,
		prop:               tracing.Propagator,
		processSpanName:    "process " + topo.QueueIn,
		callDurationResult: o.Metrics.CallDuration.WithLabelValues("result"),
		urls:               o.AMQP.BrokerURLs(),
		nodeID:             o.NodeID,
		topo:               topo,
		prefetch:           o.AMQP.Prefetch,
		maxMessage:         o.AMQP.MaxMessageBytes,
		heartbeat:          o.AMQP.Heartbeat,
		confirmTimeout:     o.AMQP.ConfirmTimeout,
		reconnectMin:       o.AMQP.ReconnectMin,
		reconnectMax:       o.AMQP.ReconnectMax,
		routes:             routes,
		hub:                o.Hub,
		log:                o.Logger,
		metrics:            o.Metrics,
		pending:            newPendingTable(o.NodeID + "." + hex.EncodeToString(nonce) + "."),
		notReady:           ErrNotConnected,
		subjectHeader:      o.SubjectHeader,
	}
	if topo.Events != "" {
		r.events = newEventBindings(topo.NodeEvents, topo.Events, o.AMQP.EventsUnbindDelay, realClock{}, o.Metrics)
	}
	o.Metrics.SetPendingFunc(r.Pending)
	return r
}

// Topology returns the names of the node's exchanges and queues.
func (r *Router) Topology() Topology { return r.topo }

// Ready returns nil while the node can take calls: connected, topology
// declared, in-queue consumed, publishing neither blocked nor stalled.
// Otherwise the reason.
func (r *Router) Ready() error {
	p := r.pub.Load()
	if p == nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.notReady
	}
	if r.blocked.Load() {
		return ErrBlocked
	}
	if p.stalled(time.Now()) {
		return ErrStalled
	}
	return nil
}

// Pending returns the number of calls awaiting an answer.
func (r *Router) Pending() int { return r.pending.len() }

// Routes returns the holder of the route table the router publishes with.
func (r *Router) Routes() *routetable.Holder { return r.routes }

// Call publishes frame f made by token on route rt (the route of
// f.Method: its exchange, routing key, timeout and expiration) and arranges
// for exactly one answer (a result or an error frame) to reach from; calls
// without an id get no timeout error. The call keeps rt until it is
// answered, whatever tables are stored meanwhile. It never blocks: it
// queues the call for the publisher's goroutine (see publishQueueSize) and
// answers "unavailable" at once when the broker is not connected, blocks
// publishes, stopped reading them, or the queue is full. f's bytes are not
// retained. ctx is the caller's connection's: once it is done the call is
// dropped from the pending table and gets no answer (see Router.Pending).
func (r *Router) Call(ctx context.Context, token string, f *protocol.Frame, rt *routetable.Route, from protocol.Answerer) {
	c := &call{from: from, token: token, method: f.Method, rt: rt, start: time.Now()}
	if f.ID != nil {
		c.id = append([]byte(nil), f.ID...)
	}
	ctx = r.startCall(ctx, c)
	if rt == nil { // the gateway answers unknown_method itself; never publish without a route
		r.answerError(c, protocol.CodeUnknownMethod, "no route for method "+strconv.Quote(f.Method))
		return
	}
	p := r.pub.Load()
	if p == nil || r.blocked.Load() {
		reason := "the broker is not connected"
		if p != nil {
			reason = "the broker is blocking publishes (resource alarm)"
		}
		r.answerError(c, protocol.CodeUnavailable, reason)
		return
	}
	r.pending.assign(c)
	r.pending.dropOnDone(ctx, c, r.abandon)
	corrID := r.pending.correlationID(c)
	j := r.newCallJob(ctx, c, corrID, rt.Expiration)
	j.msg.Body = protocol.AppendCall(j.msg.Body, f, token)
	if reason := p.enqueue(j, c.start); reason != "" {
		endError(j.span, protocol.CodeUnavailable)
		r.putBuf(j)
		// Never pending: let go of it now (and of its caller's context),
		// not when the connection ends. False: the caller ended meanwhile
		// and the call was abandoned.
		if r.pending.take(c) {
			r.answerError(c, protocol.CodeUnavailable, reason)
		}
	}
}

// newCallJob returns the publish job of the assigned call c, whose
// correlation id is corrID, on c's route: its PRODUCER span, its headers
// (node, subject, trace context) and the properties every call carries;
// msg.Body is an empty buffer from the pool for the caller to fill.
func (r *Router) newCallJob(ctx context.Context, c *call, corrID, expiration string) *pubJob {
	key := c.rt.RoutingKey(c.method)
	meta := r.exchanges.get(r.metrics, c.rt.Exchange)
	pctx, span := r.startPublish(ctx, c, meta, key, corrID)
	headers := amqp.Table{"x-piped-node": r.nodeID}
	if r.subjectHeader {
		headers["x-piped-subject"] = c.token
	}
	r.prop.Inject(pctx, AMQPHeaders(headers))
	bp := r.getBuf()
	return &pubJob{c: c, span: span, buf: bp, exchange: c.rt.Exchange, key: key, calls: meta.calls, msg: amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: corrID,
		MessageId:     corrID,
		ReplyTo:       r.topo.QueueIn,
		Timestamp:     c.start,
		Expiration:    expiration,
		AppId:         "piped",
		Headers:       headers,
		Body:          (*bp)[:0],
	}}
}

// getBuf returns a body buffer from the pool (see putBuf).
func (r *Router) getBuf() *[]byte {
	if bp, _ := r.bufs.Get().(*[]byte); bp != nil {
		return bp
	}
	b := make([]byte, 0, 512)
	return &b
}

// putBuf returns the body buffer of j to the pool, unless it grew large.
func (r *Router) putBuf(j *pubJob) {
	if cap(j.msg.Body) <= 64<<10 {
		*j.buf = j.msg.Body[:0]
		r.bufs.Put(j.buf)
	}
	j.buf, j.msg.Body = nil, nil
}

// expire answers c with a timeout error if it is still pending. A call
// without an id is forgotten silently: its client cannot correlate an
// answer and may expect none (fire and forget).
func (r *Router) expire(c *call) {
	if !r.pending.take(c) {
		return
	}
	if c.id == nil {
		c.span.End()
		return
	}
	r.answerError(c, protocol.CodeTimeout, "no result within "+c.rt.Timeout.String())
}

// codeConnectionClosed is the error code on the span of a call abandoned
// because its connection ended; no client sees it.
const codeConnectionClosed = "connection_closed"

// abandon ends the call c, which the caller has taken from the pending
// table, without an answer: its connection has ended. A result that comes
// later is routed as one for a call that timed out.
func (r *Router) abandon(c *call) {
	r.metrics.CallsAbandoned.Inc()
	endError(c.span, codeConnectionClosed)
}

// answerError sends an error frame to the caller of c, which the caller
// has taken from the pending table (or never added). Calls without an id learn of errors too.
func (r *Router) answerError(c *call, code, message string) {
	r.metrics.CallErrors.WithLabelValues(code).Inc()
	r.metrics.CallDuration.WithLabelValues(code).Observe(time.Since(c.start).Seconds())
	c.from.Answer(c.id, protocol.AppendError(nil, c.id, code, message))
	endError(c.span, code)
}

// FailPending answers every pending call with an error: used at the end of a
// drain, before the connections are closed.
func (r *Router) FailPending(code, message string) int {
	all := r.pending.takeAll()
	for _, c := range all {
		r.answerError(c, code, message)
	}
	return len(all)
}

// Run connects to the broker and keeps the node connected until ctx is
// done, reconnecting with exponential backoff (amqp.reconnect_min doubling
// up to amqp.reconnect_max, back to the minimum after a long healthy
// session) and jitter. With several broker addresses (amqp.urls) the first
// attempt goes to the one StartIndex gives for the node id, and every
// attempt after a failed dial or an ended session to the next one, round
// the list, within the same backoff. It returns nil
// when ctx is done, or an error that retrying cannot fix: a topology
// conflict, or the missing exchange of a route with declare = false, before
// the node was ever ready. Later the same errors make the node not ready
// until a session succeeds.
func (r *Router) Run(ctx context.Context) error {
	defer r.setNotReady(ErrStopped)
	backoff := r.reconnectMin
	everReady := false
	addrs := newBrokers(r.urls, r.nodeID)
	for {
		start := time.Now()
		url, index := addrs.take()
		wasReady, err := r.session(ctx, broker{url: url, index: index})
		everReady = everReady || wasReady
		if ctx.Err() != nil {
			return nil
		}
		if (errors.Is(err, ErrTopologyConflict) || errors.Is(err, ErrExchangeMissing)) && !everReady {
			return err
		}
		r.setNotReady(err)
		if wasReady && time.Since(start) > r.reconnectMax {
			backoff = r.reconnectMin
		}
		// Equal jitter: a random wait in [backoff/2, backoff], so nodes that lost
		// the broker together do not come back in lockstep.
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		switch {
		case wasReady:
			r.log.Warn("broker session ended; reconnecting", "error", err, "url", config.RedactURL(url), "retry_in", wait.String())
		case errors.Is(err, ErrConnect):
			r.log.Warn("cannot connect to the broker; retrying", "error", err, "retry_in", wait.String())
		default:
			r.log.Warn("broker session failed before it was ready; retrying", "error", err, "retry_in", wait.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, r.reconnectMax)
	}
}

func (r *Router) setNotReady(err error) {
	r.mu.Lock()
	r.notReady = err
	r.mu.Unlock()
	r.metrics.Ready.Set(0)
}

// closeTimeout bounds closing a session's connections: the broker's
// close-ok, or a Publish stuck on a broker that stopped reading.
const closeTimeout = 2 * time.Second

// dialTimeout bounds the TCP connect and the AMQP handshake.
const dialTimeout = 10 * time.Second

// broker is the address one session connects to.
type broker struct {
	url   string
	index int // in amqp.urls (0 for amqp.url)
}

// dial opens one connection to b, named for the management UI. With sock,
// the connection's socket is sock (whose Conn it sets).
func (r *Router) dial(b broker, role string, sock *batchConn) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("piped " + r.nodeID + " " + role)
	dial := amqp.DefaultDial(dialTimeout)
	if sock != nil {
		plain := dial
		dial = func(network, addr string) (net.Conn, error) {
			c, err := plain(network, addr)
			if err != nil {
				return nil, err
			}
			sock.Conn = c
			return sock, nil
		}
	}
	conn, err := amqp.DialConfig(b.url, amqp.Config{
		Heartbeat:  r.heartbeat,
		Properties: props,
		Dial:       dial,
	})
	if err != nil {
		// amqp091's dial errors do not contain the URL; say which broker, redacted.
		return nil, fmt.Errorf("%w %s (%s connection): %w", ErrConnect, config.RedactURL(b.url), role, err)
	}
	return conn, nil
}

// session runs one broker session on b: two connections (consuming and
// publishing, so that flow control on publishes never stalls deliveries),
// topology, consumer and publisher. It returns when either connection or
// channel fails or ctx is done, after stopping every goroutine it started.
func (r *Router) session(ctx context.Context, b broker) (ready bool, err error) {
	consConn, err := r.dial(b, "consume", nil)
	if err != nil {
		return false, err
	}
	defer consConn.Close()
	pubSock := &batchConn{}
	pubConn, err := r.dial(b, "publish", pubSock)
	if err != nil {
		return false, err
	}
	defer pubConn.Close()

	if r.topo.Transient {
		if err := r.checkInQueue(consConn); err != nil {
			return false, err
		}
	}
	consCh, err := consConn.Channel()
	if err != nil {
		return false, fmt.Errorf("routing: open consume channel: %w", err)
	}
	if err := r.topo.Declare(consCh); err != nil {
		return false, err
	}
	if err := r.startRoutes(consConn); err != nil {
		return false, err
	}
	defer r.endRoutes()
	if err := consCh.Qos(r.prefetch, 0, false); err != nil {
		return false, fmt.Errorf("routing: set prefetch: %w", err)
	}
	deliveries, err := consCh.Consume(r.topo.QueueIn, "piped-"+r.nodeID, false, true, false, false, nil)
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.AccessRefused {
			return false, fmt.Errorf("%w: %s: %s", ErrInQueueInUse, r.topo.QueueIn, ae.Reason)
		}
		return false, fmt.Errorf("routing: consume %s: %w", r.topo.QueueIn, err)
	}

	pubCh, err := pubConn.Channel()
	if err != nil {
		return false, fmt.Errorf("routing: open publish channel: %w", err)
	}
	if err := pubCh.Confirm(false); err != nil {
		return false, fmt.Errorf("routing: enable publisher confirms: %w", err)
	}
	// Targeted events: the held tokens are bound again before the node is
	// ready, so that no $connect is published for a connection whose
	// binding the broker may lack; then the binder keeps them in step.
	var bindCh *amqp.Channel
	var bindChClosed <-chan *amqp.Error
	if r.events != nil {
		if bindCh, err = consConn.Channel(); err != nil {
			return false, fmt.Errorf("routing: open binding channel: %w", err)
		}
		bindChClosed = bindCh.NotifyClose(make(chan *amqp.Error, 1))
		r.events.attach()
		defer r.events.detach() // after the binder stopped (the deferred func below waits for it)
		start := time.Now()
		if err := r.events.flush(bindCh); err != nil {
			return false, err
		}
		held, bound := r.events.stats()
		r.log.Info("token bindings made", "exchange", r.topo.Events, "held", held, "bound", bound, "took", time.Since(start).String())
	}

	confirms := pubCh.NotifyPublish(make(chan amqp.Confirmation, 1024))
	returns := pubCh.NotifyReturn(make(chan amqp.Return)) // unbuffered: a return is seen before its confirm
	blocked := pubConn.NotifyBlocked(make(chan amqp.Blocking, 4))
	consClosed := consConn.NotifyClose(make(chan *amqp.Error, 1))
	pubClosed := pubConn.NotifyClose(make(chan *amqp.Error, 1))
	consChClosed := consCh.NotifyClose(make(chan *amqp.Error, 1))
	pubChClosed := pubCh.NotifyClose(make(chan *amqp.Error, 1))

	var wg sync.WaitGroup
	p := newPublisher(r, pubCh, pubSock)
	wg.Add(3)
	go func() { defer wg.Done(); p.run(confirms, returns) }()
	go func() { defer wg.Done(); p.write() }()
	go func() { defer wg.Done(); r.watchBlocked(blocked) }()
	stopBinder := make(chan struct{})
	var binderDone chan struct{} // nil: no binder; closed when it returned binderErr
	var binderErr error
	if r.events != nil {
		binderDone = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			binderErr = r.events.run(ctx, bindCh, stopBinder)
			close(binderDone)
		}()
	}
	defer func() {
		close(stopBinder)
		r.pub.Store(nil)
		r.blocked.Store(false)
		r.metrics.BrokerBlocked.Set(0)
		p.shutdown() // answers the queued and unconfirmed calls
		// A deadline, so that a Publish stuck on a broker that stopped
		// reading returns (the socket deadline ends it) and the close does
		// not wait behind it.
		_ = pubConn.CloseDeadline(time.Now().Add(closeTimeout))
		_ = consConn.CloseDeadline(time.Now().Add(closeTimeout))
		wg.Wait()
	}()

	r.blocked.Store(false)
	r.pub.Store(p)
	r.setNotReady(nil)
	r.metrics.Ready.Set(1)
	r.metrics.BrokerReconnects.Inc()
	r.log.Info("broker connected", "url", config.RedactURL(b.url), "broker_index", b.index, "brokers", len(r.urls),
		"in_queue", r.topo.QueueIn, "out_exchange", r.topo.ExchangeOut)

	d := newDispatcher(r)
	// Routed deliveries are acknowledged together within ackDelay (see
	// dispatchBatch); ackDue is armed while some wait.
	ackDue := time.NewTimer(ackDelay)
	ackDue.Stop()
	defer ackDue.Stop()
	ackArmed := false
	for {
		select {
		case <-ctx.Done():
			d.ack(consCh)
			r.waitBinder(binderDone)
			return true, nil
		case <-binderDone:
			if ctx.Err() != nil { // it removed the released tokens' bindings: the node stops
				d.ack(consCh)
				return true, nil
			}
			return true, binderErr
		case e := <-bindChClosed:
			return true, closeErr("binding channel", e)
		case <-ackDue.C:
			ackArmed = false
			d.ack(consCh)
		case e := <-consClosed:
			return true, closeErr("consume connection", e)
		case e := <-pubClosed:
			return true, closeErr("publish connection", e)
		case e := <-consChClosed:
			return true, closeErr("consume channel", e)
		case e := <-pubChClosed:
			return true, closeErr("publish channel", e)
		case del, ok := <-deliveries:
			if !ok || !d.dispatchBatch(consCh, &del, deliveries) {
				return true, consumerEnded(consClosed, consChClosed)
			}
			if d.unacked > 0 && !ackArmed {
				ackDue.Reset(ackDelay)
				ackArmed = true
			}
		}
	}
}

// waitBinder gives the binder, when there is one (done not nil), at most
// closeTimeout to remove the bindings of released tokens once the node
// stops; closing the connections then ends whatever it still waits for.
func (r *Router) waitBinder(done <-chan struct{}) {
	if done == nil {
		return
	}
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.log.Warn("token bindings not all removed at shutdown; they go with the in-queue (amqp.in_queue_expires)")
	}
}

// checkInQueue looks for the node's non-durable in-queue (amqp.urls)
// before a session declares it. When it is gone (the broker node that held
// it was lost, or it expired), so are the results it held and those
// published while it did not exist: the calls still waiting for theirs are
// answered "unavailable" at once rather than at their timeout. Their results
// may yet come (a backend still at work); they are then dropped as late.
func (r *Router) checkInQueue(conn *amqp.Connection) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("routing: open channel: %w", err)
	}
	_, err = ch.QueueDeclarePassive(r.topo.QueueIn, false, false, false, false, nil)
	var ae *amqp.Error
	switch {
	case err == nil:
		_ = ch.Close()
		return nil
	case !errors.As(err, &ae) || ae.Code != amqp.NotFound:
		return fmt.Errorf("routing: look for %s: %w", r.topo.QueueIn, err)
	}
	// The 404 closed the channel.
	if n := r.FailPending(protocol.CodeUnavailable, "the broker node holding the node's in-queue was lost, and the result with it"); n > 0 {
		r.log.Warn("in-queue was gone (its broker node was lost, or it expired); calls waiting for results answered unavailable",
			"in_queue", r.topo.QueueIn, "calls", n)
	}
	return nil
}

// consumerEnded says why the deliveries channel closed: the library closes
// it when the channel or connection goes, and the close notification that
// says why may come a moment later. Without one, the broker cancelled the
// consumer (the queue was deleted, for one).
func consumerEnded(connClosed, chClosed <-chan *amqp.Error) error {
	t := time.NewTimer(200 * time.Millisecond)
	defer t.Stop()
	select {
	case e := <-connClosed:
		return closeErr("consume connection", e)
	case e := <-chClosed:
		return closeErr("consume channel", e)
	case <-t.C:
		return closeErr("in-queue consumer (cancelled by the broker)", nil)
	}
}

func closeErr(what string, e *amqp.Error) error {
	if e == nil {
		return fmt.Errorf("routing: %s closed", what)
	}
	return fmt.Errorf("routing: %s closed: %w", what, e)
}

// watchBlocked tracks connection.blocked/unblocked until the channel closes.
func (r *Router) watchBlocked(ch <-chan amqp.Blocking) {
	for b := range ch {
		r.blocked.Store(b.Active)
		if b.Active {
			r.metrics.BrokerBlocked.Set(1)
			r.log.Warn("broker blocks publishing; calls fail with unavailable until it unblocks", "reason", b.Reason)
		} else {
			r.metrics.BrokerBlocked.Set(0)
			r.log.Info("broker unblocked publishing")
		}
	}
}
