// Package config defines Piped's configuration and loads it from built-in
// defaults, a TOML file, PIPED_* environment variables and command-line flags,
// later sources winning.
package config

import "time"

// Config is the whole configuration of one Piped node. Every field has a
// documented default (see Defaults and piped.toml.example).
type Config struct {
	Node      Node      `koanf:"node"`
	HTTP      HTTP      `koanf:"http"`
	WS        WS        `koanf:"ws"`
	AMQP      AMQP      `koanf:"amqp"`
	Requests  Requests  `koanf:"requests"`
	Shutdown  Shutdown  `koanf:"shutdown"`
	Log       Log       `koanf:"log"`
	Telemetry Telemetry `koanf:"telemetry"`
	Routing   Routing   `koanf:"routing"`
	Lifecycle Lifecycle `koanf:"lifecycle"`
	Auth      Auth      `koanf:"auth"`
	Reload    Reload    `koanf:"reload"`
	// Routes is the ordered route table ([[routes]] in TOML): the first
	// route whose Match matches a call's method takes it.
	Routes []Route `koanf:"routes"`
}

// Node identifies this node on the broker.
type Node struct {
	// ID names this node's exchanges and queues; [A-Za-z0-9_.-], 1–64 bytes. Required.
	ID string `koanf:"id"`
	// Region, when set, is the constant label region on every metric and the
	// resource attribute cloud.region on every span; 0–64 bytes of
	// [A-Za-z0-9_.-]. Empty takes FLY_REGION.
	Region string `koanf:"region"`
}

// HTTP is the listening sockets.
type HTTP struct {
	// Host is the address to listen on; empty listens on all interfaces.
	Host string `koanf:"host"`
	// Port is the TCP port to listen on, 1–65535.
	Port int `koanf:"port"`
	// InternalAddr, when set (host:port, e.g. ":9090"), is a second listener
	// serving /healthz, /readyz and /metrics; the client port then serves
	// only /api/. Empty serves everything on Port.
	InternalAddr string `koanf:"internal_addr"`
	// ReadHeaderTimeout is the time allowed to read a request's headers.
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout"`
	// IdleTimeout closes a keep-alive HTTP connection (a health check, a
	// refused upgrade; never a WebSocket) that is idle this long; above 0.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// MaxHeaderBytes bounds the bytes of a request's headers (and its
	// request line); 4 KiB to 1 MiB. Larger requests are answered 431.
	MaxHeaderBytes int `koanf:"max_header_bytes"`
}

// WS holds the WebSocket limits and timings.
type WS struct {
	// MaxMessageBytes is the largest message a client may send; 1024 bytes to 64 MiB.
	MaxMessageBytes int64 `koanf:"max_message_bytes"`
	// AllowedOrigins lists the Origin header values accepted on upgrade; "*" accepts any.
	AllowedOrigins []string `koanf:"allowed_origins"`
	// PingInterval is how often the node pings an idle client; at least 1s and less than PongTimeout.
	PingInterval time.Duration `koanf:"ping_interval"`
	// PongTimeout closes a client that sent nothing (not even a pong) for this long.
	PongTimeout time.Duration `koanf:"pong_timeout"`
	// WriteTimeout is the time allowed to write one message to a client.
	WriteTimeout time.Duration `koanf:"write_timeout"`
	// SendQueueBytes bounds the bytes queued for one client; beyond it the client is closed (4008).
	SendQueueBytes int `koanf:"send_queue_bytes"`
	// MaxInflight bounds the calls with an id awaiting their answer, per connection.
	MaxInflight int `koanf:"max_inflight"`
	// MaxDepth bounds how deeply a call's payload nests objects and arrays
	// (the payload object itself is depth 1); 1 to 1000. Deeper calls are
	// answered bad_request and never reach a backend, whose JSON decoder
	// may recurse (Python's stops near 1000 with RecursionError).
	MaxDepth int `koanf:"max_depth"`
	// RatePerSecond and RateBurst are the per-connection call token bucket; 0 disables it.
	RatePerSecond float64 `koanf:"rate_per_second"`
	RateBurst     int     `koanf:"rate_burst"`
	// FrameRate and FrameBurst are the per-connection frame budget that every
	// frame a client sends draws from (calls, pings, bad and refused frames,
	// control frames); 0 disables it. Over budget, messages are refused
	// (too_many_requests); FrameBurst frames beyond that close the
	// connection with 1008 (rate_limited).
	FrameRate  float64 `koanf:"frame_rate"`
	FrameBurst int     `koanf:"frame_burst"`
	// MaxConnections refuses upgrades beyond this many open connections on the node; 0 = no limit.
	MaxConnections int `koanf:"max_connections"`
	// TokenMaxLength is the longest session token accepted in the URL path, in bytes; 1–4096.
	TokenMaxLength int `koanf:"token_max_length"`
}

