package gateway

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Close returns once the grace after the deadline is over, even when a read
// loop never ends (here: one registered without a connection to cut).
func TestHubCloseIsBounded(t *testing.T) {
	h := NewHub()
	h.live.Add(1) // a read loop blocked for good
	h.count.Add(1)
	defer h.live.Done()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- h.Close(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrReadLoopsStuck) || !errors.Is(err, context.Canceled) {
			t.Fatalf("Close: %v, want ErrReadLoopsStuck wrapping context.Canceled", err)
		}
	case <-time.After(cutGrace + 10*time.Second):
		t.Fatal("Close did not return after its deadline and the grace")
	}
}

// With nothing registered, Close drains the hub and returns nil.
func TestHubCloseEmpty(t *testing.T) {
	h := NewHub()
	if err := h.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !h.Draining() {
		t.Fatal("Close did not drain the hub")
	}
}
