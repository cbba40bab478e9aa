package gateway

import (
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
