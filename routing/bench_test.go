package routing

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/protocol"
)

// nopAnswerer discards answers.
type nopAnswerer struct{}

func (nopAnswerer) Answer(id, msg []byte) {}

// BenchmarkDispatchResult measures routing one result to its caller by
// correlation id: parse, pending lookup, delivery.
func BenchmarkDispatchResult(b *testing.B) {
	r := newTestRouter(&fakeHub{}, time.Hour)
	d := newDispatcher(r)
	body := []byte(`{"id":1,"type":"result","token":"0123456789abcdef","method":"get-article","payload":{"articleId":1,"title":"hello"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		c := &call{from: nopAnswerer{}, token: "0123456789abcdef", id: []byte("1"), method: "get-article", start: time.Now()}
		c.span = noopSpan
		r.pending.assign(c)
		r.pending.insert(c, time.Hour, r.expire)
		d.route(&amqp.Delivery{Body: body, CorrelationId: r.pending.correlationID(c)})
	}
}

// BenchmarkDispatchEvent measures routing one event to a token's connections.
func BenchmarkDispatchEvent(b *testing.B) {
	hub := &countHub{}
	r := newTestRouter(hub, time.Hour)
	d := newDispatcher(r)
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = []byte(`{"type":"event","event":"balance-changed","token":"tok-` + strconv.Itoa(i) + `","payload":{"balance":345.55}}`)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d.route(&amqp.Delivery{Body: bodies[i%len(bodies)]})
		i++
	}
}

// BenchmarkCall measures Router.Call on a connected router: the call span,
// correlation id, message body, queueing for the publisher, and the
// publisher's goroutine publishing it to a channel that takes it at once.
func BenchmarkCall(b *testing.B) {
	ch := newFakeChannel(false)
	ch.discard = true
	r, p := queueRouter(b, ch, time.Hour)
	f := &protocol.Frame{ID: []byte("1"), Method: "get-article", Payload: []byte(`{"articleId":1}`)}
	ctx := b.Context()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		r.Call(ctx, "0123456789abcdef", f, r.Routes().Load().Default(), nopAnswerer{})
		if n++; n%1024 == 0 { // keep the queue from filling and the pending table small
			for len(p.jobs) > 0 {
				runtime.Gosched()
			}
			r.pending.takeAll()
		}
	}
}

type countHub struct{ n int }

func (h *countHub) Broadcast(token string, msg []byte) int          { h.n++; return 1 }
func (h *countHub) SendTo(token, connection string, msg []byte) int { h.n++; return 1 }
func (h *countHub) BroadcastAll(msg []byte) int                     { h.n++; return 1 }
func (h *countHub) DisconnectToken(token, connection string, code int, reason string) int {
	h.n++
	return 1
}

// BenchmarkDispatchResultByMatch measures routing one result whose backend
// did not copy the correlation id and re-escaped the id (PHP's "a\/1"):
// parse, canonical id key, pending lookup by value, delivery.
func BenchmarkDispatchResultByMatch(b *testing.B) {
	r := newTestRouter(&fakeHub{}, time.Hour)
	d := newDispatcher(r)
	body := []byte(`{"id":"a\/1","type":"result","token":"0123456789abcdef","method":"get-article","payload":{"articleId":1,"title":"hello"}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		c := &call{from: nopAnswerer{}, token: "0123456789abcdef", id: []byte(`"a/1"`), method: "get-article", start: time.Now()}
		c.span = noopSpan
		r.pending.assign(c)
		r.pending.insert(c, time.Hour, r.expire)
		d.route(&amqp.Delivery{Body: body})
	}
}
