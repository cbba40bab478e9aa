package routing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
)

// exchangeChannel is the part of *amqp.Channel that declares and checks
// the exchanges of routes and declares and binds their queues.
type exchangeChannel interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error
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
// neither); then it declares the queue of every route that has one and
// binds it to the route's exchange (see declareRouteQueues). Each exchange
// is handled once. A failed declare closes its channel, so every one that
// fails is followed by a fresh channel, and every missing exchange is
// reported, not only the first.
//
// A missing exchange is ErrExchangeMissing and an exchange or queue that
// exists with other settings ErrTopologyConflict, naming the route.
func declareRouteExchanges(open openChannel, t *routetable.Table, topo Topology) error {
	var declare, check []*routetable.Route
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
	queues := routeQueues(t)
	if len(declare)+len(check)+len(queues) == 0 {
		return nil
	}
	ch := &routeChannel{open: open}
	defer ch.close()
	if err := ch.reopen(); err != nil {
		return err
	}
	var errs []error
	failed := make(map[string]bool) // exchanges that are missing or in conflict
	for _, rt := range declare {
		if err := ch.ch.ExchangeDeclare(rt.Exchange, rt.Type, rt.Durable, false, false, false, nil); err != nil {
			var ae *amqp.Error
			if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
				return fmt.Errorf("routing: %s: declare exchange %q: %w", rt, rt.Exchange, err)
			}
			errs = append(errs, fmt.Errorf("%w: %s: exchange %q exists with other settings; the route declares it as a %s %s exchange: delete it (%s, or the management UI) or make type and durable match it (broker said: %s)",
				ErrTopologyConflict, rt, rt.Exchange, durability(rt.Durable), rt.Type, topo.deleteCommand("exchange", rt.Exchange), ae.Reason))
			failed[rt.Exchange] = true
			if err := ch.reopen(); err != nil {
				return err
			}
		}
	}
	for _, rt := range check {
		if err := ch.ch.ExchangeDeclarePassive(rt.Exchange, "topic", true, false, false, false, nil); err != nil {
			var ae *amqp.Error
			if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
				return fmt.Errorf("routing: %s: check exchange %q: %w", rt, rt.Exchange, err)
			}
			errs = append(errs, fmt.Errorf("%w: %s: exchange %q does not exist (vhost %q); declare it on the broker, or set declare = true on the route",
				ErrExchangeMissing, rt, rt.Exchange, topo.Vhost))
			failed[rt.Exchange] = true
			if err := ch.reopen(); err != nil {
				return err
			}
		}
	}
	if err := declareRouteQueues(ch, queues, failed, topo, &errs); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// routeChannel is the channel declareRouteExchanges works on, opened again
// after each declare the broker refused (which closes the channel).
type routeChannel struct {
	open openChannel
	ch   exchangeChannel // nil until reopen succeeds
}

func (c *routeChannel) reopen() error {
	c.close()
	ch, err := c.open()
	if err != nil {
		return fmt.Errorf("routing: open a channel for route exchanges: %w", err)
	}
	c.ch = ch
	return nil
}

func (c *routeChannel) close() {
	if c.ch != nil {
		_ = c.ch.Close()
		c.ch = nil
	}
}

// routeQueues returns the routes of t that have a queue, each queue, and
// each binding (queue, exchange, binding key), once: the first route that
// names it.
func routeQueues(t *routetable.Table) []*routetable.Route {
	var out []*routetable.Route
	seen := make(map[[3]string]bool)
	for _, rt := range t.Routes() {
		b := [3]string{rt.Queue, rt.Exchange, rt.BindingKey}
		if rt.Queue == "" || seen[b] {
			continue
		}
		seen[b] = true
		out = append(out, rt)
	}
	return out
}

// queueArgs are the arguments a route's queue is declared with: none for
// a classic queue, so that a backend that declares the same queue plainly
// (durable, no arguments) agrees with the node, and x-queue-type for a
// quorum queue, which the broker requires.
func queueArgs(queueType string) amqp.Table {
	if queueType == config.QueueQuorum {
		return amqp.Table{"x-queue-type": config.QueueQuorum}
	}
	return nil
}

// describeArgs says which arguments a queue is declared with.
func describeArgs(args amqp.Table) string {
	if len(args) == 0 {
		return "with no arguments"
	}
	parts := make([]string, 0, len(args))
	for k, v := range args {
		parts = append(parts, fmt.Sprintf("%s = %v", k, v))
	}
	slices.Sort(parts)
	return "with only the arguments " + strings.Join(parts, ", ")
}

// declareRouteQueues declares the queue of each route of queues (durable,
// of its type; each queue once) and binds it to the route's exchange with
// its binding key. A route whose exchange is in failed (missing or in
// conflict: already reported) is skipped. A queue that exists with another
// type or other arguments (406) is appended to errs as ErrTopologyConflict
// naming the route; any other failure is returned.
func declareRouteQueues(ch *routeChannel, queues []*routetable.Route, failed map[string]bool, topo Topology, errs *[]error) error {
	declared, refused := make(map[string]bool), make(map[string]bool)
	for _, rt := range queues {
		if failed[rt.Exchange] || refused[rt.Queue] {
			continue
		}
		if !declared[rt.Queue] {
			if _, err := ch.ch.QueueDeclare(rt.Queue, true, false, false, false, queueArgs(rt.QueueType)); err != nil {
				var ae *amqp.Error
				if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
					return fmt.Errorf("routing: %s: declare queue %q: %w", rt, rt.Queue, err)
				}
				*errs = append(*errs, fmt.Errorf("%w: %s: queue %q exists with other settings; the route declares it as a durable %s queue %s (set limits with a policy, not arguments): delete it (%s, or the management UI) or make queue_type match it (broker said: %s)",
					ErrTopologyConflict, rt, rt.Queue, rt.QueueType, describeArgs(queueArgs(rt.QueueType)), topo.deleteCommand("queue", rt.Queue), ae.Reason))
				refused[rt.Queue] = true
				if err := ch.reopen(); err != nil {
					return err
				}
				continue
			}
			declared[rt.Queue] = true
		}
		if err := ch.ch.QueueBind(rt.Queue, rt.BindingKey, rt.Exchange, false, nil); err != nil {
			return fmt.Errorf("routing: %s: bind queue %q to exchange %q with key %q: %w", rt, rt.Queue, rt.Exchange, rt.BindingKey, err)
		}
	}
	return nil
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
func (r *Router) SetRoutes(ctx context.Context, t *routetable.Table) error {
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
