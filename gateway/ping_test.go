package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/config"
)

// The ping timer belongs to the connection from serve's start to its end:
// with a ping interval so short that the timer fires before serve has
// returned from starting it, nothing races (run with -race), pings keep
// coming, and every connection ends cleanly.
func TestPingTimerOwnedByServe(t *testing.T) {
	for _, interval := range []time.Duration{time.Nanosecond, time.Millisecond} {
		t.Run(interval.String(), func(t *testing.T) {
			ts := newTestServer(t, func(ws *config.WS) { ws.PingInterval = interval })
			for range 20 {
				c := ts.dial(t, "tok")
				pinged := make(chan struct{})
				n := 0
				c.SetPingHandler(func(string) error { // runs in ReadMessage, below
					if n++; n == 3 {
						close(pinged)
					}
					return nil
				})
				readErr := make(chan error, 1)
				go func() {
					_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, _, err := c.ReadMessage() // handles pings until the socket closes
					readErr <- err
				}()
				select {
				case <-pinged:
				case err := <-readErr:
					t.Fatalf("fewer than 3 pings before the read ended: %v", err)
				}
				_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				c.Close()
				<-readErr
			}
			waitFor(t, func() bool { return ts.hub.Len() == 0 })
		})
	}
}

// Every call's context is done once its connection has ended, and not before:
// that is how the router learns to forget the calls still in flight.
func TestCallContextEndsWithConnection(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.router.hold = true
	c := ts.dial(t, "tok")
	for _, f := range []string{`{"id":1,"method":"slow"}`, `{"method":"fire-and-forget"}`} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	var ctxs []context.Context
	waitFor(t, func() bool {
		ts.router.mu.Lock()
		defer ts.router.mu.Unlock()
		ctxs = append(ctxs[:0], ts.router.ctxs...)
		return len(ctxs) == 2
	})
	// Still connected: a ping is answered, and the calls' contexts are live.
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"method":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != `{"type":"event","event":"pong"}` {
		t.Fatalf("ping: %s", got)
	}
	for i, ctx := range ctxs {
		if ctx.Err() != nil {
			t.Fatalf("call %d: context done while connected: %v", i, ctx.Err())
		}
	}
	c.Close()
	for i, ctx := range ctxs {
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d: context not done after the connection closed", i)
		}
	}
	ts.router.release() // answering a closed connection is harmless
	waitFor(t, func() bool { return ts.hub.Len() == 0 })
}
