package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Limits enforced by Validate.
const (
	maxNodeIDLen       = 64
	minMessageBytes    = 1024
	maxMessageBytes    = 64 << 20
	minSendQueueBytes  = 4096
	minPingInterval    = time.Second // below it a typo ("25ms" for "25s"); see docs/config.md
	maxTokenLength     = 4096
	maxAMQPNameLen     = 255 // AMQP short string: exchange and queue names
	maxPrefetch        = 65535
	maxHeartbeat       = 65535 * time.Second // AMQP carries it as a short, in seconds
	reservedNamePrefix = "amq."              // RabbitMQ refuses to declare such names
)

// Validate checks every value and returns an error naming each key that is
// wrong, one per line, such as
//
//	config: ws.max_message_bytes: must be at least 1024, got 12
//
// or nil. The AMQP URL is never part of the message, since it may hold a
// password.
func (c *Config) Validate() error {
	var v validator

	// node
	switch id := c.Node.ID; {
	case id == "":
		v.add("node.id", "required; set it with --nodeId (or --node-id), PIPED_NODE_ID or node.id in the config file")
	case !validNodeID(id):
		v.add("node.id", "must be 1 to %d characters from A-Z a-z 0-9 _ . -, got %s", maxNodeIDLen, quote(id, false))
	}

	if r := c.Node.Region; r != "" && !validNodeID(r) {
		v.add("node.region", "must be empty or 1 to %d characters from A-Z a-z 0-9 _ . -, got %s", maxNodeIDLen, quote(r, false))
	}

	// http
	between(&v, "http.port", c.HTTP.Port, 1, 65535)
	v.positive("http.read_header_timeout", c.HTTP.ReadHeaderTimeout)
	v.positive("http.idle_timeout", c.HTTP.IdleTimeout)
	between(&v, "http.max_header_bytes", c.HTTP.MaxHeaderBytes, 4<<10, 1<<20)
	if problem := checkInternalAddr(c.HTTP); problem != "" {
		v.add("http.internal_addr", "%s", problem)
	}

	// ws
	w := c.WS
	between(&v, "ws.max_message_bytes", w.MaxMessageBytes, minMessageBytes, maxMessageBytes)
	for i, o := range w.AllowedOrigins {
		if strings.TrimSpace(o) == "" {
			v.add("ws.allowed_origins", "element %d is empty; list origins such as \"https://example.com\", or \"*\" for any", i)
		}
	}
	v.positive("ws.pong_timeout", w.PongTimeout)
	if w.PingInterval < minPingInterval {
		v.add("ws.ping_interval", "must be at least %v, got %v", minPingInterval, w.PingInterval)
	} else if w.PongTimeout > 0 && w.PingInterval >= w.PongTimeout {
		v.add("ws.ping_interval", "must be less than ws.pong_timeout (%v), got %v", w.PongTimeout, w.PingInterval)
	}
	v.positive("ws.write_timeout", w.WriteTimeout)
	v.atLeast("ws.send_queue_bytes", w.SendQueueBytes, minSendQueueBytes)
	v.atLeast("ws.max_inflight", w.MaxInflight, 1)
	between(&v, "ws.max_depth", w.MaxDepth, 1, 1000)
	v.bucket("ws.rate_per_second", "ws.rate_burst", w.RatePerSecond, w.RateBurst, "limit")
	v.bucket("ws.frame_rate", "ws.frame_burst", w.FrameRate, w.FrameBurst, "budget")
	v.atLeast("ws.max_connections", w.MaxConnections, 0)
	between(&v, "ws.token_max_length", w.TokenMaxLength, 1, maxTokenLength)

	// amqp
	a := c.AMQP
	if len(a.URLs) == 0 {
		if problem := checkAMQPURL(a.URL); problem != "" {
			v.add("amqp.url", "%s", problem)
		}
	}
	validateURLs(&v, a.URLs)
	for _, p := range []struct{ key, value string }{
		{"amqp.exchange_in_prefix", a.ExchangeInPrefix},
		{"amqp.exchange_out_prefix", a.ExchangeOutPrefix},
		{"amqp.queue_in_prefix", a.QueueInPrefix},
		{"amqp.queue_out_prefix", a.QueueOutPrefix},
	} {
		switch n := len(p.value) + len(c.Node.ID); {
		case p.value == "":
			v.add(p.key, "must not be empty")
		case strings.HasPrefix(p.value, reservedNamePrefix):
			v.add(p.key, "must not start with %q, which the broker reserves, got %s", reservedNamePrefix, quote(p.value, false))
		case n > maxAMQPNameLen:
			v.add(p.key, "with node.id, names are %d bytes long; AMQP allows at most %d", n, maxAMQPNameLen)
		}
	}
	if a.ExchangeInPrefix != "" && a.ExchangeInPrefix == a.ExchangeOutPrefix {
		v.add("amqp.exchange_out_prefix", "must differ from amqp.exchange_in_prefix, both are %s", quote(a.ExchangeInPrefix, false))
	}
	if a.QueueInPrefix != "" && a.QueueInPrefix == a.QueueOutPrefix {
		v.add("amqp.queue_out_prefix", "must differ from amqp.queue_in_prefix, both are %s", quote(a.QueueInPrefix, false))
	}
	switch m := a.MassExchange; {
	case m == "":
		v.add("amqp.mass_exchange", "must not be empty")
	case strings.HasPrefix(m, reservedNamePrefix):
		v.add("amqp.mass_exchange", "must not start with %q, which the broker reserves, got %s", reservedNamePrefix, quote(m, false))
	case len(m) > maxAMQPNameLen:
		v.add("amqp.mass_exchange", "is %d bytes long; AMQP allows at most %d", len(m), maxAMQPNameLen)
	}
	switch e := a.EventsExchange; {
	case e == "":
	case strings.HasPrefix(e, reservedNamePrefix):
		v.add("amqp.events_exchange", "must not start with %q, which the broker reserves, got %s", reservedNamePrefix, quote(e, false))
	case len(e) > maxAMQPNameLen:
		v.add("amqp.events_exchange", "is %d bytes long; AMQP allows at most %d", len(e), maxAMQPNameLen)
	case e == a.MassExchange:
		v.add("amqp.events_exchange", "must differ from amqp.mass_exchange (a direct exchange, not a fanout), both are %s", quote(e, false))
	case e == a.ExchangeInPrefix+c.Node.ID || e == a.ExchangeOutPrefix+c.Node.ID:
		v.add("amqp.events_exchange", "must not be one of the node's own exchanges, got %s", quote(e, false))
	}
	if a.EventsUnbindDelay < 0 {
		v.add("amqp.events_unbind_delay", "must be at least 0 (0 unbinds at once), got %v", a.EventsUnbindDelay)
	}
	if e := a.InQueueExpires; e < 0 || e > 0 && e < time.Second {
		v.add("amqp.in_queue_expires", "must be 0 (never expire) or at least 1s, got %v", e)
	}
	between(&v, "amqp.prefetch", a.Prefetch, 1, maxPrefetch)
	between(&v, "amqp.max_message_bytes", a.MaxMessageBytes, 1<<10, 128<<20)
	v.positive("amqp.confirm_timeout", a.ConfirmTimeout)
	if a.ReconnectMin <= 0 {
		v.add("amqp.reconnect_min", "must be greater than 0, got %v", a.ReconnectMin)
	} else if a.ReconnectMax < a.ReconnectMin {
		v.add("amqp.reconnect_max", "must be at least amqp.reconnect_min (%v), got %v", a.ReconnectMin, a.ReconnectMax)
	}
	if h := a.Heartbeat; h < 0 || h > 0 && h < time.Second || h > maxHeartbeat {
		v.add("amqp.heartbeat", "must be 0 or between 1s and %v (AMQP counts whole seconds), got %v", maxHeartbeat, h)
	}

	// requests
	if c.Requests.Timeout < time.Millisecond {
		v.add("requests.timeout", "must be at least 1ms, got %v", c.Requests.Timeout)
	}

	// shutdown
	if c.Shutdown.DrainTimeout < 0 {
		v.add("shutdown.drain_timeout", "must be at least 0, got %v", c.Shutdown.DrainTimeout)
	}
	if c.Shutdown.Timeout <= 0 {
		v.add("shutdown.timeout", "must be greater than 0, got %v", c.Shutdown.Timeout)
	} else if c.Shutdown.Timeout <= c.Shutdown.DrainTimeout {
		v.add("shutdown.timeout", "must be greater than shutdown.drain_timeout (%v), got %v", c.Shutdown.DrainTimeout, c.Shutdown.Timeout)
	}

	// log
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "auto", "json", "text")

	// telemetry
	v.oneOf("telemetry.protocol", c.Telemetry.Protocol, "grpc", "http/protobuf")
	if r := c.Telemetry.SampleRatio; !(r >= 0 && r <= 1) {
		v.add("telemetry.sample_ratio", "must be between 0 and 1, got %v", r)
	}

	// lifecycle, auth, [[routes]]: validate_routes.go
	validateLifecycle(&v, c.Lifecycle)
	validateAuth(&v, c.Auth)
	validateRoutes(&v, c.Routes)

	return v.err()
}

