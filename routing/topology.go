package routing

import (
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/config"
)

// Topology names one node's exchanges and queues. The names and kinds are
// those of the original Piped, so backends written for it work unchanged.
type Topology struct {
	ExchangeIn, ExchangeOut, QueueIn, QueueOut, Mass string
	// InQueueExpires is x-expires on the in-queue (0: none): the queue of a
	// node that is gone for good is deleted after this long unused.
	InQueueExpires time.Duration
	// Vhost is the virtual host of the broker addresses, named in advice on conflicts.
	Vhost string
	// Events is amqp.events_exchange, the durable direct exchange of
	// targeted events; "" when the mode is off. Declare declares it.
	Events string
	// NodeEvents is the node's own exchange of targeted events,
	// ExchangeIn + ":events" ("" when the mode is off): non-durable,
	// auto-delete and internal, of kind fanout, bound once to the in-queue.
	// The per-token bindings go from Events to it (exchange to exchange,
	// key = the token's key; see eventBindings): a binding whose
	// destination is not durable is transient, so binding and unbinding a
	// token costs the broker no disk transaction. The node binds every held
	// token again after each reconnect, so losing them with a broker
	// restart (or the exchange itself: Declare makes it again) is harmless.
	// It goes by itself with its last binding to a destination, that is
	// when the in-queue expires (x-expires) or is deleted, taking the
	// token bindings with it; ':' is not allowed in node ids, so the name
	// cannot be another node's exchange.
	NodeEvents string
	// Transient declares the in-queue and the out-queue non-durable (on a
	// cluster, amqp.urls): such a queue goes with the broker node that held
	// it, and is declared again on the next one. A durable classic queue
	// whose node is down cannot be declared, used or deleted (404) until
	// that node is back. See docs/deploy.md, "On a RabbitMQ cluster".
	Transient bool
}

// NewTopology derives the names for node id from the configuration.
func NewTopology(cfg config.AMQP, nodeID string) Topology {
	return Topology{
		ExchangeIn:     cfg.ExchangeInPrefix + nodeID,
		ExchangeOut:    cfg.ExchangeOutPrefix + nodeID,
		QueueIn:        cfg.QueueInPrefix + nodeID,
		QueueOut:       cfg.QueueOutPrefix + nodeID,
		Mass:           cfg.MassExchange,
		InQueueExpires: cfg.InQueueExpires,
		Vhost:          vhostOf(cfg.BrokerURLs()[0]),
		Events:         cfg.EventsExchange,
		NodeEvents:     nodeEvents(cfg, nodeID),
		Transient:      cfg.Cluster(),
	}
}

// nodeEvents names the node's exchange of targeted events ("" when the
// mode is off).
func nodeEvents(cfg config.AMQP, nodeID string) string {
	if cfg.EventsExchange == "" {
		return ""
	}
	return cfg.ExchangeInPrefix + nodeID + ":events"
}

// vhostOf returns the virtual host of an AMQP URL ("/" when it names none
// or does not parse).
func vhostOf(url string) string {
	u, err := amqp.ParseURI(url)
	if err != nil || u.Vhost == "" {
		return "/"
	}
	return u.Vhost
}

// declarer is the part of *amqp.Channel that Declare uses.
type declarer interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error
	ExchangeBind(destination, key, source string, noWait bool, args amqp.Table) error
}

// inQueueArgs are the arguments of the in-queue. The out-queue has none:
// backends written for the original declare it themselves without arguments,
// and a mismatch would fail their declare.
func (t Topology) inQueueArgs() amqp.Table {
	if t.InQueueExpires <= 0 {
		return nil
	}
	return amqp.Table{"x-expires": t.InQueueExpires.Milliseconds()}
}

// Declare declares every exchange, queue and binding of the node. It is
// idempotent and runs on every (re)connect. A 406 from the broker is
// reported as ErrTopologyConflict naming the object and what to do.
func (t Topology) Declare(ch declarer) error {
	for _, ex := range []string{t.ExchangeIn, t.ExchangeOut, t.Mass} {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			return t.conflict(err, "exchange", ex, "it must be a durable fanout exchange")
		}
	}
	if t.Events != "" {
		if err := ch.ExchangeDeclare(t.Events, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
			return t.conflict(err, "exchange", t.Events, "amqp.events_exchange must be a durable direct exchange")
		}
		if err := ch.ExchangeDeclare(t.NodeEvents, amqp.ExchangeFanout, false, true, true, false, nil); err != nil {
			return t.conflict(err, "exchange", t.NodeEvents, "it must be a non-durable, auto-delete, internal fanout exchange")
		}
	}
	durable, kind := !t.Transient, "durable"
	if t.Transient {
		kind = "non-durable (amqp.urls is set)"
	}
	if _, err := ch.QueueDeclare(t.QueueIn, durable, false, false, false, t.inQueueArgs()); err != nil {
		return t.conflict(err, "queue", t.QueueIn, fmt.Sprintf("it must be %s with arguments %v", kind, t.inQueueArgs()))
	}
	if _, err := ch.QueueDeclare(t.QueueOut, durable, false, false, false, nil); err != nil {
		return t.conflict(err, "queue", t.QueueOut, "it must be "+kind+" with no arguments")
	}
	if err := ch.QueueBind(t.QueueIn, "", t.ExchangeIn, false, nil); err != nil {
		return fmt.Errorf("routing: bind %s to %s: %w", t.QueueIn, t.ExchangeIn, err)
	}
	if err := ch.QueueBind(t.QueueOut, "", t.ExchangeOut, false, nil); err != nil {
		return fmt.Errorf("routing: bind %s to %s: %w", t.QueueOut, t.ExchangeOut, err)
	}
	if err := ch.ExchangeBind(t.ExchangeIn, "", t.Mass, false, nil); err != nil {
		return fmt.Errorf("routing: bind exchange %s to %s: %w", t.ExchangeIn, t.Mass, err)
	}
	if t.NodeEvents != "" {
		if err := ch.QueueBind(t.QueueIn, "", t.NodeEvents, false, nil); err != nil {
			return fmt.Errorf("routing: bind %s to %s: %w", t.QueueIn, t.NodeEvents, err)
		}
	}
	return nil
}

// conflict reports a failed declare; a 406 becomes ErrTopologyConflict
// with the command that deletes the object of that kind.
func (t Topology) conflict(err error, kind, name, want string) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
		return fmt.Errorf("%w: %s %q exists with other settings; %s: delete it (%s, or the management UI) or change node.id or the amqp prefixes (broker said: %s)",
			ErrTopologyConflict, kind, name, want, t.deleteCommand(kind, name), ae.Reason)
	}
	return fmt.Errorf("routing: declare %s %s: %w", kind, name, err)
}

// deleteCommand is the shell command that deletes the named queue or
// exchange in the topology's vhost: rabbitmqctl deletes queues but not
// exchanges, which need rabbitmqadmin (the management plugin).
func (t Topology) deleteCommand(kind, name string) string {
	vhost := ""
	if t.Vhost != "" && t.Vhost != "/" {
		vhost = " -p " + shellQuote(t.Vhost)
	}
	if kind == "queue" {
		return "rabbitmqctl" + vhost + " delete_queue " + shellQuote(name)
	}
	if vhost != "" {
		vhost = " -V " + shellQuote(t.Vhost)
	}
	return "rabbitmqadmin" + vhost + " delete exchange name=" + shellQuote(name)
}

// shellQuote quotes s for a POSIX shell unless it is plainly safe.
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:/=@%+", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
