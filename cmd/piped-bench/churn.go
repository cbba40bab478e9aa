package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// churnResult is the rate of binding operations (exchange.bind and
// exchange.unbind, each one op) that K channels sustain between a durable
// direct exchange and a transient one (see churnTarget) while Standing other bindings are in place, on one broker node
// or on node 1 of the harness's cluster (Broker "single" or "cluster").
type churnResult struct {
	Broker     string             `json:"broker"`
	Channels   int                `json:"channels"`
	Standing   int                `json:"standing_bindings"`
	Rep        int                `json:"rep"`
	Ops        int64              `json:"ops"`
	Seconds    float64            `json:"seconds"`
	Rate       float64            `json:"ops_per_s"`
	Latency    latencySummary     `json:"latency"`
	CPUPerOp   map[string]float64 `json:"cpu_us_per_op"`
	OtherCores float64            `json:"other_cores"`
}

// routingKey is a binding key of the form the node uses for a token: 12
// lower-case hex digits (the low 48 bits of v).
func routingKey(v uint64) string {
	s := strconv.FormatUint(v&(1<<48-1), 16)
	return strings.Repeat("0", 12-len(s)) + s
}

// parseCounts parses a comma-separated list of integers of at least least.
func parseCounts(list string, least int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		if n < least {
			return nil, fmt.Errorf("%d: at least %d", n, least)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

// churnTarget is the topology of targeted events, of the harness's own:
// exchange (durable, direct: amqp.events_exchange) → dest (the node's
// exchange-in-ID:events: non-durable, auto-delete, internal, fanout) →
// queue (durable, with the in-queue's x-expires). runChurn binds and
// unbinds token keys between exchange and dest, as a node does: transient
// bindings, no disk transaction.
type churnTarget struct {
	exchange, queue string
	conn            *amqp.Connection
	standing        int // bindings in place besides those being churned
}

// reset (re)declares the exchange and an empty queue: durable, the queue
// with the x-expires of a node's in-queue. Deleting the queue removes its
// standing bindings at once.
func (t *churnTarget) reset() error {
	ch, err := t.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(t.exchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare %s: %w", t.exchange, err)
	}
	if _, err := ch.QueueDelete(t.queue, false, false, false); err != nil {
		return fmt.Errorf("delete %s: %w", t.queue, err)
	}
	if _, err := ch.QueueDeclare(t.queue, true, false, false, false, amqp.Table{"x-expires": int64(nodeInQueueExpires)}); err != nil {
		return fmt.Errorf("declare %s: %w", t.queue, err)
	}
	// Deleting the queue auto-deleted dest with its bindings.
	if err := ch.ExchangeDeclare(t.dest(), amqp.ExchangeFanout, false, true, true, false, nil); err != nil {
		return fmt.Errorf("declare %s: %w", t.dest(), err)
	}
	if err := ch.QueueBind(t.queue, "", t.dest(), false, nil); err != nil {
		return fmt.Errorf("bind %s: %w", t.queue, err)
	}
	t.standing = 0
	return nil
}

// dest is the node's events exchange that token keys are bound to.
func (t *churnTarget) dest() string { return t.queue + ":events" }

// grow adds standing bindings with random keys until n are in place, from
// 16 channels at once.
func (t *churnTarget) grow(n int) error {
	const par = 16
	todo := n - t.standing
	if todo <= 0 {
		return nil
	}
	var wg sync.WaitGroup
	errs := make([]error, par)
	for w := range par {
		share := todo / par
		if w < todo%par {
			share++
		}
		wg.Go(func() {
			ch, err := t.conn.Channel()
			if err != nil {
				errs[w] = err
				return
			}
			defer ch.Close()
			for range share {
				if err := ch.ExchangeBind(t.dest(), routingKey(rand.Uint64()), t.exchange, false, nil); err != nil {
					errs[w] = fmt.Errorf("bind %s: %w", t.dest(), err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	t.standing = n
	return nil
}

// delete removes the queue and the exchange.
func (t *churnTarget) delete() {
	if ch, err := t.conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(t.queue, false, false, false)
		_ = ch.ExchangeDelete(t.exchange, false, false)
		ch.Close()
	}
}

// churnLoad is k goroutines, each with its own channel, binding a fresh
// random key and unbinding it again, one operation at a time, until
// stopping.
type churnLoad struct {
	counters
	firstErr atomic.Pointer[error]
}

func (l *churnLoad) worker(ch *amqp.Channel, t *churnTarget) {
	var lat []time.Duration
	defer func() { l.addLatencies(lat) }()
	op := func(do func() error) bool {
		t0 := time.Now()
		if err := do(); err != nil {
			l.firstErr.CompareAndSwap(nil, &err)
			return false
		}
		if l.measuring.Load() {
			lat = append(lat, time.Since(t0))
		}
		l.answered.Add(1)
		return true
	}
	for !l.stopping.Load() {
		key := routingKey(rand.Uint64())
		if !op(func() error { return ch.ExchangeBind(t.dest(), key, t.exchange, false, nil) }) ||
			!op(func() error { return ch.ExchangeUnbind(t.dest(), key, t.exchange, false, nil) }) {
			return
		}
	}
}

// runChurn measures k channels churning bindings on t through one window.
func runChurn(t *churnTarget, m cpuMeter, broker string, k, rep int, warmup, d time.Duration) (churnResult, error) {
	l := &churnLoad{}
	var chans []*amqp.Channel
	defer func() {
		for _, ch := range chans {
			ch.Close()
		}
	}()
	for range k {
		ch, err := t.conn.Channel()
		if err != nil {
			return churnResult{}, err
		}
		chans = append(chans, ch)
	}
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Go(func() { l.worker(ch, t) })
	}
	win := measureWindow(&l.counters, m, warmup, d)
	l.stopping.Store(true)
	wg.Wait()
	if err := l.firstErr.Load(); err != nil {
		return churnResult{}, fmt.Errorf("churn: %w", *err)
	}
	r := churnResult{Broker: broker, Channels: k, Standing: t.standing, Rep: rep, Ops: win.ops, Seconds: win.seconds,
		Latency: summarize(l.latencies), CPUPerOp: win.cpu, OtherCores: win.others}
	if win.seconds > 0 {
		r.Rate = float64(win.ops) / win.seconds
	}
	return r, nil
}

// runChurnLevels runs churn at each of o.churnK at each standing level, reps
// times, on the broker at url (broker: "single" or "cluster"), the order of
// the concurrency levels rotated each repetition. The CPU of m's roles
// named broker… is summed as "broker".
func runChurnLevels(url, broker string, o *options, name string, standing []int, m cpuMeter) ([]churnResult, error) {
	conn, err := amqpDial(url)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	t := &churnTarget{exchange: name, queue: name, conn: conn}
	defer t.delete()
	var brokerRoles []string
	for role := range m {
		if strings.HasPrefix(role, "broker") {
			brokerRoles = append(brokerRoles, role)
		}
	}
	var out []churnResult
	for r := range o.reps {
		if err := t.reset(); err != nil {
			return out, err
		}
		for _, s := range standing {
			if s > t.standing {
				t0 := time.Now()
				if err := t.grow(s); err != nil {
					return out, err
				}
				logf("churn (%s) %d/%d: %d standing bindings made in %.1f s", broker, r+1, o.reps, s, time.Since(t0).Seconds())
			}
			for i := range o.churnK {
				k := o.churnK[(i+r)%len(o.churnK)]
				res, err := runChurn(t, m, broker, k, r+1, o.warmup, o.duration)
				if err != nil {
					return out, err
				}
				sumRoles(res.CPUPerOp, "broker", brokerRoles)
				logf("churn (%s) %d/%d: K = %d, %d standing: %.0f ops/s, broker %.1f µs per op, p50 %.2f ms",
					broker, r+1, o.reps, k, s, res.Rate, res.CPUPerOp["broker"], res.Latency.P50)
				out = append(out, res)
			}
		}
	}
	return out, nil
}

// sumRoles sets cpu[into] to the sum of cpu's roles (of those present),
// unless roles is just into itself.
func sumRoles(cpu map[string]float64, into string, roles []string) {
	if len(roles) == 0 || (len(roles) == 1 && roles[0] == into) {
		return
	}
	sum, found := 0.0, false
	for _, r := range roles {
		if v, ok := cpu[r]; ok {
			sum, found = sum+v, true
		}
	}
	if found {
		cpu[into] = sum
	}
}