// validNodeID reports whether id is 1 to 64 bytes of [A-Za-z0-9_.-].
func validNodeID(id string) bool {
	if len(id) < 1 || len(id) > maxNodeIDLen {
		return false
	}
	for i := range len(id) {
		switch b := id[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '_', b == '.', b == '-':
		default:
			return false
		}
	}
	return true
}

// checkInternalAddr returns what is wrong with http.internal_addr, or "".
func checkInternalAddr(h HTTP) string {
	if h.InternalAddr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(h.InternalAddr)
	if err != nil {
		return fmt.Sprintf("must be host:port such as \":9090\" or \"127.0.0.1:9090\", got %s", quote(h.InternalAddr, false))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port must be 1 to 65535, got %s", quote(port, false))
	}
	if n == h.Port && (host == h.Host || host == "" || h.Host == "") {
		return fmt.Sprintf("must not be the client port (http.host %s, http.port %d), got %s", quote(h.Host, false), h.Port, quote(h.InternalAddr, false))
	}
	return ""
}

// checkAMQPURL returns what is wrong with an AMQP URL, or "". The message
// never contains the URL or a part of it that could be the password.
func checkAMQPURL(raw string) string {
	const form = "amqp://user:password@host:5672/vhost"
	if strings.IndexFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return "must not contain spaces or control characters (value not shown: it may hold a password)"
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the whole URL: do not use it.
		return "is not a valid URL of the form " + form + "; percent-encode special characters in the user name and password (value not shown: it may hold a password)"
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		if u.Scheme == "" || u.Opaque != "" {
			// Without "//", what looks like a scheme may be a user name.
			return "must start with amqp:// or amqps://, as in " + form + " (value not shown: it may hold a password)"
		}
		return fmt.Sprintf("scheme must be amqp or amqps, got %q", u.Scheme)
	}
	if u.Opaque != "" {
		return "must be of the form " + form + " (value not shown: it may hold a password)"
	}
	if strayAt(u) {
		return `has an "@" after the host; percent-encode "/", "?", "#" and "@" in the user name and password (value not shown: it may hold a password)`
	}
	return ""
}

