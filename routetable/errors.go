package routetable

import (
	"errors"
	"fmt"
)

// ErrInvalidRoute is wrapped by every error Compile returns: a [[routes]]
// entry that cannot be compiled.
var ErrInvalidRoute = errors.New("routetable: invalid route")

// Error is one problem of one route. Its text names the route by its
// position in the file (0 is the first [[routes]] table) and its match:
//
//	routes[2] (match "billing.*"): routing_key: placeholder {token} is not allowed …
type Error struct {
	Index   int    // position in [[routes]], from 0
	Match   string // the route's match, as written
	Key     string // the key at fault ("match", "routing_key", …)
	Problem string
}

func (e *Error) Error() string {
	return fmt.Sprintf("routes[%d] (match %q): %s: %s", e.Index, e.Match, e.Key, e.Problem)
}

// Unwrap makes errors.Is(err, ErrInvalidRoute) true.
func (e *Error) Unwrap() error { return ErrInvalidRoute }
