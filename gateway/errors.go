package gateway

import (
	"errors"
	"strconv"

	"github.com/gorilla/websocket"
)

// Disconnect is why a connection closed: the WebSocket close code sent to the
// client, and a reason that is both the close frame's text and the label of
// piped_disconnects_total. The set is fixed (see docs/protocol.md).
type Disconnect struct {
	Code   int
	Reason string
}

func (d Disconnect) Error() string {
	return "gateway: disconnect " + strconv.Itoa(d.Code) + " " + d.Reason
}

// The reasons a connection closes.
var (
	// DisconnectNormal: the client closed the connection.
	DisconnectNormal = Disconnect{websocket.CloseNormalClosure, "client_closed"}
	// DisconnectGone: the connection broke without a close frame (network error, EOF).
	DisconnectGone = Disconnect{websocket.CloseAbnormalClosure, "connection_lost"}
	// DisconnectTimeout: nothing arrived, not even a pong, within ws.pong_timeout.
	DisconnectTimeout = Disconnect{websocket.CloseGoingAway, "pong_timeout"}
	// DisconnectTooBig: a frame exceeded ws.max_message_bytes.
	DisconnectTooBig = Disconnect{websocket.CloseMessageTooBig, "message_too_big"}
	// DisconnectProtocol: the client broke the WebSocket protocol.
	DisconnectProtocol = Disconnect{websocket.CloseProtocolError, "protocol_error"}
	// DisconnectBadData: a text message (or a close frame's reason) was not
	// valid UTF-8 (RFC 6455 8.1).
	DisconnectBadData = Disconnect{websocket.CloseInvalidFramePayloadData, "invalid_utf8"}
	// DisconnectWriteFailed: writing to the client failed or timed out (ws.write_timeout).
	DisconnectWriteFailed = Disconnect{websocket.CloseAbnormalClosure, "write_failed"}
	// DisconnectBackend: a backend's disconnect control message closed the
	// connection. The message may choose another code (4000–4999) and the
	// close frame's text; the metric label stays "disconnected".
	DisconnectBackend = Disconnect{4001, "disconnected"}
	// DisconnectSlow: the client did not read fast enough and its send queue
	// (ws.send_queue_bytes) overflowed.
	DisconnectSlow = Disconnect{4008, "slow_client"}
	// DisconnectTokenExpired: the verified token's expiry (Identity.Expires) passed while the connection was open.
	DisconnectTokenExpired = Disconnect{4003, "token_expired"}
	// DisconnectRateLimited: the client kept sending ws.frame_burst frames
	// after its frame budget (ws.frame_rate) was spent and its frames refused.
	DisconnectRateLimited = Disconnect{websocket.ClosePolicyViolation, "rate_limited"}
	// DisconnectShutdown: the node is shutting down; reconnect (to another node).
	DisconnectShutdown = Disconnect{websocket.CloseServiceRestart, "shutdown"}
)

// ErrDraining is returned by Hub.Add once the node drains.
var ErrDraining = errors.New("gateway: node is draining")

// ErrReadLoopsStuck is wrapped by Hub.Close's error when read loops did not
// end within a grace period after their connections were cut.
var ErrReadLoopsStuck = errors.New("gateway: read loops did not end after their connections were cut")

// errNoFD says a connection cannot be watched by the poller (its net.Conn
// has no file descriptor, or the system has no epoll): it keeps a read
// goroutine.
var errNoFD = errors.New("gateway: connection has no pollable file descriptor")
