package gateway

import (
	"context"
	"fmt"
	"hash/maphash"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/piped-dev/piped/telemetry"
)

// hubShards spreads tokens over this many locks, so deliveries to different
// tokens do not serialise behind one lock.
const hubShards = 64

// Hub is the registry of this node's connections by token. Broadcast never
// blocks on a connection. The zero value is not usable; use NewHub.
type Hub struct {
	// Set at construction.
	seed   maphash.Seed
	shards [hubShards]hubShard

	count    atomic.Int64
	draining atomic.Bool
	live     sync.WaitGroup // one per registered connection, done when its read loop ends
}

type hubShard struct {
	mu    sync.RWMutex
	conns map[string][]*Conn // guarded by mu
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	h := &Hub{seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].conns = make(map[string][]*Conn)
	}
	return h
}

func (h *Hub) shard(token string) *hubShard {
	return &h.shards[maphash.String(h.seed, token)%hubShards]
}

// Add registers c; it fails with ErrDraining once Drain was called. Once
// registered, c is logged at debug level with its id and token hash (never
// the token), so an operator can address it with a control message.
func (h *Hub) Add(c *Conn) error {
	s := h.shard(c.token)
	s.mu.Lock()
	if h.draining.Load() {
		s.mu.Unlock()
		return ErrDraining
	}
	s.conns[c.token] = append(s.conns[c.token], c)
	h.count.Add(1)
	h.live.Add(1)
	s.mu.Unlock()
	if log := c.cfg.log; log != nil && log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("connection registered", "connection", c.id, "token_hash", telemetry.TokenHash(c.token))
	}
	return nil
}

// Remove unregisters c; it must have been added.
func (h *Hub) Remove(c *Conn) {
	s := h.shard(c.token)
	s.mu.Lock()
	list := s.conns[c.token]
	for i, o := range list {
		if o == c {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(s.conns, c.token)
	} else {
		s.conns[c.token] = list
	}
	s.mu.Unlock()
	h.count.Add(-1)
	h.live.Done()
}

// Len returns the number of registered connections.
func (h *Hub) Len() int { return int(h.count.Load()) }

// Broadcast queues msg on every connection of token and returns how many
// accepted it. It never blocks; msg must not be modified afterwards.
func (h *Hub) Broadcast(token string, msg []byte) int {
	s := h.shard(token)
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, c := range s.conns[token] {
		if c.Send(msg) {
			n++
		}
	}
	return n
}

// each calls f for every connection, outside the shard locks.
func (h *Hub) each(f func(*Conn)) {
	var list []*Conn
	for i := range h.shards {
		list = h.shards[i].appendTo(list)
	}
	for _, c := range list {
		f(c)
	}
}

// appendTo appends the shard's connections to list under its read lock.
func (s *hubShard) appendTo(list []*Conn) []*Conn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, cs := range s.conns {
		list = append(list, cs...)
	}
	return list
}

// Connections returns a snapshot of the registered connections, one shard
// at a time: the sequence yields the token and id of each, outside the
// hub's locks (for $presence notices). A connection added or removed
// meanwhile may or may not be listed.
func (h *Hub) Connections() iter.Seq2[string, string] {
	return func(yield func(token, connID string) bool) {
		var list []*Conn
		for i := range h.shards {
			list = h.shards[i].appendTo(list[:0])
			for _, c := range list {
				if !yield(c.token, c.id) {
					return
				}
			}
			clear(list)
		}
	}
}

// Drain refuses new connections from now on and asks every connection to
// close with 1012 as soon as it has no call in flight (at once for idle ones).
func (h *Hub) Drain() {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		h.draining.Store(true)
		s.mu.Unlock()
	}
	h.each((*Conn).drain)
}

// Draining reports whether Drain was called.
func (h *Hub) Draining() bool { return h.draining.Load() }

// cutGrace bounds how long Close waits for read loops after it has cut their
// connections at the deadline. Cutting closes the socket, so a read loop
// ends within microseconds unless it is blocked elsewhere (for instance in
// Router.Call); Close does not wait for those past this grace.
const cutGrace = time.Second

// Close closes every connection with 1012 after what is queued for it is
// written, and waits until their read loops have ended or ctx is done; then
// it cuts the remaining ones and waits at most cutGrace more. It returns nil
// when every read loop ended in time, else an error wrapping ctx's error
// (and ErrReadLoopsStuck when some did not end within the grace either).
// http.Server.Shutdown neither closes nor waits for hijacked connections,
// so this is how WebSockets end.
func (h *Hub) Close(ctx context.Context) error {
	h.Drain()
	h.each(func(c *Conn) { c.Close(DisconnectShutdown) })
	done := make(chan struct{})
	go func() { h.live.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	n := h.Len()
	h.each((*Conn).cut)
	grace := time.NewTimer(cutGrace)
	defer grace.Stop()
	select {
	case <-done:
		return fmt.Errorf("gateway: cut %d connections at the deadline: %w", n, ctx.Err())
	case <-grace.C:
		// The goroutine above ends when the last read loop does.
		return fmt.Errorf("%w: %d still running %v after they were cut: %w", ErrReadLoopsStuck, h.Len(), cutGrace, ctx.Err())
	}
}
