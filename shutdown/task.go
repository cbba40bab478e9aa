package shutdown

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// Task is a function running in a goroutine of its own until its context is
// cancelled or it returns. It is the owner of that goroutine.
type Task struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
}

// Go starts run with a context that Stop cancels.
func Go(run func(ctx context.Context) error) *Task {
	ctx, cancel := context.WithCancel(context.Background())
	t := &Task{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		t.err = run(ctx)
	}()
	return t
}

// Done is closed when run has returned.
func (t *Task) Done() <-chan struct{} { return t.done }

// Err is what run returned; call it only after Done is closed.
func (t *Task) Err() error { return t.err }

// Stop cancels run's context and waits until run returns or ctx is done.
// It returns run's error, or ctx's when run had not returned by then.
func (t *Task) Stop(ctx context.Context) error {
	t.cancel()
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return fmt.Errorf("shutdown: not stopped in time: %w", ctx.Err())
	}
}

// Listener is a net.Listener whose Close acts once: the drain closes the
// client listener early, and http.Server.Shutdown closes it again.
type Listener struct {
	net.Listener
	once sync.Once
	err  error
}

// OnceListener wraps ln.
func OnceListener(ln net.Listener) *Listener { return &Listener{Listener: ln} }

// Close closes the listener the first time and returns that result every time.
func (l *Listener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}
