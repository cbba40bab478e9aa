package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/telemetry"
)

// Notifier is told of connections opening and closing ([lifecycle] connect
// and disconnect: the $connect and $disconnect notices). Its methods must
// not block; ctx carries trace context only and may be done already.
// routing.Router implements it.
type Notifier interface {
	NotifyConnect(ctx context.Context, token, connID string)
	NotifyDisconnect(ctx context.Context, token, connID string, code int, reason string)
}

// Authorizer decides before the upgrade whether connection connID of token
// may open (lifecycle.authorize): allow, or not with the reason shown to the
// client. err is not nil when no verdict could be had (the backend did not
// answer, the broker is not connected); then lifecycle.authorize_failure
// decides. Authorize blocks at most until ctx is done, which happens at
// lifecycle.authorize_timeout or when the client goes away; it holds
// nothing once it returned. routing.Router implements it.
type Authorizer interface {
	Authorize(ctx context.Context, token, connID string) (allow bool, reason string, err error)
}

// TokenBinder subscribes the node to the targeted events of the tokens it
// holds connections of (amqp.events_exchange). BindToken counts a
// connection of token and returns once the node receives the token's
// targeted events, or an error when ctx is done first; it returns at once
// while the broker is not connected. Every BindToken, whatever it
// returned, is matched by one ReleaseToken when the connection has ended
// or did not open; ReleaseToken never blocks. routing.Router implements
// it.
type TokenBinder interface {
	BindToken(ctx context.Context, token string) error
	ReleaseToken(token string)
}

// bindTimeout bounds the wait for a token's event binding before the
// upgrade; a node that cannot bind within it refuses the upgrade with 503
// rather than announce a connection that its token's events cannot reach.
const bindTimeout = 5 * time.Second

// reasonNoBinding is the error text of that 503.
const reasonNoBinding = "node could not subscribe to the token's events in time"

// bindToken holds token's event binding for a connection about to open,
// before the $connect notice (or the authorization call, which is one)
// goes out. It reports whether the token is held (release it if the
// connection does not open) and whether to go on; a refusal is answered.
// A request the upgrader will refuse anyway binds nothing.
func (s *Server) bindToken(w http.ResponseWriter, r *http.Request, token string) (held, ok bool) {
	if !websocket.IsWebSocketUpgrade(r) || !s.originAllowed(r) {
		return false, true
	}
	ctx, cancel := context.WithTimeout(r.Context(), bindTimeout)
	defer cancel()
	err := s.binder.BindToken(ctx, token)
	if err == nil {
		return true, true
	}
	s.binder.ReleaseToken(token)
	if r.Context().Err() != nil {
		return false, false // the client went away: nobody to answer
	}
	s.metrics.UpgradesRefused.WithLabelValues("event_binding").Inc()
	s.log.Warn("upgrade refused: the token's event binding was not made in time", "token_hash", telemetry.TokenHash(token), "error", err)
	writeJSONError(w, http.StatusServiceUnavailable, reasonNoBinding)
	return false, false
}

// DisconnectNotOpened is the close reason in the $disconnect notice of a
// connection that was announced by an authorization $connect but never
// opened: the wait for the verdict ended, the client went away, or the
// upgrade failed. No client sees it.
var DisconnectNotOpened = Disconnect{websocket.CloseAbnormalClosure, "not_opened"}

// reasonNoVerdict is the error text of the 503 when the backend did not
// authorize a connection in time and lifecycle.authorize_failure is "deny".
const reasonNoVerdict = "authorization backend did not answer"

// lifecycleHooks is what a server does at a connection's start and end,
// derived once from Options; nil fields are off and cost nothing.
type lifecycleHooks struct {
	connect          Notifier   // $connect after the upgrade (not with authorize: its $connect is the call)
	disconnect       Notifier   // $disconnect when a connection ends
	authorizer       Authorizer // asks before the upgrade
	authorizeTimeout time.Duration
	allowOnFailure   bool
}

func newLifecycleHooks(o Options) lifecycleHooks {
	var h lifecycleHooks
	l := o.Lifecycle
	if o.Notifier != nil {
		if l.Connect && !l.Authorize {
			h.connect = o.Notifier
		}
		if l.Disconnect {
			h.disconnect = o.Notifier
		}
	}
	if l.Authorize && o.Authorizer != nil {
		h.authorizer = o.Authorizer
		h.authorizeTimeout = l.AuthorizeTimeout
		h.allowOnFailure = l.AuthorizeFailure == "allow"
	}
	return h
}

// authorize asks the Authorizer about a new connection of token before the
// upgrade and answers the request when it may not open: 403 with the
// backend's reason, or 503 when no verdict came and authorize_failure is
// "deny". It returns the connection's id and whether to go on with the
// upgrade; "" means no $connect was published (a request the upgrader will
// refuse anyway is not authorized).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, token string) (connID string, ok bool) {
	if !websocket.IsWebSocketUpgrade(r) || !s.originAllowed(r) {
		return "", true // the upgrader refuses it, as without authorization
	}
	connID = s.cfg.newConnID()
	ctx, cancel := context.WithTimeout(r.Context(), s.hooks.authorizeTimeout)
	defer cancel()
	allow, reason, err := s.hooks.authorizer.Authorize(ctx, token, connID)
	switch {
	case err == nil && allow:
		return connID, true
	case err == nil:
		s.metrics.UpgradesRefused.WithLabelValues("unauthorized").Inc()
		s.log.Debug("connection not authorized", "token_hash", telemetry.TokenHash(token), "connection", connID, "reason", reason)
		writeJSONError(w, http.StatusForbidden, reason)
		return "", false
	case r.Context().Err() != nil:
		// The client went away while we waited: nobody to answer.
		s.notOpened(r.Context(), token, connID)
		return "", false
	case s.hooks.allowOnFailure:
		s.log.Debug("no authorization verdict; connection allowed (lifecycle.authorize_failure = allow)",
			"token_hash", telemetry.TokenHash(token), "connection", connID, "error", err)
		return connID, true
	default:
		s.metrics.UpgradesRefused.WithLabelValues("authorize_timeout").Inc()
		s.log.Debug("no authorization verdict; connection refused", "token_hash", telemetry.TokenHash(token), "connection", connID, "error", err)
		s.notOpened(r.Context(), token, connID)
		writeJSONError(w, http.StatusServiceUnavailable, reasonNoVerdict)
		return "", false
	}
}

// notOpened publishes the $disconnect notice of a connection whose $connect
// went to the backend (as the authorization call) but that did not open,
// so that a backend that allowed it, perhaps too late, forgets it.
func (s *Server) notOpened(ctx context.Context, token, connID string) {
	if connID != "" && s.hooks.disconnect != nil {
		s.hooks.disconnect.NotifyDisconnect(ctx, token, connID, DisconnectNotOpened.Code, DisconnectNotOpened.Reason)
	}
}