// AMQP is the broker connection and topology.
type AMQP struct {
	// URL is the broker, amqp:// or amqps://. It may hold a password: log
	// Config.Redacted, never the URL itself.
	URL string `koanf:"url"`
	// URLs, when not empty, is used instead of URL: the addresses of the
	// nodes of one RabbitMQ cluster, each checked like URL and as secret.
	// A node starts at the address StartIndex gives for its id and moves on
	// to the next one at every new attempt after a failed dial or an ended
	// session. It also makes the node's own queues non-durable, so that
	// they go with a broker node that is lost and can be declared again on
	// the next one (see docs/deploy.md, "On a RabbitMQ cluster").
	URLs []string `koanf:"urls"`
	// ExchangeInPrefix, followed by the node id, names the exchange backends
	// publish to for this node's clients.
	ExchangeInPrefix string `koanf:"exchange_in_prefix"`
	// ExchangeOutPrefix, followed by the node id, names the exchange the node
	// publishes calls to.
	ExchangeOutPrefix string `koanf:"exchange_out_prefix"`
	// QueueInPrefix, followed by the node id, names the queue the node consumes.
	QueueInPrefix string `koanf:"queue_in_prefix"`
	// QueueOutPrefix, followed by the node id, names the queue backends
	// consume the node's calls from.
	QueueOutPrefix string `koanf:"queue_out_prefix"`
	// MassExchange is the fanout exchange for messages to every node.
	MassExchange string `koanf:"mass_exchange"`
	// InQueueExpires is x-expires on the in-queue only; 0 disables it.
	InQueueExpires time.Duration `koanf:"in_queue_expires"`
	// Prefetch is the AMQP prefetch count of the node's consumer; 1–65535.
	Prefetch int `koanf:"prefetch"`
	// MaxMessageBytes bounds a backend message (result, event, control)
	// the node takes from its in-queue; larger ones are dropped and
	// counted (too_big), and a call a dropped result carries the
	// correlation id of is answered bad_result. 1 KiB to 128 MiB.
	MaxMessageBytes int `koanf:"max_message_bytes"`
	// ConfirmTimeout is how long a publish waits for the broker's confirm.
	ConfirmTimeout time.Duration `koanf:"confirm_timeout"`
	// ReconnectMin and ReconnectMax bound the delay between reconnect attempts.
	ReconnectMin time.Duration `koanf:"reconnect_min"`
	ReconnectMax time.Duration `koanf:"reconnect_max"`
	// Heartbeat is the AMQP heartbeat proposed to the broker, in whole seconds; 0 takes the broker's.
	Heartbeat time.Duration `koanf:"heartbeat"`
	// EventsExchange, when not empty, turns on targeted events: a durable
	// direct exchange the node declares and to which it binds its own
	// exchange (exchange-in-{id}:events, non-durable, bound to the in-queue)
	// with the key of every token it holds a connection of (the token's
	// telemetry.TokenHash). Empty: off (events reach nodes through
	// MassExchange only).
	EventsExchange string `koanf:"events_exchange"`
	// EventsUnbindDelay is how long a token's binding to EventsExchange
	// stays after its last connection on the node closed; 0 unbinds at once.
	EventsUnbindDelay time.Duration `koanf:"events_unbind_delay"`
}

// BrokerURLs returns the broker addresses the node connects to: URLs when
// it is not empty, else URL alone. The slice is the caller's.
func (a AMQP) BrokerURLs() []string {
	if len(a.URLs) > 0 {
		return append([]string(nil), a.URLs...)
	}
	return []string{a.URL}
}

