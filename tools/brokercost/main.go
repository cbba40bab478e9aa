// Command brokercost makes the round trip of loadgen raw (publish a call to
// exchange-out-{node}, the echo backend answers to exchange-in-{node},
// consume queue-in-{node}) with the gateway's guarantees, and lets each
// difference between what a Piped node does and a plain reliable publisher
// be switched on alone, so that the broker's CPU per call can be measured
// for each (read /proc/<beam.smp pid>/stat before and after a run).
//
//	brokercost --node raw-1 --conns 100 --inflight 4 --duration 10s \
//	    [--one-conn] [--headers none|node|node+trace] [--expiration 30000] \
//	    [--in-expires 30m] [--props] [--ack-batch 64] [--prefetch 512]
//
// Without options it is "raw-reliable": confirms, mandatory, call
// properties (content type, correlation id, reply-to), manual acks one by
// one, prefetch 512, a publishing and a consuming connection.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type options struct {
	url, node, headers, expiration string
	conns, inflight, ackBatch      int
	prefetch                       int
	duration, inExpires            time.Duration
	oneConn, props, mandatory      bool
	confirms                       bool
}

func main() {
	var o options
	flag.StringVar(&o.url, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	flag.StringVar(&o.node, "node", "raw-bench", "node id whose topology is used (no piped node may run with it)")
	flag.IntVar(&o.conns, "conns", 100, "simulated client connections (tokens)")
	flag.IntVar(&o.inflight, "inflight", 4, "calls in flight per simulated connection")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to make calls")
	flag.BoolVar(&o.oneConn, "one-conn", false, "publish and consume on one AMQP connection (default: two, as piped)")
	flag.StringVar(&o.headers, "headers", "none", "header table: none, node (x-piped-node) or node+trace (and a traceparent)")
	flag.StringVar(&o.expiration, "expiration", "", "per-message expiration in ms (piped: requests.timeout)")
	flag.DurationVar(&o.inExpires, "in-expires", 0, "x-expires of queue-in (piped: 30m) and piped's mass binding; 0: none")
	flag.BoolVar(&o.props, "props", false, "message_id, timestamp and app_id as piped sets them")
	flag.IntVar(&o.ackBatch, "ack-batch", 1, "ack deliveries already received together with one multiple-ack, up to this many")
	flag.IntVar(&o.prefetch, "prefetch", 512, "consumer prefetch")
	flag.BoolVar(&o.mandatory, "mandatory", true, "publish with mandatory")
	flag.BoolVar(&o.confirms, "confirms", true, "publisher confirms")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "brokercost:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	consConn, err := amqp.Dial(o.url)
	if err != nil {
		return err
	}
	defer consConn.Close()
	pubConn := consConn
	if !o.oneConn {
		if pubConn, err = amqp.Dial(o.url); err != nil {
			return err
		}
		defer pubConn.Close()
	}
	ch, err := consConn.Channel()
	if err != nil {
		return err
	}
	in, out := "queue-in-"+o.node, "queue-out-"+o.node
	exIn, exOut := "exchange-in-"+o.node, "exchange-out-"+o.node
	for _, ex := range []string{exIn, exOut} {
		if err := ch.ExchangeDeclare(ex, "fanout", true, false, false, false, nil); err != nil {
			return err
		}
	}
	var inArgs amqp.Table
	if o.inExpires > 0 {
		inArgs = amqp.Table{"x-expires": o.inExpires.Milliseconds()}
		if err := ch.ExchangeDeclare("exchange-mass", "fanout", true, false, false, false, nil); err != nil {
			return err
		}
		if err := ch.ExchangeBind(exIn, "", "exchange-mass", false, nil); err != nil {
			return err
		}
	}
	if _, err := ch.QueueDeclare(in, true, false, false, false, inArgs); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(out, true, false, false, false, nil); err != nil {
		return err
	}
	if err := ch.QueueBind(in, "", exIn, false, nil); err != nil {
		return err
	}
	if err := ch.QueueBind(out, "", exOut, false, nil); err != nil {
		return err
	}
	defer func() {
		_, _ = ch.QueueDelete(in, false, false, false)
		_, _ = ch.QueueDelete(out, false, false, false)
		_ = ch.ExchangeDelete(exIn, false, false)
		_ = ch.ExchangeDelete(exOut, false, false)
	}()
	if err := ch.Qos(o.prefetch, 0, false); err != nil {
		return err
	}
	deliveries, err := ch.Consume(in, "", false, o.inExpires > 0, false, false, nil)
	if err != nil {
		return err
	}
	pub, err := pubConn.Channel()
	if err != nil {
		return err
	}
	if o.confirms {
		if err := pub.Confirm(false); err != nil {
			return err
		}
		confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 4096))
		go func() {
			for range confirms {
			}
		}()
	}

	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	prefix := o.node + "." + hex.EncodeToString(nonce) + "."
	var mu sync.Mutex
	sent := make(map[string]time.Time)
	var latencies []time.Duration
	seq := uint64(0)
	publish := func(token string) error {
		mu.Lock()
		seq++
		corr := prefix + strconv.FormatUint(seq, 36)
		now := time.Now()
		sent[corr] = now
		mu.Unlock()
		body := []byte(`{"id":` + strconv.FormatUint(seq, 10) + `,"method":"bench","token":"` + token + `","payload":{"n":1}}`)
		msg := amqp.Publishing{ContentType: "application/json", CorrelationId: corr, ReplyTo: in, Expiration: o.expiration, Body: body}
		switch o.headers {
		case "node":
			msg.Headers = amqp.Table{"x-piped-node": o.node}
		case "node+trace":
			var tid [16]byte
			var sid [8]byte
			_, _ = rand.Read(tid[:])
			_, _ = rand.Read(sid[:])
			msg.Headers = amqp.Table{"x-piped-node": o.node, "traceparent": "00-" + hex.EncodeToString(tid[:]) + "-" + hex.EncodeToString(sid[:]) + "-00"}
		}
		if o.props {
			msg.MessageId, msg.Timestamp, msg.AppId = corr, now, "piped"
		}
		return pub.Publish(exOut, "bench", o.mandatory, false, msg)
	}

	deadline := time.Now().Add(o.duration)
	start := time.Now()
	for i := range o.conns {
		for range o.inflight {
			if err := publish("bench-" + strconv.Itoa(i)); err != nil {
				return err
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.duration+30*time.Second)
	defer cancel()
	handle := func(del *amqp.Delivery) (bool, error) {
		var m struct{ Token string }
		_ = json.Unmarshal(del.Body, &m)
		mu.Lock()
		t0, ok := sent[del.CorrelationId]
		delete(sent, del.CorrelationId)
		left := len(sent)
		if ok {
			latencies = append(latencies, time.Since(t0))
		}
		mu.Unlock()
		if time.Now().Before(deadline) {
			return false, publish(m.Token)
		}
		return left == 0, nil
	}
	finished := false
	for !finished {
		var del amqp.Delivery
		var ok bool
		select {
		case del, ok = <-deliveries:
		case <-ctx.Done():
			return fmt.Errorf("calls did not come back in time")
		}
		if !ok {
			return fmt.Errorf("deliveries closed")
		}
		last := del.DeliveryTag
		var err error
		if finished, err = handle(&del); err != nil {
			return err
		}
	batch:
		for n := 1; n < o.ackBatch && !finished; n++ {
			select {
			case d, ok := <-deliveries:
				if !ok {
					break batch
				}
				last = d.DeliveryTag
				if finished, err = handle(&d); err != nil {
					return err
				}
			default:
				break batch
			}
		}
		if err := ch.Ack(last, o.ackBatch > 1); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	slices.Sort(latencies)
	q := func(p float64) time.Duration { return latencies[int(float64(len(latencies)-1)*p)] }
	fmt.Printf("brokercost: %d calls in %v = %.0f calls/s; latency p50 %v p99 %v max %v\n",
		len(latencies), elapsed.Round(time.Millisecond), float64(len(latencies))/elapsed.Seconds(), q(0.5), q(0.99), q(1))
	return nil
}
