package protocol

import "errors"

// Sentinel errors returned by ParseInbound, ParseMessage and ParseControl. Test for them with errors.Is.
var (
	// ErrNotJSON means the in-queue message is not valid JSON.
	ErrNotJSON = errors.New("protocol: message is not valid JSON")
	// ErrNotObject means the in-queue message is valid JSON but not an object.
	ErrNotObject = errors.New("protocol: message is not a JSON object")
	// ErrNoToken means the in-queue message has no "token" member, or its
	// value is not a JSON string, or the string is empty.
	ErrNoToken = errors.New("protocol: message has no token")
	// ErrBadControl means a control message (disconnect, broadcast) lacks
	// a member it needs or has one of the wrong type (see ParseControl).
	ErrBadControl = errors.New("protocol: bad control message")
)

// Reasons used in FrameError.Reason.
const (
	reasonInvalidJSON       = "invalid JSON"
	reasonNotObject         = "frame must be a JSON object"
	reasonMethodRequired    = "method is required"
	reasonMethodNotString   = "method must be a string"
	reasonMethodEmpty       = "method must not be empty"
	reasonMethodTooLong     = "method is longer than 255 bytes"
	reasonMethodControl     = "method must not contain control characters"
	reasonIDType            = "id must be a string or a number"
	reasonIDTooLong         = "id is longer than 256 bytes"
	reasonPayloadType       = "payload must be a JSON object"
	reasonTraceParentType   = "traceparent must be a string"
	reasonTraceStateType    = "tracestate must be a string"
	frameErrorMessagePrefix = "protocol: bad frame: "
)

// FrameError says why a client frame was rejected.
//
// ID is the frame's raw "id" when one could be read (so the error frame can
// carry it), else nil. It aliases the parsed input. Reason is a short human
// sentence for the client, e.g. "method is required".
type FrameError struct {
	ID     []byte
	Reason string
}

// Error returns "protocol: bad frame: " followed by the reason.
func (e *FrameError) Error() string {
	return frameErrorMessagePrefix + e.Reason
}
