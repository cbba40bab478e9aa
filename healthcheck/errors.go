package healthcheck

import "errors"

// ErrNotReady is wrapped by every error of Check: the node did not answer
// /readyz with 200 (it answered something else, or could not be reached).
var ErrNotReady = errors.New("healthcheck: not ready")
