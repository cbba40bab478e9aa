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

// fanoutResult is the event rate delivered to clients through a node (Path
// "piped"), drained by a node that holds the tokens of only one event in
// Every (Path "filter"), or consumed from a plain queue bound the same way
// (Path "raw").
type fanoutResult struct {
	Path        string             `json:"path"`
	Conns       int                `json:"conns"`
	Tokens      int                `json:"tokens"`
	Every       int                `json:"held_every,omitempty"`
	Window      int                `json:"window"`
	Rep         int                `json:"rep"`
	Events      int64              `json:"events"`
	Seconds     float64            `json:"seconds"`
	Rate        float64            `json:"events_per_s"`
	Lost        int64              `json:"lost"`
	CPUPerEvent map[string]float64 `json:"cpu_us_per_event"`
	OtherCores  float64            `json:"other_cores"`
}

// unheldTokens is how many distinct tokens no client holds the filter
// publishes events for.
const unheldTokens = 100000

// eventPublisher publishes events to a mass exchange, keeping at most
// window of them undelivered. One event in every is for a token a client
// holds (round robin over tokens), the others for tokens nobody holds: a
// node drains its in-queue in order, so each delivered event tells that
// the every − 1 before it are gone too.
type eventPublisher struct {
	counters
	slots     chan struct{}
	published atomic.Int64
	tokens    int
	every     int
}

func newEventPublisher(window, tokens, every int) *eventPublisher {
	return &eventPublisher{slots: make(chan struct{}, window), tokens: tokens, every: every}
}

// delivered counts one event received by a client (or the raw consumer),
// and the every − 1 before it that it received nothing of.
func (p *eventPublisher) delivered() {
	for range p.every {
		select {
		case <-p.slots:
		default:
		}
	}
	p.answered.Add(int64(p.every))
}

// token is the token of the i-th event.
func (p *eventPublisher) token(i int) string {
	if i%p.every == p.every-1 {
		return "fan-" + strconv.Itoa((i/p.every)%p.tokens)
	}
	return "none-" + strconv.Itoa(i%unheldTokens)
}

// run publishes until stopping, and then to the end of the group of every
// events (ending with a delivered one) it is in.
func (p *eventPublisher) run(ch *amqp.Channel, mass string) error {
	for i := 0; i%p.every != 0 || !p.stopping.Load(); i++ {
		p.slots <- struct{}{}
		body := []byte(`{"type":"event","event":"bench","token":"` + p.token(i) + `","payload":{"n":1}}`)
		if err := ch.Publish(mass, "", false, false, amqp.Publishing{ContentType: "application/json", Body: body}); err != nil {
			return err
		}
		p.published.Add(1)
	}
	return nil
}

// measure runs the publisher on its own connection through one window and
// waits for the events still on their way.
func (p *eventPublisher) measure(o *options, m cpuMeter, mass string, warmup, d time.Duration) (window, int64, error) {
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
	go func() { errc <- p.run(ch, mass) }()
	w := measureWindow(&p.counters, m, warmup, d)
	p.stopping.Store(true)
	select {
	case err = <-errc:
	case <-time.After(time.Second):
		// Events were lost and the publisher waits for slots: free them.
		for waiting := true; waiting; {
			select {
			case err = <-errc:
				waiting = false
			case <-p.slots:
			}
		}
	}
	deadline := time.Now().Add(drainTimeout)
	for p.answered.Load() < p.published.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return w, p.published.Load() - p.answered.Load(), err
}

// runFanoutNode connects conns clients with tokens distinct tokens to n and
// publishes events to n's mass exchange, one in every for their tokens.
func runFanoutNode(o *options, n *node, m cpuMeter, conns, tokens, every, win, rep int, warmup, d time.Duration) (fanoutResult, error) {
	p := newEventPublisher(win, tokens, every)
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
	w, lost, err := p.measure(o, m, n.mass, warmup, d)
	path := "piped"
	if every > 1 {
		path = "filter"
	}
	return fanoutResult{Path: path, Conns: conns, Tokens: tokens, Every: every, Window: win, Rep: rep, Events: w.ops, Seconds: w.seconds,
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
	p := newEventPublisher(win, tokens, 1)
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
	w, lost, err := p.measure(o, m, mass, warmup, d)
	_ = ch.Cancel("piped-bench-fanout", false)
	<-consumed
	return fanoutResult{Path: "raw", Conns: 1, Tokens: tokens, Window: win, Rep: rep, Events: w.ops, Seconds: w.seconds,
		Rate: float64(w.ops) / w.seconds, Lost: lost, CPUPerEvent: w.cpu, OtherCores: w.others}, err
}
