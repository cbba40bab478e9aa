package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Frame is a decoded server frame: a result, an event or an error.
type Frame struct {
	ID      json.RawMessage `json:"id"`
	Type    string          `json:"type"`
	Method  string          `json:"method"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
	Error   struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Raw []byte `json:"-"`
}

// ParseFrame decodes b, failing the test when it is not a JSON object.
func ParseFrame(t testing.TB, b []byte) Frame {
	t.Helper()
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame is not a JSON object: %q", b)
	}
	f.Raw = b
	return f
}

// NextFrame returns the next frame decoded, failing the test after within.
func (c *Client) NextFrame(t testing.TB, within time.Duration) Frame {
	t.Helper()
	return ParseFrame(t, c.Next(t, within))
}

// RawDialer is a WebSocket dialer for clients that the test drives by hand
// (for example, one that never reads). RecvBuf, when above 0, sets the
// socket's SO_RCVBUF before connecting, which keeps the kernel from
// buffering megabytes for a client that does not read.
type RawDialer struct {
	Header  http.Header
	RecvBuf int
}

// Dial opens a WebSocket to node n for token. It does not start a read loop
// and does not close the connection at the end of the test: the caller does.
// The response is returned also on failure (for its status code).
func (d RawDialer) Dial(n *Node, token string) (*websocket.Conn, *http.Response, error) {
	nd := &net.Dialer{Timeout: 10 * time.Second}
	if d.RecvBuf > 0 {
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, d.RecvBuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	wd := websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := wd.Dial(n.WSURL(token), d.Header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return ws, resp, err
}

// DialStatus dials node n for token with header and returns the HTTP status
// of the handshake's answer (101 when it succeeded, 0 when no HTTP answer
// came) and the error. A successful connection is closed at once.
func DialStatus(n *Node, token string, header http.Header) (int, error) {
	ws, resp, err := RawDialer{Header: header}.Dial(n, token)
	if ws != nil {
		_ = ws.Close()
	}
	if resp == nil {
		return 0, err
	}
	return resp.StatusCode, err
}

// Channel opens a connection and channel to the test broker, closed when the
// test ends.
func Channel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// PublishMany publishes every message to exchange on one channel, with
// pipelined publisher confirms, and waits until the broker confirmed all.
func PublishMany(t testing.TB, exchange, key string, msgs []amqp.Publishing) {
	t.Helper()
	if err := PublishManyErr(exchange, key, msgs); err != nil {
		t.Fatal(err)
	}
}

// PublishManyErr is PublishMany for use outside the test's goroutine.
func PublishManyErr(exchange, key string, msgs []amqp.Publishing) error {
	return PublishManyTo(AMQPURL(), exchange, key, msgs)
}

// PublishTo publishes msg to exchange on the broker at url (a broker of a
// test's own) and waits for its confirm.
func PublishTo(t testing.TB, url, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	if err := PublishManyTo(url, exchange, key, []amqp.Publishing{msg}); err != nil {
		t.Fatal(err)
	}
}

// PublishManyTo is PublishManyErr on the broker at url.
func PublishManyTo(url, exchange, key string, msgs []amqp.Publishing) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dcs := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, m)
		if err != nil {
			return fmt.Errorf("publish to %s: %w", exchange, err)
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return fmt.Errorf("publish to %s not confirmed (ack %v): %v", exchange, ok, err)
		}
	}
	return nil
}