// Cluster reports whether the node runs on a RabbitMQ cluster (URLs is set),
// whose node it may lose: its own queues are then non-durable.
func (a AMQP) Cluster() bool { return len(a.URLs) > 0 }

// Requests governs calls.
type Requests struct {
	// Timeout answers a call with an id that got no result in time with error "timeout";
	// calls are published with this AMQP expiration.
	Timeout time.Duration `koanf:"timeout"`
}

// Shutdown governs the graceful drain on SIGTERM/SIGINT.
type Shutdown struct {
	// DrainTimeout bounds the graceful drain before connections are closed.
	DrainTimeout time.Duration `koanf:"drain_timeout"`
	// Timeout bounds the whole shutdown; it is greater than DrainTimeout.
	Timeout time.Duration `koanf:"timeout"`
}

// Log configures the slog logger.
type Log struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // auto, json, text
}

// Telemetry configures tracing; the OTEL_* environment variables win over it.
type Telemetry struct {
	// ServiceName is the service.name of the traces.
	ServiceName string `koanf:"service_name"`
	// Endpoint is the OTLP endpoint traces are exported to.
	Endpoint string `koanf:"endpoint"`
	Protocol string `koanf:"protocol"` // grpc or http/protobuf
	// SampleRatio is the fraction of traces sampled, 0–1.
	SampleRatio float64 `koanf:"sample_ratio"`
}

// Routing governs calls that no route matches.
type Routing struct {
	// DefaultRoute sends a method no route matches to the node's out-exchange
	// (the seed's behaviour); false answers such calls with unknown_method.
	DefaultRoute bool `koanf:"default_route"`
}

// Route sends the calls whose method matches Match to Exchange.
type Route struct {
	// Match is an exact method name or a glob: "*" matches any run of
	// characters other than ".", "?" one character other than ".", "**" any
	// run including ".". Patterns match the lifecycle methods ($connect,
	// $disconnect, $presence) only when they start with "$".
	Match string `koanf:"match"`
	// Exchange is the destination exchange; "" is the default exchange.
	Exchange string `koanf:"exchange"`
	// RoutingKey is a template with the placeholders {method} and {node}.
	RoutingKey string `koanf:"routing_key"`
	// Declare declares Exchange (of Type, durable per Durable) at start and
	// after every reconnect; false requires it to exist (checked passively).
	Declare bool   `koanf:"declare"`
	Type    string `koanf:"type"` // topic, direct, fanout or headers; used with Declare
	Durable bool   `koanf:"durable"`
	// Timeout overrides requests.timeout for calls on this route; 0 keeps it.
	Timeout time.Duration `koanf:"timeout"`
	// Rate limits calls per second per connection on this route; 0: no limit
	// beyond ws.rate_per_second. Burst is its bucket size; 0: max(1, ceil(Rate)).
	Rate  float64 `koanf:"rate"`
	Burst int     `koanf:"burst"`
	// MaxPayloadBytes bounds the raw JSON of a call's payload on this route; 0: no bound beyond ws.max_message_bytes.
	MaxPayloadBytes int `koanf:"max_payload_bytes"`
	// Queue, when set, is a durable queue the node declares at every broker
	// session, next to a declared Exchange, and binds to Exchange with
	// BindingKey: the queue that backends share. It needs a non-empty Exchange.
	Queue string `koanf:"queue"`
	// QueueType is Queue's type: "classic" (Load's default when Queue is
	// set) or "quorum" (replicated; it survives the loss of a broker node).
	// It needs Queue.
	QueueType string `koanf:"queue_type"`
	// BindingKey binds Queue to Exchange. It needs Queue. Load's default is
	// "#" for a topic exchange and "" otherwise; a direct exchange, or one
	// whose type is unknown (declare = false without type), needs it set.
	BindingKey string `koanf:"binding_key"`
}

// The queue types of a route's queue (Route.QueueType).
const (
	QueueClassic = "classic"
	QueueQuorum  = "quorum"
)

