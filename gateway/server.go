// Package gateway is the edge of a node: the echo app with the WebSocket
// endpoint /api/:token, the health and metrics endpoints, every client
// connection and their registry. It knows nothing about AMQP: calls go to a
// Router, which main wires to the routing package.
package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/internal/wsframe"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
)

// Router takes calls to the backend. Call publishes f on route rt (never
// nil) and must not block for the broker's answer; it arranges for exactly
// one answer to reach from (for calls with an id); f's bytes are not
// retained after it returns. ctx is done when the calling connection has
// ended: the router should then forget the call (stop its timer, let go of
// from) rather than answer it.
type Router interface {
	Call(ctx context.Context, token string, f *protocol.Frame, rt *routetable.Route, from protocol.Answerer)
}

// Routes finds the route of a call's method; nil means no route takes it
// (error unknown_method). It is called on every call: it must not block
// (routetable.Holder: an atomic load and a lookup without allocation).
type Routes interface {
	Lookup(method string) *routetable.Route
}

// Verifier checks the path token of /api/{token} before the upgrade (like
// derp's verifyClient) and says which address the connection gets. It is
// called on the upgrading request's goroutine, concurrently, with the
// request's context; it must not block on the network (keys are fetched
// ahead of time). An error refuses the upgrade with HTTP 401; its text is
// logged at debug level and must not contain the token.
type Verifier interface {
	Verify(ctx context.Context, token string) (Identity, error)
}

// Identity is who a verified token speaks for.
type Identity struct {
	// Subject is the connection's address: the hub registers the connection
	// under it, calls carry it as "token", events and control messages
	// address it. It must pass the same rules as a path token (charset and
	// ws.token_max_length), else the upgrade is refused.
	Subject string
	// Expires, when not zero, is when the identity stops being valid: an
	// open connection is closed then with 4003 (token_expired).
	Expires time.Time
}

// Readiness says whether the node can take calls: nil, or the reason not.
type Readiness interface {
	Ready() error
}

// Options are the server's dependencies.
type Options struct {
	NodeID string // names connection ids
	WS     config.WS
	// Routes gives each call its route. Nil: every method takes one route
	// to the default exchange (for tests; main passes the routetable.Holder).
	Routes    Routes
	Router    Router
	Readiness Readiness
	Hub       *Hub
	// Verifier checks path tokens; nil is mode "none": the token is an
	// opaque session id and the connection's address.
	Verifier Verifier
	Logger   *slog.Logger
	Metrics  *telemetry.Metrics
	Tracing  *telemetry.Tracing // nil: no spans, client traceparent ignored
	// Lifecycle says which connection notices to send and whether to
	// authorize connections; Notifier and Authorizer carry them out (nil:
	// none, whatever Lifecycle says).
	Lifecycle  config.Lifecycle
	Notifier   Notifier
	Authorizer Authorizer
	// Binder, when not nil, subscribes the node to the targeted events of
	// every token it holds (amqp.events_exchange): the server holds the
	// token before the connection is announced ($connect, or the
	// authorization call) and registered, and the connection releases it
	// when it ends.
	Binder TokenBinder
}

// Server is the HTTP side of a node: the client endpoint /api/{token} and
// the internal endpoints /healthz, /readyz and /metrics, served together
// (Handler) or on two listeners (ClientHandler and InternalHandler).
type Server struct {
	// Set at construction.
	all      *echo.Echo // every route, for the one-port setup
	client   *echo.Echo // /api/ only
	internal *echo.Echo // /healthz, /readyz, /metrics
	hub      *Hub
	ready    Readiness
	upgrader websocket.Upgrader
	opening  atomic.Int64 // upgrades past the ws.max_connections check, not yet in the hub
	cfg      *connConfig
	ws       config.WS // the fields Limits does not cover
	router   Router
	verifier Verifier // nil: the token is the address
	hooks    lifecycleHooks
	binder   TokenBinder // nil: targeted events are off
	log      *slog.Logger
	metrics  *telemetry.Metrics
}

