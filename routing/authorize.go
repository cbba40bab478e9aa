package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/piped-dev/piped/protocol"
)

// reasonNotAuthorized is the reason given to a client the backend denied
// without saying why.
const reasonNotAuthorized = "not authorized"

// reasonBadAnswer is the reason given to a client whose connection the
// backend answered with something that is not a verdict.
const reasonBadAnswer = "the authorization backend sent an invalid answer"

// codeAuthorizeGaveUp is the error code on the span of an authorization
// whose waiter gave up (timeout, or the client went away).
const codeAuthorizeGaveUp = "authorize_gave_up"

// verdictAnswer receives the one answer to an authorization call. Answer
// never blocks: the channel has room for the one answer there is.
type verdictAnswer chan []byte

func (v verdictAnswer) Answer(_, msg []byte) {
	select {
	case v <- msg:
	default:
	}
}

// Authorize asks the backend whether connection connID of token may open:
// it publishes the $connect notice with "id": connID like a call
// (correlation_id and message_id, reply_to = the in-queue, expiration = the
// time left until ctx's deadline) and waits for the result, matched like a
// call's by correlation id, else by token and id. It returns the verdict of
// the result's payload, {"allow":true} or {"allow":false,"reason":R} (a
// denial without a reason gets a generic one). A result that is no verdict
// is logged, counted (piped_backend_messages_dropped_total{reason="bad_authorize_answer"})
// and denies. err wraps ErrNoVerdict when no answer came: the broker is not
// connected, refused the call, or ctx was done first (its deadline is
// lifecycle.authorize_timeout; it is also done when the client goes away).
// Authorize blocks until one of these happens; when it returns, the call
// holds nothing.
func (r *Router) Authorize(ctx context.Context, token, connID string) (allow bool, reason string, err error) {
	answer := make(verdictAnswer, 1)
	id, _ := json.Marshal(connID) // a string always marshals
	rt := r.routes.Load().ForNotice(protocol.MethodConnect)
	c := &call{from: answer, token: token, id: id, method: protocol.MethodConnect, rt: rt, start: time.Now()}
	ctx = r.startCall(ctx, c)
	p := r.pub.Load()
	if p == nil || r.blocked.Load() {
		why := "the broker is not connected"
		if p != nil {
			why = "the broker is blocking publishes (resource alarm)"
		}
		endError(c.span, protocol.CodeUnavailable)
		return false, "", fmt.Errorf("%w: %s", ErrNoVerdict, why)
	}
	expiration := rt.Expiration
	if d, ok := ctx.Deadline(); ok {
		expiration = strconv.FormatInt(max(1, time.Until(d).Milliseconds()), 10)
	}
	r.pending.assign(c)
	r.pending.dropOnDone(ctx, c, func(c *call) { endError(c.span, codeAuthorizeGaveUp) })
	corrID := r.pending.correlationID(c)
	j := r.newCallJob(ctx, c, corrID, expiration)
	j.msg.Body = protocol.AppendConnectNotice(j.msg.Body, token, r.nodeID, connID, true)
	if why := p.enqueue(j, c.start); why != "" {
		endError(j.span, protocol.CodeUnavailable)
		r.putBuf(j)
		if r.pending.take(c) { // unregisters the drop from ctx
			endError(c.span, protocol.CodeUnavailable)
		}
		return false, "", fmt.Errorf("%w: %s", ErrNoVerdict, why)
	}
	select {
	case msg := <-answer:
		return r.verdict(msg)
	case <-ctx.Done():
		select {
		case msg := <-answer: // it came just in time
			return r.verdict(msg)
		default:
		}
		if r.pending.take(c) { // else dropOnDone took it, or an answer just came: ignored
			endError(c.span, codeAuthorizeGaveUp)
		}
		return false, "", fmt.Errorf("%w within the authorize timeout: %w", ErrNoVerdict, context.Cause(ctx))
	}
}

// verdict reads the answer to an authorization call: a backend's result
// (with the token removed) or the router's error frame (timeout,
// unavailable, unroutable, shutting_down).
func (r *Router) verdict(msg []byte) (allow bool, reason string, err error) {
	var a struct {
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
		Error   struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(msg, &a) == nil && a.Type == "error" {
		return false, "", fmt.Errorf("%w: %s: %s", ErrNoVerdict, a.Error.Code, a.Error.Message)
	}
	var v struct {
		Allow  *bool   `json:"allow"`
		Reason *string `json:"reason"`
	}
	if len(a.Payload) == 0 || json.Unmarshal(a.Payload, &v) != nil || v.Allow == nil {
		r.metrics.Dropped.WithLabelValues("bad_authorize_answer").Inc()
		r.log.Warn("authorization answer is not a verdict; connection denied",
			"want", `{"type":"result","token":…,"id":…,"payload":{"allow":true|false,"reason"?:"…"}}`, "bytes", len(msg))
		return false, reasonBadAnswer, nil
	}
	if *v.Allow {
		return true, "", nil
	}
	if v.Reason == nil || *v.Reason == "" {
		return false, reasonNotAuthorized, nil
	}
	return false, *v.Reason, nil
}
