package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The node's settings that raw-reliable copies (routing/router.go
// newCallJob, routing/dispatch.go, the [amqp] defaults).
const (
	nodePrefetch       = 512           // amqp.prefetch
	nodeAckBatch       = 64            // routing.ackBatch
	nodeExpiration     = "30000"       // requests.timeout in ms, the calls' AMQP expiration
	nodeInQueueExpires = 30 * 60 * 1e3 // amqp.in_queue_expires (x-expires, ms)
)

// topology names the broker objects of one node id, as the node does.
type topology struct{ exIn, exOut, qIn, qOut string }

func topologyOf(id string) topology {
	return topology{"exchange-in-" + id, "exchange-out-" + id, "queue-in-" + id, "queue-out-" + id}
}

// declare declares the node's exchanges, queues and bindings; inArgs are
// the in-queue's arguments.
func (t topology) declare(ch *amqp.Channel, inArgs amqp.Table) error {
	for _, ex := range []string{t.exIn, t.exOut} {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s: %w", ex, err)
		}
	}
	for _, q := range []struct {
		name, ex string
		args     amqp.Table
	}{{t.qIn, t.exIn, inArgs}, {t.qOut, t.exOut, nil}} {
		if _, err := ch.QueueDeclare(q.name, true, false, false, false, q.args); err != nil {
			return fmt.Errorf("declare %s: %w", q.name, err)
		}
		if err := ch.QueueBind(q.name, "", q.ex, false, nil); err != nil {
			return fmt.Errorf("bind %s: %w", q.name, err)
		}
	}
	return nil
}

// declareQueues declares the queue-out-ID queues of ids (durable, no
// arguments: as node and backend declare them) on the broker at url.
func declareQueues(url string, ids []string) error {
	conn, err := amqpDial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := ch.QueueDeclare(topologyOf(id).qOut, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s: %w", topologyOf(id).qOut, err)
		}
	}
	return nil
}

// rawLoad is the rpc path without a gateway: the harness publishes calls to
// exchange-out-ID and consumes the answers from queue-in-ID, over two
// connections (publishing and consuming) as the node does.
type rawLoad struct {
	counters
	reliable bool
	topo     topology
	node     string
	prefix   string // correlation id prefix, as the node makes them

	pub  *amqp.Channel
	mu   sync.Mutex
	sent map[string]rawCall // guarded by mu
	seq  uint64             // guarded by mu

	dup, errs, nacks, returns atomic.Int64
}

type rawCall struct {
	at    time.Time
	vconn int
}

// runRaw measures the same calls published and answered directly over AMQP
// (see docs/benchmarks.md for what reliable adds). id's topology must
// exist and the echo backend serve it; url is the broker to publish to
// and consume from.
func runRaw(url string, m cpuMeter, id string, reliable bool, conns, w, rep int, warmup, d time.Duration) (loadResult, error) {
	pubConn, err := amqpDial(url)
	if err != nil {
		return loadResult{}, err
	}
	defer pubConn.Close()
	consConn, err := amqpDial(url)
	if err != nil {
		return loadResult{}, err
	}
	defer consConn.Close()
	p := make([]byte, 4)
	_, _ = rand.Read(p)
	// Correlation ids of the node's form and length: node.random.seq.
	l := &rawLoad{reliable: reliable, topo: topologyOf(id), node: id, prefix: id + "." + hex.EncodeToString(p) + ".", sent: map[string]rawCall{}}
	cons, err := consConn.Channel()
	if err != nil {
		return loadResult{}, err
	}
	if l.pub, err = pubConn.Channel(); err != nil {
		return loadResult{}, err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if reliable {
		if err := cons.Qos(nodePrefetch, 0, false); err != nil {
			return loadResult{}, err
		}
		if err := l.pub.Confirm(false); err != nil {
			return loadResult{}, err
		}
		confirms := l.pub.NotifyPublish(make(chan amqp.Confirmation, 1024))
		returns := l.pub.NotifyReturn(make(chan amqp.Return, 16))
		wg.Go(func() {
			for c := range confirms {
				if !c.Ack {
					l.nacks.Add(1)
				}
			}
		})
		wg.Go(func() {
			for range returns {
				l.returns.Add(1)
			}
		})
	}
	deliveries, err := cons.Consume(l.topo.qIn, "piped-bench-"+id, !reliable, true, false, false, nil)
	if err != nil {
		return loadResult{}, err
	}
	done := make(chan int64, 1) // calls still unanswered when the consumer ends
	go func() { done <- l.consume(cons, deliveries) }()
	for vc := range conns {
		for range w {
			if err := l.publish(vc); err != nil {
				return loadResult{}, err
			}
		}
	}
	win := measureWindow(&l.counters, m, warmup, d)
	l.stopping.Store(true)
	var lost int64
	select {
	case lost = <-done:
	case <-time.After(drainTimeout):
		_ = cons.Cancel("piped-bench-"+id, false)
		lost = <-done
	}
	path := "raw"
	if reliable {
		path = "raw-reliable"
	}
	_ = pubConn.Close() // ends the confirm and return goroutines
	return win.result(path, conns, w, rep, l.latencies, lost, l.dup.Load(), l.errs.Load()+l.nacks.Load()+l.returns.Load()), nil
}

// publish sends one call of virtual connection vc.
func (l *rawLoad) publish(vc int) error {
	l.mu.Lock()
	l.seq++
	corr := l.prefix + strconv.FormatUint(l.seq, 36) + "." + strconv.FormatUint(mrand.Uint64(), 36) // the node's form: a random part too
	now := time.Now()
	l.sent[corr] = rawCall{at: now, vconn: vc}
	l.mu.Unlock()
	token := "bench-" + strconv.Itoa(vc)
	body := []byte(`{"id":` + strconv.FormatUint(l.seq, 10) + `,"method":"bench","token":"` + token + `","payload":{"n":1}}`)
	if !l.reliable {
		return l.pub.Publish(l.topo.exOut, "", false, false, amqp.Publishing{
			ContentType: "application/json", CorrelationId: corr, Body: body})
	}
	// What the node's newCallJob sets: the same properties and headers
	// (x-piped-node and a W3C traceparent; x-piped-subject only in jwt mode).
	return l.pub.Publish(l.topo.exOut, "bench", true, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: corr,
		MessageId:     corr,
		ReplyTo:       l.topo.qIn,
		Timestamp:     now,
		Expiration:    nodeExpiration,
		AppId:         "piped",
		Headers:       amqp.Table{"x-piped-node": l.node, "traceparent": traceparent()},
		Body:          body,
	})
}