// validateURLs checks amqp.urls, which is used instead of amqp.url when not
// empty: each element like amqp.url, none twice, all naming one virtual
// host (the node's exchanges and queues live in one). No message quotes a
// URL or a part of one.
func validateURLs(v *validator, urls []string) {
	first := -1 // the first valid element, whose virtual host the others must name
	const key = "amqp.urls"
	for i, raw := range urls {
		if problem := checkAMQPURL(raw); problem != "" {
			v.add(key, "element %d: %s", i, problem)
			continue
		}
		switch j := slices.Index(urls, raw); {
		case j < i:
			v.add(key, "element %d: is the same address as element %d; list each broker node once", i, j)
		case first < 0:
			first = i
		case urlVhost(raw) != urlVhost(urls[first]):
			v.add(key, "element %d: names another virtual host than element %d; the addresses are the nodes of one cluster, and the node's exchanges and queues live in one virtual host", i, first)
		}
	}
}

// urlVhost returns the virtual host of an AMQP URL that checkAMQPURL
// accepted: its path without the leading "/", and "/" for none.
func urlVhost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	if vh := strings.TrimPrefix(u.Path, "/"); vh != "" {
		return vh
	}
	return "/"
}

// validator collects the problems Validate finds.
type validator struct{ errs []error }

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) err() error { return errors.Join(v.errs...) }

// between checks lo ≤ n ≤ hi.
func between[T int | int64](v *validator, key string, n, lo, hi T) {
	if n < lo {
		v.add(key, "must be at least %d, got %d", lo, n)
	} else if n > hi {
		v.add(key, "must be at most %d, got %d", hi, n)
	}
}

// bucket checks a token bucket's rate (finite, at least 0; 0 disables
// what, "limit" or "budget") and burst (at least 1 with a rate).
func (v *validator) bucket(rateKey, burstKey string, rate float64, burst int, what string) {
	switch {
	case math.IsNaN(rate) || rate < 0:
		v.add(rateKey, "must be at least 0 (0 disables the %s), got %v", what, rate)
	case math.IsInf(rate, 0):
		v.add(rateKey, "must be finite (0 disables the %s), got %v", what, rate)
	}
	if rate > 0 && burst < 1 {
		v.add(burstKey, "must be at least 1 when %s is above 0, got %d", rateKey, burst)
	} else if burst < 0 {
		v.add(burstKey, "must be at least 0, got %d", burst)
	}
}

func (v *validator) atLeast(key string, n, lo int) {
	if n < lo {
		v.add(key, "must be at least %d, got %d", lo, n)
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.add(key, "must be greater than 0, got %v", d)
	}
}

func (v *validator) oneOf(key, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		v.add(key, "must be one of %s, got %s", strings.Join(allowed, ", "), quote(value, false))
	}
}
