package routing

import "errors"

var (
	// ErrTopologyConflict means a queue or exchange exists on the broker with
	// other arguments than this node declares (406 PRECONDITION_FAILED). It is
	// fatal before the node was ever ready: retrying cannot fix it.
	ErrTopologyConflict = errors.New("routing: topology conflicts with what exists on the broker")
	// ErrInQueueInUse means another consumer holds this node's in-queue
	// exclusively: two nodes run with the same node id.
	ErrInQueueInUse = errors.New("routing: in-queue is consumed by another node (node ids must be unique)")
	// ErrConnect wraps a failure to open a connection to the broker (refused,
	// unreachable, authentication, handshake), with the URL redacted.
	ErrConnect = errors.New("routing: cannot connect to the broker at")
	// ErrNotConnected is the readiness reason before the first connection and between reconnects.
	ErrNotConnected = errors.New("routing: not connected to the broker")
	// ErrBlocked is the readiness reason while the broker blocks publishing (memory or disk alarm).
	ErrBlocked = errors.New("routing: broker blocks publishing (resource alarm)")
	// ErrStalled is the readiness reason while a publish has waited for the
	// broker to read it for longer than amqp.confirm_timeout (a stopped or
	// overloaded broker, a full network path).
	ErrStalled = errors.New("routing: broker stopped reading publishes")
	// ErrNoVerdict is wrapped by Router.Authorize's error when the backend's
	// answer to $connect did not come: the broker is not connected or
	// refused the call, or the wait ended (lifecycle.authorize_timeout).
	ErrNoVerdict = errors.New("routing: no answer from the authorization backend")
	// ErrStopped is the readiness reason once the router was stopped.
	ErrStopped = errors.New("routing: stopped")
)

// errBadConnection is why an event whose "connection" is not a non-empty
// string is dropped (reason bad_connection) rather than sent to every
// connection of its token.
var errBadConnection = errors.New(`routing: an event's "connection" must be a non-empty string`)

// ErrExchangeMissing means the exchange of a route with declare = false
// does not exist on the broker. Like ErrTopologyConflict it is fatal
// before the node was ever ready; later the node is not ready until it exists.
var ErrExchangeMissing = errors.New("routing: a route's exchange does not exist")

// errTooBig is why a backend message over amqp.max_message_bytes is dropped
// (reason too_big) unread.
var errTooBig = errors.New("routing: the message is larger than amqp.max_message_bytes")

// errNotUTF8 is why a backend message that is not valid UTF-8 is dropped
// (reason not_utf8): clients get text frames, which must be UTF-8.
var errNotUTF8 = errors.New("routing: the message is not valid UTF-8")