// traceparent is a fresh unsampled W3C trace context, as the node injects
// when it exports no traces.
func traceparent() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-00"
}

// consume matches answers with calls and sends the next call of the same
// virtual connection. Reliable: deliveries are acked as the node acks
// them, all those already waiting (up to nodeAckBatch) with one
// multiple-ack. It returns the calls left unanswered.
func (l *rawLoad) consume(ch *amqp.Channel, deliveries <-chan amqp.Delivery) int64 {
	var lat []time.Duration
	defer func() { l.addLatencies(lat) }()
	handle := func(d *amqp.Delivery) bool { // reports whether consuming is over
		l.mu.Lock()
		c, ok := l.sent[d.CorrelationId]
		delete(l.sent, d.CorrelationId)
		left := len(l.sent)
		l.mu.Unlock()
		if !ok {
			l.dup.Add(1)
			return false
		}
		if l.measuring.Load() {
			lat = append(lat, time.Since(c.at))
		}
		l.answered.Add(1)
		if l.stopping.Load() {
			return left == 0
		}
		if err := l.publish(c.vconn); err != nil {
			l.errs.Add(1)
		}
		return false
	}
	for first := range deliveries {
		over := handle(&first)
		if l.reliable {
			last := first.DeliveryTag
		batch:
			for n := 1; n < nodeAckBatch && !over; n++ {
				select {
				case d, ok := <-deliveries:
					if !ok {
						break batch
					}
					over = handle(&d)
					last = d.DeliveryTag
				default:
					break batch
				}
			}
			_ = ch.Ack(last, true)
		}
		if over {
			break
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.sent))
}

// deleteTopology deletes the queues and exchanges of the given node ids and
// the named extra exchanges, ignoring what is already gone.
func deleteTopology(url string, ids []string, exchanges []string) error {
	conn, err := amqpDial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, id := range ids {
		t := topologyOf(id)
		for _, q := range []string{t.qIn, t.qOut} {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(q, false, false, false)
				ch.Close()
			}
		}
		exchanges = append(exchanges, t.exIn, t.exOut)
	}
	for _, ex := range exchanges {
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(ex, false, false)
			ch.Close()
		}
	}
	return nil
}

// amqpDial connects to the broker. A loopback broker is dialled from
// 127.0.0.250 with the port chosen at connect (bindNoPort): the shared
// ephemeral range of 127.0.0.1 may be full of TIME_WAIT left by other
// clients on the host.
func amqpDial(url string) (*amqp.Connection, error) {
	u, err := amqp.ParseURI(url)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: 10 * time.Second, Control: bindNoPort}
	if ip := net.ParseIP(u.Host); ip != nil && ip.IsLoopback() && ip.To4() != nil {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 250)}
	}
	return amqp.DialConfig(url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "piped-bench"},
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := d.Dial(network, addr)
			if err != nil {
				return nil, err
			}
			// As amqp.DefaultDial: the handshake must not hang forever.
			if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				return nil, err
			}
			return c, nil
		},
	})
}
