package protocol

// Answerer receives the one answer to a call: a result from the backend or
// an error frame. It is implemented by the connection that made the call and
// used by whatever routes answers back. Answer must not block, and is called
// at most once per call; id is the call's raw JSON id, nil when it had none.
type Answerer interface {
	Answer(id, msg []byte)
}
