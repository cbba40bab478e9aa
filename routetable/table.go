package routetable

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/piped-dev/piped/config"
)

// Default describes the default route: where a method that no route
// matches goes (the seed's behaviour).
type Default struct {
	// NodeID fills {node} in routing keys.
	NodeID string
	// Exchange is the node's out-exchange (exchange-out-{node id}).
	Exchange string
	// Timeout is requests.timeout: the default route's timeout and that
	// of every route without one.
	Timeout time.Duration
	// Enabled is routing.default_route: false makes Lookup return nil for
	// methods no route matches (error unknown_method).
	Enabled bool
}

// DefaultOf returns the default route's description from a configuration.
func DefaultOf(cfg *config.Config) Default {
	return Default{
		NodeID:   cfg.Node.ID,
		Exchange: cfg.AMQP.ExchangeOutPrefix + cfg.Node.ID,
		Timeout:  cfg.Requests.Timeout,
		Enabled:  cfg.Routing.DefaultRoute,
	}
}

// FromConfig compiles cfg's routes and default route.
func FromConfig(cfg *config.Config) (*Table, error) {
	return Compile(cfg.Routes, DefaultOf(cfg))
}

// Table is a compiled route list. It is immutable and safe for concurrent
// use; Lookup neither locks nor allocates.
type Table struct {
	routes []*Route       // configured routes, in file order
	exact  map[string]int // exact match → index of the first route with it
	globs  []indexedGlob  // glob routes, in file order
	def    *Route         // the default route, also when disabled
	defOn  bool           // routing.default_route
}

type indexedGlob struct {
	index int // into routes
	glob
}

