// Package routetable compiles the configured [[routes]] and the default route
// into a Table that maps a call's method to its destination: exchange,
// routing key, timeout and per-connection limits. Lookups are lock-free and
// allocate nothing; a Holder swaps whole tables atomically on reload, and a
// call keeps the *Route it was published on.
package routetable

import (
	"strconv"
	"strings"
	"time"
)

// maxKeyBytes is AMQP's limit on a routing key (a short string).
const maxKeyBytes = 255

// Route is one compiled destination. It is immutable once compiled and
// safe for concurrent use; pointers to it stay valid after the table that
// holds it was replaced.
type Route struct {
	// Name identifies the route in logs and spans: "routes[2] billing.*"
	// (its position in the file, from 0, and its match) or "default".
	Name string
	// Index is the route's position in [[routes]], from 0; -1 for the default route.
	Index int
	// Match is the pattern as written; "" for the default route.
	Match string
	// Exchange is where calls are published; "" is the default exchange
	// (the routing key is then a queue name).
	Exchange string
	// Declare, Type and Durable: with Declare the node declares Exchange
	// as a Type exchange at every broker session; without it Exchange must
	// exist (checked passively). Type is "topic" when declare = true left it empty.
	Declare bool
	Type    string
	Durable bool
	// Timeout is the call's deadline: the route's timeout, or
	// requests.timeout when the route has none. Expiration is the same in
	// milliseconds, the AMQP expiration the call is published with.
	Timeout    time.Duration
	Expiration string
	// Rate is calls per second per connection on this route (0: no limit
	// beyond ws.rate_per_second); Burst is its bucket size, resolved
	// (never 0 when Rate is above 0).
	Rate  float64
	Burst int
	// MaxPayloadBytes bounds len(payload) of a call on this route; 0: none.
	MaxPayloadBytes int
	// Queue, when not "", is a durable queue of QueueType ("classic" or
	// "quorum") that the node declares at every broker session and binds
	// to Exchange with BindingKey (after Exchange is declared or checked).
	Queue      string
	QueueType  string
	BindingKey string
	// IsDefault marks the default route: the node's out-exchange, declared
	// with the node's own topology rather than as a route exchange.
	IsDefault bool

	key keyTemplate
}

// String names the route as errors do: routes[2] (match "billing.*"), or
// "the default route".
func (r *Route) String() string {
	if r.IsDefault {
		return "the default route"
	}
	return "routes[" + strconv.Itoa(r.Index) + "] (match " + strconv.Quote(r.Match) + ")"
}

// RoutingKey returns the routing key of a call of method on this route,
// cut to AMQP's 255 bytes. A key that is constant (literals and {node})
// or exactly "{method}" — the default — costs nothing; any other template
// with {method} builds a new string per call (one allocation).
func (r *Route) RoutingKey(method string) string {
	switch r.key.kind {
	case keyConst:
		return r.key.constant
	case keyMethod:
		return truncate(method)
	}
	n := 0
	for _, p := range r.key.parts {
		if p.method {
			n += len(method)
		} else {
			n += len(p.lit)
		}
	}
	var b strings.Builder
	b.Grow(min(n, maxKeyBytes))
	for _, p := range r.key.parts {
		if p.method {
			b.WriteString(method)
		} else {
			b.WriteString(p.lit)
		}
	}
	return truncate(b.String())
}

func truncate(s string) string {
	if len(s) > maxKeyBytes {
		return s[:maxKeyBytes]
	}
	return s
}

// keyKind is how a routing key is made.
type keyKind uint8

const (
	keyMethod keyKind = iota // exactly "{method}"
	keyConst                 // no {method}: computed once
	keyBuilt                 // literals and {method}: built per call
)

// keyTemplate is a compiled routing_key.
type keyTemplate struct {
	kind     keyKind
	constant string    // keyConst
	parts    []keyPart // keyBuilt
}

type keyPart struct {
	lit    string
	method bool
}

// compileKey parses a routing_key template with the placeholders {method}
// and {node}; problem is "" when it is valid. "" is the empty key (the
// configuration's default, "{method}", is filled in by config.Load).
func compileKey(tmpl, nodeID string) (k keyTemplate, problem string) {
	if tmpl == "{method}" {
		return keyTemplate{kind: keyMethod}, ""
	}
	var parts []keyPart
	hasMethod := false
	lit := func(s string) {
		if s == "" {
			return
		}
		if n := len(parts); n > 0 && !parts[n-1].method {
			parts[n-1].lit += s
			return
		}
		parts = append(parts, keyPart{lit: s})
	}
	for s := tmpl; s != ""; {
		open := strings.IndexAny(s, "{}")
		if open < 0 {
			lit(s)
			break
		}
		if s[open] == '}' {
			return k, `"}" without "{"; placeholders are {method} and {node}`
		}
		lit(s[:open])
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return k, `"{" without "}"; placeholders are {method} and {node}`
		}
		name := s[open+1 : open+end]
		switch name {
		case "method":
			parts = append(parts, keyPart{method: true})
			hasMethod = true
		case "node":
			lit(nodeID)
		case "token":
			return k, "placeholder {token} is not allowed: session tokens must not reach routing keys, " +
				"the management UI or broker logs, and their dots would break topic routing; " +
				"the token is in the message body (use {method} or {node})"
		default:
			return k, "unknown placeholder {" + name + "}; placeholders are {method} and {node}"
		}
		s = s[open+end+1:]
	}
	if !hasMethod {
		c := ""
		if len(parts) == 1 {
			c = parts[0].lit
		}
		if len(c) > maxKeyBytes {
			return k, "is longer than AMQP's 255 bytes"
		}
		return keyTemplate{kind: keyConst, constant: c}, ""
	}
	return keyTemplate{kind: keyBuilt, parts: parts}, ""
}
