package protocol

// Error codes sent to clients in the "code" member of error frames.
const (
	// CodeBadRequest means the client frame was malformed or failed validation.
	CodeBadRequest = "bad_request"
	// CodeUnavailable means the broker or the backend is currently unavailable.
	CodeUnavailable = "unavailable"
	// CodeUnroutable means the broker could not route the call to any backend.
	CodeUnroutable = "unroutable"
	// CodeTimeout means no answer arrived before the call's deadline.
	CodeTimeout = "timeout"
	// CodeTooManyRequests means the client exceeded its call rate or in-flight limit.
	CodeTooManyRequests = "too_many_requests"
	// CodeShuttingDown means the gateway is draining and accepts no new calls.
	CodeShuttingDown = "shutting_down"
	// CodeInternal means an unexpected failure inside the gateway.
	CodeInternal = "internal"
	// CodeUnknownMethod means no route takes the method and the default
	// route is switched off (routing.default_route = false).
	CodeUnknownMethod = "unknown_method"
	// CodePayloadTooLarge means the call's payload exceeds its route's
	// max_payload_bytes.
	CodePayloadTooLarge = "payload_too_large"
	// CodeBadResult means the backend answered the call with a message that
	// cannot be sent to a client (not valid UTF-8); the message was dropped.
	CodeBadResult = "bad_result"
)

// MaxMethodLength is the longest method name accepted (bytes, after
// unescaping).
const MaxMethodLength = 255

// MaxIDLength is the longest id accepted, in bytes of its raw JSON. It
// bounds what a call's id costs: the copy held while the call waits, and
// the canonical key results are matched by (an exponent of 60,000 digits
// would otherwise cost milliseconds of big-number arithmetic).
const MaxIDLength = 256