// Compile compiles routes (in file order) and the default route d. Each
// problem is an *Error naming the route; all of them are returned, joined.
func Compile(routes []config.Route, d Default) (*Table, error) {
	t := &Table{
		exact: make(map[string]int),
		def:   newDefault(d),
		defOn: d.Enabled,
	}
	var errs []error
	declared := make(map[string]int) // exchange → index of the first route that declares it
	queues := make(map[string]int)   // queue → index of the first route that declares it
	for i, cr := range routes {
		bad := func(key, format string, args ...any) {
			errs = append(errs, &Error{Index: i, Match: cr.Match, Key: key, Problem: fmt.Sprintf(format, args...)})
		}
		r := &Route{
			Name:            "routes[" + strconv.Itoa(i) + "] " + cr.Match,
			Index:           i,
			Match:           cr.Match,
			Exchange:        cr.Exchange,
			Declare:         cr.Declare,
			Type:            cr.Type,
			Durable:         cr.Durable,
			Timeout:         cr.Timeout,
			Rate:            cr.Rate,
			Burst:           cr.Burst,
			MaxPayloadBytes: cr.MaxPayloadBytes,
			Queue:           cr.Queue,
			QueueType:       cr.QueueType,
			BindingKey:      cr.BindingKey,
		}
		if r.Timeout == 0 {
			r.Timeout = d.Timeout
		}
		r.Expiration = expiration(r.Timeout)
		if r.Declare && r.Type == "" {
			r.Type = "topic"
		}
		if r.Rate > 0 && r.Burst == 0 {
			r.Burst = max(1, int(math.Ceil(r.Rate)))
		}

		// match
		switch m := cr.Match; {
		case m == "":
			bad("match", "required: an exact method name or a glob such as \"billing.*\"")
		case len(m) > maxPatternBytes:
			bad("match", "is %d bytes long; methods are at most %d", len(m), maxPatternBytes)
		case !utf8.ValidString(m):
			bad("match", "is not valid UTF-8")
		case isGlob(m):
			t.globs = append(t.globs, indexedGlob{index: i, glob: compileGlob(m)})
		default:
			if first, dup := t.exact[m]; dup {
				bad("match", "routes[%d] has the same match, so this route never takes a call", first)
			} else {
				t.exact[m] = i
			}
		}

		// exchange, declare, type, durable
		switch ex := cr.Exchange; {
		case len(ex) > maxKeyBytes:
			bad("exchange", "is %d bytes long; AMQP allows at most 255", len(ex))
		case ex == "" && cr.Declare:
			bad("declare", "the default exchange (exchange = \"\") cannot be declared; set declare = false")
		case strings.HasPrefix(ex, "amq.") && cr.Declare:
			bad("declare", "exchanges named amq.* are the broker's and cannot be declared; set declare = false")
		case cr.Declare:
			if first, ok := declared[ex]; ok {
				if f := routes[first]; typeOr(f.Type) != r.Type || f.Durable != r.Durable {
					bad("type", "routes[%d] declares exchange %q as %s (durable %v); one exchange has one type",
						first, ex, typeOr(f.Type), f.Durable)
				}
			} else {
				declared[ex] = i
			}
		}
		switch cr.Type {
		case "", "topic", "direct", "fanout", "headers":
		default:
			bad("type", "must be one of topic, direct, fanout, headers, got %q", cr.Type)
		}

		// queue, queue_type, binding_key
		if r.Queue != "" && r.QueueType == "" {
			r.QueueType = config.QueueClassic
		}
		switch {
		case cr.Queue == "" && (cr.QueueType != "" || cr.BindingKey != ""):
			bad("queue", "queue_type and binding_key need queue")
		case cr.Queue == "":
		case cr.Exchange == "":
			bad("queue", "needs a non-empty exchange to bind to")
		case r.QueueType != config.QueueClassic && r.QueueType != config.QueueQuorum:
			bad("queue_type", "must be %s or %s, got %q", config.QueueClassic, config.QueueQuorum, cr.QueueType)
		default:
			if first, ok := queues[cr.Queue]; ok && t.routes[first].QueueType != r.QueueType {
				bad("queue_type", "routes[%d] declares queue %q as %s; one queue has one type", first, cr.Queue, t.routes[first].QueueType)
			} else if !ok {
				queues[cr.Queue] = i
			}
		}

		// routing_key
		k, problem := compileKey(cr.RoutingKey, d.NodeID)
		if problem != "" {
			bad("routing_key", "%s", problem)
		}
		r.key = k

		// limits
		if cr.Timeout < 0 || cr.Timeout > 0 && cr.Timeout < time.Millisecond {
			bad("timeout", "must be 0 (requests.timeout) or at least 1ms, got %v", cr.Timeout)
		}
		if math.IsNaN(cr.Rate) || math.IsInf(cr.Rate, 0) || cr.Rate < 0 {
			bad("rate", "must be a finite number of calls per second, at least 0 (0: no limit), got %v", cr.Rate)
		}
		if cr.Burst < 0 {
			bad("burst", "must be at least 0, got %d", cr.Burst)
		} else if cr.Burst > 0 && cr.Rate == 0 {
			bad("burst", "has no effect without rate; set rate too")
		}
		if cr.MaxPayloadBytes < 0 {
			bad("max_payload_bytes", "must be at least 0 (0: no limit), got %d", cr.MaxPayloadBytes)
		}
		t.routes = append(t.routes, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func typeOr(kind string) string {
	if kind == "" {
		return "topic"
	}
	return kind
}

func newDefault(d Default) *Route {
	return &Route{
		Name:       "default",
		Index:      -1,
		Exchange:   d.Exchange,
		Durable:    true,
		Timeout:    d.Timeout,
		Expiration: expiration(d.Timeout),
		IsDefault:  true,
		key:        keyTemplate{kind: keyMethod},
	}
}

// expiration is the AMQP expiration of a call with timeout d, in milliseconds.
func expiration(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// Lookup returns the route of method: the first route in file order whose
// match matches it, else the default route, else (routing.default_route =
// false) nil. Patterns that do not start with "$" never match a method that
// does. It neither locks nor allocates; a nil Table has no routes.
func (t *Table) Lookup(method string) *Route {
	if t == nil {
		return nil
	}
	best := len(t.routes)
	if i, ok := t.exact[method]; ok {
		best = i
	}
	dollar := strings.HasPrefix(method, "$")
	for k := range t.globs {
		g := &t.globs[k]
		if g.index >= best {
			break // an earlier exact route wins
		}
		if dollar && !g.dollar {
			continue
		}
		if g.match(method) {
			return t.routes[g.index]
		}
	}
	if best < len(t.routes) {
		return t.routes[best]
	}
	if t.defOn {
		return t.def
	}
	return nil
}

// ForNotice returns the route a lifecycle notice ($connect, $disconnect,
// $presence) of method is published on: the route that matches it, else
// the default route, also when routing.default_route is false (notices are
// opted into by [lifecycle], so they always have a destination).
func (t *Table) ForNotice(method string) *Route {
	if r := t.Lookup(method); r != nil {
		return r
	}
	if t == nil {
		return nil
	}
	return t.def
}

// Default returns the default route, whether or not it is enabled.
func (t *Table) Default() *Route { return t.def }

// Routes returns the configured routes in file order, without the default
// route. The slice is the table's: do not modify it.
func (t *Table) Routes() []*Route {
	if t == nil {
		return nil
	}
	return t.routes
}

// Holder holds the current Table for hot reload: Load and Store are atomic,
// so a lookup sees either the old table or the new one, never a mix. Its
// zero value holds no table (every Lookup returns nil).
type Holder struct {
	t atomic.Pointer[Table]
}

// NewHolder returns a Holder holding t.
func NewHolder(t *Table) *Holder {
	h := &Holder{}
	h.t.Store(t)
	return h
}

// Load returns the current table.
func (h *Holder) Load() *Table { return h.t.Load() }

// Store makes t the current table. Calls already published keep their *Route.
func (h *Holder) Store(t *Table) { h.t.Store(t) }

// Lookup looks method up in the current table (see Table.Lookup).
func (h *Holder) Lookup(method string) *Route { return h.t.Load().Lookup(method) }