// New builds the server and its routes: GET /api/:token (WebSocket),
// /healthz, /readyz and /metrics.
func New(o Options) *Server {
	routes := o.Routes
	if routes == nil {
		t, err := routetable.Compile(nil, routetable.Default{NodeID: o.NodeID, Timeout: 30 * time.Second, Enabled: true})
		if err != nil {
			panic(err) // no routes: nothing to be invalid
		}
		routes = t
	}
	s := &Server{
		hub:      o.Hub,
		ready:    o.Readiness,
		ws:       o.WS,
		router:   o.Router,
		verifier: o.Verifier,
		hooks:    newLifecycleHooks(o),
		binder:   o.Binder,
		log:      o.Logger,
		metrics:  o.Metrics,
		cfg: &connConfig{
			nodeID:         o.NodeID,
			maxMessage:     o.WS.MaxMessageBytes,
			maxDepth:       o.WS.MaxDepth,
			frameRate:      o.WS.FrameRate,
			frameBurst:     o.WS.FrameBurst,
			pingInterval:   o.WS.PingInterval,
			pongTimeout:    o.WS.PongTimeout,
			writeTimeout:   o.WS.WriteTimeout,
			sendQueueBytes: o.WS.SendQueueBytes,
			routes:         routes,
			log:            o.Logger,
			metrics:        o.Metrics,
			tracing:        o.Tracing,
			poll:           newPoller(),
			binder:         o.Binder,
		},
	}
	s.SetLimits(LimitsOf(o.WS))
	s.cfg.disconnect = s.hooks.disconnect
	s.upgrader = websocket.Upgrader{
		// No buffers of gorilla's own: it reuses net/http's for the
		// handshake, and the connection reads and writes frames itself
		// afterwards (reader.go, writer.go), so nothing of gorilla's is kept.
		CheckOrigin: s.checkOrigin,
		Error:       s.upgradeError,
	}
	ws := echo.WrapHandler(http.HandlerFunc(s.ServeWS))
	metrics := echo.WrapHandler(o.Metrics.Handler())
	clientRoutes := func(e *echo.Echo) {
		e.GET("/api/:token", ws)
		e.GET("/api/", ws) // 400: token is empty
	}
	internalRoutes := func(e *echo.Echo) {
		e.GET("/healthz", s.healthz)
		e.GET("/readyz", s.readyz)
		e.GET("/metrics", metrics)
	}
	s.all, s.client, s.internal = newEcho(), newEcho(), newEcho()
	clientRoutes(s.all)
	internalRoutes(s.all)
	clientRoutes(s.client)
	internalRoutes(s.internal)
	return s
}

func newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	return e
}

// Handler returns the HTTP handler of all routes, for a node with one port
// (http.internal_addr empty).
func (s *Server) Handler() http.Handler { return s.all }

// ClientHandler returns the handler of the client port when the internal
// endpoints have a listener of their own: /api/ only, anything else 404.
func (s *Server) ClientHandler() http.Handler { return s.client }

// InternalHandler returns the handler of the internal listener
// (http.internal_addr): /healthz, /readyz and /metrics.
func (s *Server) InternalHandler() http.Handler { return s.internal }

func (s *Server) checkOrigin(r *http.Request) bool {
	if s.originAllowed(r) {
		return true
	}
	s.metrics.UpgradesRefused.WithLabelValues("origin").Inc()
	return false
}

// originAllowed reports whether the request's Origin is in ws.allowed_origins.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || slices.Contains(s.ws.AllowedOrigins, "*") {
		return true
	}
	for _, o := range s.ws.AllowedOrigins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

func (s *Server) upgradeError(w http.ResponseWriter, r *http.Request, status int, reason error) {
	writeJSONError(w, status, reason.Error())
}

func writeJSONError(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Sec-Websocket-Version", "13")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": reason})
}

// validToken reports why token is unacceptable, or "" when it is fine.
// Tokens are session ids: 1..ws.token_max_length bytes of
// A-Z a-z 0-9 and - . _ ~ + = :
func validToken(token string, maxLen int) string {
	if token == "" {
		return "token is empty"
	}
	if len(token) > maxLen {
		return "token is too long"
	}
	for i := 0; i < len(token); i++ {
		ch := token[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case strings.IndexByte("-._~+=:", ch) >= 0:
		default:
			return "token has characters other than A-Z a-z 0-9 - . _ ~ + = :"
		}
	}
	return ""
}

