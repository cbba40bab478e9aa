package routing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/route"
	"github.com/piped-dev/piped/telemetry"
)

// exchangeChannel is the part of *amqp.Channel that declares and checks
// the exchanges of routes.
type exchangeChannel interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	Close() error
}

// openChannel opens a channel for declareRouteExchanges.
type openChannel func() (exchangeChannel, error)

func channelsOf(conn *amqp.Connection) openChannel {
	return func() (exchangeChannel, error) { return conn.Channel() }
}

// declareRouteExchanges declares the exchange of every route of t with
// declare = true and checks passively that the exchange of every other
// route exists (the default route's and the default exchange need
// neither). Each exchange is handled once. A failed passive declare closes
// its channel, so every check that fails is followed by a fresh channel,
// and every missing exchange is reported, not only the first.
//
// A missing exchange is ErrExchangeMissing and an exchange that exists
// with another type or durability ErrTopologyConflict, naming the route.
func declareRouteExchanges(open openChannel, t *route.Table, topo Topology) error {
	var declare, check []*route.Route
	seen := make(map[string]bool)
	for _, rt := range t.Routes() {
		if rt.Exchange == "" || seen[rt.Exchange] {
			continue
		}
		if rt.Declare {
			seen[rt.Exchange] = true
			declare = append(declare, rt)
		}
	}
	for _, rt := range t.Routes() {
		if rt.Exchange == "" || seen[rt.Exchange] {
			continue
		}
		seen[rt.Exchange] = true
		check = append(check, rt)
	}
	if len(declare)+len(check) == 0 {
		return nil
	}
	var ch exchangeChannel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	reopen := func() error {
		if ch != nil {
			_ = ch.Close()
		}
		var err error
		if ch, err = open(); err != nil {
			ch = nil
			return fmt.Errorf("routing: open a channel for route exchanges: %w", err)
		}
		return nil
	}
	if err := reopen(); err != nil {
		return err
	}
	var errs []error
	for _, rt := range declare {
		if err := ch.ExchangeDeclare(rt.Exchange, rt.Type, rt.Durable, false, false, false, nil); err != nil {
			var ae *amqp.Error
			if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
				return fmt.Errorf("routing: %s: declare exchange %q: %w", rt, rt.Exchange, err)
			}
			errs = append(errs, fmt.Errorf("%w: %s: exchange %q exists with other settings; the route declares it as a %s %s exchange: delete it (%s, or the management UI) or make type and durable match it (broker said: %s)",
				ErrTopologyConflict, rt, rt.Exchange, durability(rt.Durable), rt.Type, topo.deleteCommand("exchange", rt.Exchange), ae.Reason))
			if err := reopen(); err != nil {
				return err
			}
		}
	}
	for _, rt := range check {
		if err := ch.ExchangeDeclarePassive(rt.Exchange, "topic", true, false, false, false, nil); err != nil {
			var ae *amqp.Error
			if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
				return fmt.Errorf("routing: %s: check exchange %q: %w", rt, rt.Exchange, err)
			}
			errs = append(errs, fmt.Errorf("%w: %s: exchange %q does not exist (vhost %q); declare it on the broker, or set declare = true on the route",
				ErrExchangeMissing, rt, rt.Exchange, topo.Vhost))
			if err := reopen(); err != nil {
				return err
			}
		}
	}
	return errors.Join(errs...)
}

func durability(durable bool) string {
	if durable {
		return "durable"
	}
	return "transient"
}

// startRoutes declares or checks the exchanges of the current route table
// on conn, the consume connection of a session that is starting, and makes
// conn the one SetRoutes uses until endRoutes.
func (r *Router) startRoutes(conn *amqp.Connection) error {
	r.routesMu.Lock()
	defer r.routesMu.Unlock()
	if err := declareRouteExchanges(channelsOf(conn), r.routes.Load(), r.topo); err != nil {
		return err
	}
	r.sessConn = conn
	return nil
}

// endRoutes forgets the session's connection: SetRoutes no longer declares.
func (r *Router) endRoutes() {
	r.routesMu.Lock()
	r.sessConn = nil
	r.routesMu.Unlock()
}

// SetRoutes makes t the route table (hot reload). While a broker session
// runs it first declares or checks t's route exchanges there and returns
// their error without storing t, so that no call is published to an
// exchange that does not exist; between sessions it stores t, and the next
// session checks it. Calls in flight keep the route they were published
// on. It blocks on the broker's answers; ctx is unused for now: amqp091's
// declares are not cancellable (the connection's heartbeat bounds them).
func (r *Router) SetRoutes(ctx context.Context, t *route.Table) error {
	r.routesMu.Lock()
	defer r.routesMu.Unlock()
	if r.sessConn != nil {
		if err := declareRouteExchanges(channelsOf(r.sessConn), t, r.topo); err != nil {
			return err
		}
	}
	r.routes.Store(t)
	return nil
}

// exchangeMeta is what the publish path needs per exchange, made once.
type exchangeMeta struct {
	publishSpan string             // "publish <exchange>"
	calls       prometheus.Counter // piped_calls_by_exchange_total{exchange}
}

// exchangeMetas maps exchange names to their exchangeMeta: lock-free reads
// of a copy-on-write map, so the call path neither locks nor allocates.
// Exchange names come from the configuration, so it stays small.
type exchangeMetas struct {
	m  atomic.Pointer[map[string]*exchangeMeta]
	mu sync.Mutex // serialises writers
}

func (e *exchangeMetas) get(metrics *telemetry.Metrics, exchange string) *exchangeMeta {
	if m := e.m.Load(); m != nil {
		if meta := (*m)[exchange]; meta != nil {
			return meta
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.m.Load()
	if old != nil {
		if meta := (*old)[exchange]; meta != nil {
			return meta
		}
	}
	name := exchange
	if name == "" {
		name = "(default)"
	}
	meta := &exchangeMeta{publishSpan: "publish " + name, calls: metrics.CallsByExchange.WithLabelValues(name)}
	next := make(map[string]*exchangeMeta, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[exchange] = meta
	e.m.Store(&next)
	return meta
}
