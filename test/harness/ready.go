package harness

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// ReadyState is one answer of /readyz that differed from the one before.
type ReadyState struct {
	At   time.Time
	Code int
	Body string
}

// ReadyWatch polls a node's /readyz every few milliseconds and records
// its changes, for tests that watch a node through a fault.
type ReadyWatch struct {
	mu      sync.Mutex
	changes []ReadyState
	stop    chan struct{}
	done    chan struct{}
}

// WatchReady starts watching n; the watch ends with the test.
func WatchReady(t *testing.T, n *Node) *ReadyWatch {
	w := &ReadyWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			code, body := n.Get(t, "/readyz")
			body = strings.TrimSpace(body)
			w.mu.Lock()
			if k := len(w.changes); k == 0 || w.changes[k-1].Code != code || w.changes[k-1].Body != body {
				w.changes = append(w.changes, ReadyState{time.Now(), code, body})
			}
			w.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(w.Close)
	return w
}

// Close stops the watch.
func (w *ReadyWatch) Close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// notReadySince returns the first answer other than 200 at or after since.
func (w *ReadyWatch) NotReadySince(since time.Time) (ReadyState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.changes {
		if !s.At.Before(since) && s.Code != 200 {
			return s, true
		}
	}
	return ReadyState{}, false
}

// outage returns every answer other than 200 from since until /readyz
// turned 200 again.
func (w *ReadyWatch) Outage(since time.Time) []ReadyState {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []ReadyState
	for _, s := range w.changes {
		if s.At.Before(since) {
			continue
		}
		if s.Code == 200 {
			if len(out) > 0 {
				break
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

// waitNotReady waits for the first answer other than 200 at or after since.
func (w *ReadyWatch) WaitNotReady(t *testing.T, since time.Time, what string) ReadyState {
	t.Helper()
	var s ReadyState
	Eventually(t, 20*time.Second, what, func() bool {
		var ok bool
		s, ok = w.NotReadySince(since)
		return ok
	})
	return s
}

// waitReadyAgain waits for /readyz to turn 200 after after.
func (w *ReadyWatch) WaitReadyAgain(t *testing.T, after time.Time, within time.Duration) time.Time {
	t.Helper()
	var up time.Time
	Eventually(t, within, "/readyz to answer 200 again", func() bool {
		var ok bool
		up, ok = w.ReadyAgain(after)
		return ok
	})
	return up
}

// readyAgain returns when /readyz turned 200 after after.
func (w *ReadyWatch) ReadyAgain(after time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.changes {
		if s.At.After(after) && s.Code == 200 {
			return s.At, true
		}
	}
	return time.Time{}, false
}

// Span returns when /readyz first left 200 at or after since, and when it
// answered 200 again after that (zero times while it has not).
func (w *ReadyWatch) Span(since time.Time) (down, up time.Time) {
	s, ok := w.NotReadySince(since)
	if !ok {
		return time.Time{}, time.Time{}
	}
	up, _ = w.ReadyAgain(s.At)
	return s.At, up
}

// String lists every change, one per line, for failure messages.
func (w *ReadyWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, s := range w.changes {
		fmt.Fprintf(&b, "\n  %s %d %s", s.At.Format("15:04:05.000"), s.Code, s.Body)
	}
	return b.String()
}