// ServeWS upgrades GET /api/{token} to a WebSocket and serves it until it
// closes; it is an http.Handler so it can be tested on its own.
//
// Once the hub drains, every request is answered by resetting its TCP
// connection, without an HTTP response: proxies retry a reset connection on
// another node (nginx's default proxy_next_upstream "error timeout" does),
// while they hand a 503 to the client. Without a hijackable connection (in
// tests) the answer is 503.
func (s *Server) ServeWS(w http.ResponseWriter, r *http.Request) {
	if s.hub.Draining() {
		s.metrics.UpgradesRefused.WithLabelValues("draining").Inc()
		if !resetConnection(w) {
			writeJSONError(w, http.StatusServiceUnavailable, "node is shutting down")
		}
		return
	}
	token := strings.TrimPrefix(r.URL.Path, "/api/")
	if why := validToken(token, s.ws.TokenMaxLength); why != "" {
		s.metrics.UpgradesRefused.WithLabelValues("bad_token").Inc()
		writeJSONError(w, http.StatusBadRequest, why)
		return
	}
	counted := false // this upgrade is in s.opening
	if max := s.cfg.limits.Load().MaxConnections; max > 0 {
		// Upgrades under way count too: a connection is in the hub only
		// after its 101 went out, and concurrent upgrades must not all pass
		// the check before any of them is added.
		opening := s.opening.Add(1)
		counted = true
		defer func() {
			if counted {
				s.opening.Add(-1)
			}
		}()
		if s.hub.Len()+int(opening) > max {
			s.metrics.UpgradesRefused.WithLabelValues("max_connections").Inc()
			writeJSONError(w, http.StatusServiceUnavailable, "node is at ws.max_connections")
			return
		}
	}
	id, ok := s.verify(r.Context(), token)
	if !ok {
		s.metrics.UpgradesRefused.WithLabelValues("auth").Inc()
		writeJSONError(w, http.StatusUnauthorized, "invalid token")
		return
	}
	token = id.Subject // the address from here on: a raw JWT goes no further
	bound := false     // token is held for targeted events, and no connection will release it
	if s.binder != nil {
		var ok bool
		if bound, ok = s.bindToken(w, r, token); !ok {
			return // answered
		}
		defer func() {
			if bound { // the connection did not open
				s.binder.ReleaseToken(token)
			}
		}()
	}
	var authorized string // the connection id the backend allowed
	if s.hooks.authorizer != nil {
		var ok bool
		if authorized, ok = s.authorize(w, r, token); !ok {
			return // answered
		}
	}
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.notOpened(r.Context(), token, authorized)
		return // the upgrader answered the request
	}
	// gorilla did the handshake; from here on the connection reads and
	// writes frames itself, on the socket gorilla leaves with nothing
	// buffered (it refuses an upgrade with bytes after the request).
	nc := ws.NetConn()
	c := newConn(nc, id, s.hub, s.router, s.cfg)
	if authorized != "" {
		c.id = authorized // the id the backend knows, before anyone sees c
	}
	err = s.hub.Add(c)
	if counted { // in the hub now, or refused: no longer opening
		s.opening.Add(-1)
		counted = false
	}
	if err != nil {
		s.metrics.UpgradesRefused.WithLabelValues("draining").Inc()
		_ = nc.SetWriteDeadline(time.Now().Add(s.ws.WriteTimeout))
		_, _ = nc.Write(wsframe.AppendFrame(nil, wsframe.OpClose, wsframe.AppendClosePayload(nil, DisconnectShutdown.Code, DisconnectShutdown.Reason)))
		_ = nc.Close()
		if authorized != "" && s.hooks.disconnect != nil {
			s.hooks.disconnect.NotifyDisconnect(r.Context(), token, c.id, DisconnectShutdown.Code, DisconnectShutdown.Reason)
		}
		return
	}
	bound = false // c releases the token when it ends (Conn.finish)
	if s.hooks.connect != nil {
		s.hooks.connect.NotifyConnect(r.Context(), token, c.id)
	}
	// serve runs on a goroutine of its own and this handler returns, so that
	// net/http's connection goroutine ends and lets go of its grown stack and
	// its 4 KiB read and write buffers: an idle connection should hold only
	// what it needs. On Linux serve hands the connection to the poller and
	// returns too; without a pollable socket it is the read loop. The hub
	// waits for every connection's end (Close).
	go c.serve()
}

// verify returns the identity token stands for, or false when the verifier
// refuses it or its subject is not a usable address. Why is logged at debug
// level, never the token itself.
func (s *Server) verify(ctx context.Context, token string) (Identity, bool) {
	if s.verifier == nil {
		return Identity{Subject: token}, true
	}
	id, err := s.verifier.Verify(ctx, token)
	if err != nil {
		s.log.Debug("upgrade refused: invalid token", "reason", err.Error())
		return Identity{}, false
	}
	if why := validToken(id.Subject, s.ws.TokenMaxLength); why != "" {
		s.log.Debug("upgrade refused: invalid token", "reason", "subject: "+strings.TrimPrefix(why, "token "))
		return Identity{}, false
	}
	return id, true
}

// resetConnection takes the connection of w from net/http and closes it with
// SO_LINGER 0, which sends a TCP RST instead of a FIN. It reports false when
// w cannot be hijacked; then nothing was done.
func resetConnection(w http.ResponseWriter) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
	return true
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if s.hub.Draining() {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "draining: the node is shutting down"})
	}
	if err := s.ready.Ready(); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
