// Package shutdown is the node's shutdown policy: the order in which a
// draining node stops taking work, lets calls in flight finish, fails what is
// left and closes its parts. It depends only on the small interfaces below,
// which main wires to the gateway, the routing side and the HTTP servers.
package shutdown

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"
)

// Hub is the registry of client connections (gateway.Hub).
type Hub interface {
	// Drain turns readiness 503, refuses new connections and closes each
	// connection as soon as it has no call with an id in flight.
	Drain()
	// Len is the number of connections still open.
	Len() int
	// Close closes the remaining connections and waits for them, cutting
	// them at ctx's deadline; it returns an error when it had to cut.
	Close(ctx context.Context) error
}

// Calls fails the calls still waiting for the backend (routing.Router).
type Calls interface {
	// FailPending answers every pending call with an error of code and
	// returns how many there were.
	FailPending(code, message string) int
}

// Server is an HTTP server (*http.Server).
type Server interface {
	Shutdown(ctx context.Context) error
}

// Stopper is a part that runs until stopped (the broker side, see Task).
type Stopper interface {
	// Stop stops the part and waits for it until ctx is done; it returns
	// the part's own error.
	Stop(ctx context.Context) error
}

// Flusher waits until what a part has queued is out (routing.Router's
// FlushNotices).
type Flusher interface {
	FlushNotices(ctx context.Context) error
}

// NoticeFlushTimeout bounds the wait for notices at shutdown (within
// shutdown.timeout).
const NoticeFlushTimeout = 2 * time.Second

// DefaultPoll is how often Plan polls the hub while it waits for it to empty.
const DefaultPoll = 20 * time.Millisecond

// Plan is the drain choreography. Its fields are set before Shutdown is
// called and not changed afterwards; Hub, Calls and Broker are required.
type Plan struct {
	Hub   Hub
	Calls Calls
	// StopAccepting are closed at the first moment of the drain: the client
	// listener when health and metrics have a listener of their own, so that
	// new connections are refused (and retried elsewhere by proxies). Errors
	// of closing an already closed listener are ignored.
	StopAccepting []io.Closer
	// Servers are shut down after every connection is closed: the internal
	// listener's server last, so readiness answers 503 until then.
	Servers []Server
	// Broker is stopped last, so results can arrive until the connections
	// are closed.
	Broker Stopper
	// Notices, when set, is waited for (at most NoticeFlushTimeout) after
	// the connections are closed and before the Broker stops, so that the
	// notices their ends queued ($disconnect) are published.
	Notices Flusher
	// DrainTimeout bounds the wait for calls in flight (shutdown.drain_timeout).
	DrainTimeout time.Duration
	// FailCode and FailMessage answer the calls still pending after the wait.
	FailCode, FailMessage string
	// Poll is how often the hub is polled; 0 means DefaultPoll.
	Poll time.Duration
	Log  *slog.Logger
}

// Shutdown runs the drain, every step bounded by ctx (shutdown.timeout):
//
//  1. Hub.Drain, then close StopAccepting: readiness 503 and new
//     connections refused at once, idle connections closed with 1012.
//  2. Wait until the hub is empty, at most DrainTimeout (or until ctx ends).
//  3. Calls.FailPending, then Hub.Close(ctx): every call still pending gets
//     an error, then every connection is closed, cut at ctx's deadline.
//  4. Shut down Servers in order.
//  5. Wait for Notices (at most NoticeFlushTimeout): the connections'
//     $disconnect notices, queued as they closed, are published.
//  6. Stop the Broker.
//
// Problems of steps 3 and 4 are logged as warnings; Shutdown returns the
// broker's error (nil when it stopped cleanly).
func (p *Plan) Shutdown(ctx context.Context) error {
	p.Hub.Drain()
	for _, c := range p.StopAccepting {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.Log.Warn("closing the client listener", "error", err)
		}
	}

	drainCtx, cancel := context.WithTimeout(ctx, p.DrainTimeout)
	// Connections close as soon as their calls with an id are answered;
	// calls without an id cannot be answered once their connection is gone.
	p.waitEmpty(drainCtx)
	cancel()

	if n := p.Calls.FailPending(p.FailCode, p.FailMessage); n > 0 {
		p.Log.Warn("calls unanswered at the end of the drain", "calls", n)
	}
	if err := p.Hub.Close(ctx); err != nil {
		p.Log.Warn("connections cut at the shutdown deadline", "error", err)
	}
	for _, s := range p.Servers {
		if err := s.Shutdown(ctx); err != nil {
			p.Log.Warn("http shutdown", "error", err)
		}
	}
	if p.Notices != nil {
		fctx, cancel := context.WithTimeout(ctx, NoticeFlushTimeout)
		if err := p.Notices.FlushNotices(fctx); err != nil {
			p.Log.Warn("lifecycle notices lost at shutdown", "error", err)
		}
		cancel()
	}
	if err := p.Broker.Stop(ctx); err != nil {
		return fmt.Errorf("broker side: %w", err)
	}
	return nil
}

// waitEmpty polls the hub until it is empty or ctx is done.
func (p *Plan) waitEmpty(ctx context.Context) {
	poll := p.Poll
	if poll <= 0 {
		poll = DefaultPoll
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for p.Hub.Len() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