// Lifecycle turns on connection notices to the backend.
type Lifecycle struct {
	// Connect and Disconnect publish a $connect / $disconnect notice per connection.
	Connect    bool `koanf:"connect"`
	Disconnect bool `koanf:"disconnect"`
	// Authorize makes the upgrade wait for the backend's answer to $connect
	// (implies Connect), at most AuthorizeTimeout; when the backend does not
	// answer in time or cannot be reached, AuthorizeFailure decides: "deny"
	// (HTTP 503) or "allow".
	Authorize        bool          `koanf:"authorize"`
	AuthorizeTimeout time.Duration `koanf:"authorize_timeout"`
	AuthorizeFailure string        `koanf:"authorize_failure"`
	// RefreshInterval, when not 0, publishes a $presence notice listing this
	// node's connections this often.
	RefreshInterval time.Duration `koanf:"refresh_interval"`
}

// Auth is how the path token of /api/{token} is checked.
type Auth struct {
	// Mode is "none" (the token is an opaque session id) or "jwt".
	Mode string `koanf:"mode"`
	// JWTSecret verifies HS256 tokens. A secret: never logged.
	JWTSecret string `koanf:"jwt_secret"`
	// JWTPublicKeys are PEM public keys (RSA or ECDSA) verifying RS256/ES256 tokens.
	JWTPublicKeys []string `koanf:"jwt_public_keys"`
	// JWKSURL is a JWKS document fetched at start and refreshed every JWKSRefresh in the background.
	JWKSURL     string        `koanf:"jwks_url"`
	JWKSRefresh time.Duration `koanf:"jwks_refresh"`
	// Issuer and Audience, when set, must match the iss and aud claims.
	Issuer   string `koanf:"issuer"`
	Audience string `koanf:"audience"`
	// Leeway is the clock skew allowed on exp and nbf.
	Leeway time.Duration `koanf:"leeway"`
}

// Reload governs runtime reloads of routes and limits (SIGHUP always reloads).
type Reload struct {
	// Watch also reloads when the configuration file changes.
	Watch bool `koanf:"watch"`
}

// Defaults returns the built-in configuration; Node.ID is empty and must be set.
func Defaults() Config {
	return Config{
		HTTP: HTTP{Port: 8080, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 32 << 10},
		WS: WS{
			MaxMessageBytes: 64 << 10,
			AllowedOrigins:  []string{"*"},
			PingInterval:    25 * time.Second,
			PongTimeout:     60 * time.Second,
			WriteTimeout:    10 * time.Second,
			SendQueueBytes:  1 << 20,
			MaxInflight:     128,
			MaxDepth:        64,
			FrameRate:       400,
			FrameBurst:      800,
			RatePerSecond:   200,
			RateBurst:       400,
			MaxConnections:  15000,
			TokenMaxLength:  256,
		},
		AMQP: AMQP{
			URL:               "amqp://guest:guest@localhost:5672/",
			URLs:              []string{},
			ExchangeInPrefix:  "exchange-in-",
			ExchangeOutPrefix: "exchange-out-",
			QueueInPrefix:     "queue-in-",
			QueueOutPrefix:    "queue-out-",
			MassExchange:      "exchange-mass",
			InQueueExpires:    30 * time.Minute,
			Prefetch:          512,
			MaxMessageBytes:   1 << 20,
			ConfirmTimeout:    5 * time.Second,
			ReconnectMin:      100 * time.Millisecond,
			ReconnectMax:      10 * time.Second,
			Heartbeat:         10 * time.Second,
			EventsUnbindDelay: 30 * time.Second,
		},
		Requests:  Requests{Timeout: 30 * time.Second},
		Shutdown:  Shutdown{DrainTimeout: 10 * time.Second, Timeout: 25 * time.Second},
		Log:       Log{Level: "info", Format: "auto"},
		Telemetry: Telemetry{ServiceName: "piped", Protocol: "grpc", SampleRatio: 1},
		Routing:   Routing{DefaultRoute: true},
		Lifecycle: Lifecycle{AuthorizeTimeout: 5 * time.Second, AuthorizeFailure: "deny"},
		Auth:      Auth{Mode: "none", JWTPublicKeys: []string{}, JWKSRefresh: 5 * time.Minute, Leeway: 5 * time.Second},
	}
}
