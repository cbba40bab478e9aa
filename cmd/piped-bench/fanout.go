package main

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"
)

// fanoutResult is the event rate delivered to clients through a node, or
// consumed from a plain queue bound the same way (Path "raw").
type fanoutResult struct {
	Path        string             `json:"path"`
	Conns       int                `json:"conns"`
	Tokens      int                `json:"tokens"`
	Window      int                `json:"window"`
	Rep         int                `json:"rep"`
	Events      int64              `json:"events"`
	Seconds     float64            `json:"seconds"`
	Rate        float64            `json:"events_per_s"`
	Lost        int64              `json:"lost"`
	CPUPerEvent map[string]float64 `json:"cpu_us_per_event"`
	OtherCores  float64            `json:"other_cores"`
}

// eventPublisher publishes events for tokens round robin to a mass
// exchange, keeping at most window of them undelivered.
type eventPublisher struct {
	counters
	slots     chan struct{}
	published atomic.Int64
}

func (p *eventPublisher) delivered() {
	select {
	case <-p.slots:
	default:
	}
	p.answered.Add(1)
}

func (p *eventPublisher) run(ch *amqp.Channel, mass string, tokens int) error {
	for i := 0; !p.stopping.Load(); i++ {
		p.slots <- struct{}{}
		body := []byte(`{"type":"event","event":"bench","token":"fan-` + strconv.Itoa(i%tokens) + `","payload":{"n":1}}`)
		if err := ch.Publish(mass, "", false, false, amqp.Publishing{ContentType: "application/json", Body: body}); err != nil {
			return err
		}
		p.published.Add(1)
	}
	return nil
}

// measure runs the publisher on its own connection through one window and
// waits for the events still on their way.
func (p *eventPublisher) measure(o *options, m cpuMeter, mass string, tokens int, warmup, d time.Duration) (window, int64, error) {
	conn, err := amqpDial(o.amqpURL)
	if err != nil {
		return window{}, 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return window{}, 0, err
	}
	errc := make(chan error, 1)
	go func() { errc <- p.run(ch, mass, tokens) }()
	w := measureWindow(&p.counters, m, warmup, d)
	p.stopping.Store(true)
	// The publisher may wait for a slot: free it.
	select {
	case err = <-errc:
	case <-time.After(time.Second):
		select {
		case <-p.slots:
		default:
		}
		err = <-errc
	}
	deadline := time.Now().Add(drainTimeout)
	for p.answered.Load() < p.published.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return w, p.published.Load() - p.answered.Load(), err
}

// runFanoutNode connects conns clients with tokens distinct tokens to n and
// publishes events for them to n's mass exchange.
func runFanoutNode(o *options, n *node, m cpuMeter, conns, tokens, win, rep int, warmup, d time.Duration) (fanoutResult, error) {
	p := &eventPublisher{slots: make(chan struct{}, win)}
	var readers sync.WaitGroup
	var ws []*websocket.Conn
	defer func() {
		for _, c := range ws {
			closeAbort(c)
		}
		readers.Wait()
	}()
	for i := range conns {
		c, _, err := dialer(i, 5000).Dial(n.wsURL("fan-"+strconv.Itoa(i%tokens)), nil)
		if err != nil {
			return fanoutResult{}, fmt.Errorf("fanout: connection %d: %w", i, err)
		}
		ws = append(ws, c)
		readers.Go(func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				p.delivered()
			}
		})
	}
	w, lost, err := p.measure(o, m, n.mass, tokens, warmup, d)
	return fanoutResult{Path: "piped", Conns: conns, Tokens: tokens, Window: win, Rep: rep, Events: w.ops, Seconds: w.seconds,
		Rate: float64(w.ops) / w.seconds, Lost: lost, CPUPerEvent: w.cpu, OtherCores: w.others}, err
}

// runFanoutRaw consumes the same events from a queue bound as a node's
// in-queue is (mass → exchange-in-ID → queue-in-ID with x-expires), acked as
// the node acks (prefetch, multiple-acks of what is waiting).
func runFanoutRaw(o *options, m cpuMeter, id, mass string, tokens, win, rep int, warmup, d time.Duration) (fanoutResult, error) {
	conn, err := amqpDial(o.amqpURL)
	if err != nil {
		return fanoutResult{}, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fanoutResult{}, err
	}
	t := topologyOf(id)
	if err := ch.ExchangeDeclare(mass, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fanoutResult{}, err
	}
	if err := t.declare(ch, amqp.Table{"x-expires": int64(nodeInQueueExpires)}); err != nil {
		return fanoutResult{}, err
	}
	if err := ch.ExchangeBind(t.exIn, "", mass, false, nil); err != nil {
		return fanoutResult{}, err
	}
	if err := ch.Qos(nodePrefetch, 0, false); err != nil {
		return fanoutResult{}, err
	}
	deliveries, err := ch.Consume(t.qIn, "piped-bench-fanout", false, true, false, false, nil)
	if err != nil {
		return fanoutResult{}, err
	}
	p := &eventPublisher{slots: make(chan struct{}, win)}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for first := range deliveries {
			p.delivered()
			last := first.DeliveryTag
		batch:
			for n := 1; n < nodeAckBatch; n++ {
				select {
				case d, ok := <-deliveries:
					if !ok {
						break batch
					}
					p.delivered()
					last = d.DeliveryTag
				default:
					break batch
				}
			}
			_ = ch.Ack(last, true)
		}
	}()
	w, lost, err := p.measure(o, m, mass, tokens, warmup, d)
	_ = ch.Cancel("piped-bench-fanout", false)
	<-consumed
	return fanoutResult{Path: "raw", Conns: 1, Tokens: tokens, Window: win, Rep: rep, Events: w.ops, Seconds: w.seconds,
		Rate: float64(w.ops) / w.seconds, Lost: lost, CPUPerEvent: w.cpu, OtherCores: w.others}, err
}
