package routing

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
)

// pendingShards spreads pending calls over this many locks. A call lives in
// the shard of its token, and its correlation id encodes that shard, so a
// result finds its call by correlation id or by (token, id, method) under a
// single shard lock.
const pendingShards = 64

// matchKeyStack is the size of the stack buffer match keys are built in:
// token, method and id of common calls fit.
const matchKeyStack = 256

// call is a published call awaiting its answer.
type call struct {
	// Set at construction.
	corr   uint64
	secret uint64 // random: the part of the correlation id nobody can guess
	shard  *pendingShard
	from   protocol.Answerer
	token  string
	id     []byte
	method string
	rt     *routetable.Route // the route it was published on: its timeout, even after a reload
	key    string            // appendMatchKey of token, id and method, for results without our correlation id
	start  time.Time
	span   trace.Span  // the call's span, ended with its answer
	timer  *time.Timer // guarded by shard.mu
	// notice marks a lifecycle notice (Router.Notify): published like a
	// call but never pending, with no shard and no answer; the publisher
	// reports its outcome to Router.noticeDone instead.
	notice bool

	// Guarded by shard.mu.
	done     bool
	stopDrop func() bool // unregisters dropOnDone's function from the caller's context
}

type pendingShard struct {
	mu     sync.Mutex
	byCorr map[uint64]*call
	byKey  map[string][]*call // FIFO per key
}

// pendingTable holds every call awaiting an answer on this node.
type pendingTable struct {
	seed    maphash.Seed
	prefix  string // correlation id prefix: node id and a per-process nonce
	counter atomic.Uint64
	shards  [pendingShards]pendingShard
}

func newPendingTable(prefix string) *pendingTable {
	t := &pendingTable{seed: maphash.MakeSeed(), prefix: prefix}
	for i := range t.shards {
		t.shards[i].byCorr = make(map[uint64]*call)
		t.shards[i].byKey = make(map[string][]*call)
	}
	return t
}

// appendMatchKey appends to dst the key a result without our correlation
// id is matched by: the token, the method and the id's canonical key
// (protocol.AppendIDKey, so "a\/1" finds "a/1" and 1500.0 finds 1.5e3).
// Token and method are length-prefixed, so no bytes in them make two
// triples collide. ok is false when the id has no key (an object or array,
// which no call has).
func appendMatchKey(dst []byte, token string, id []byte, method string) (key []byte, ok bool) {
	dst = binary.AppendUvarint(dst, uint64(len(token)))
	dst = append(dst, token...)
	dst = binary.AppendUvarint(dst, uint64(len(method)))
	dst = append(dst, method...)
	return protocol.AppendIDKey(dst, id)
}

// assign gives c (whose from, token, id, method and start are set) its
// shard and correlation number; insert then makes it pending.
func (t *pendingTable) assign(c *call) {
	si := maphash.String(t.seed, c.token) % pendingShards
	c.shard = &t.shards[si]
	var buf [matchKeyStack]byte
	key, _ := appendMatchKey(buf[:0], c.token, c.id, c.method) // a call's id is a string or number
	c.key = string(key)
	c.corr = t.counter.Add(1)*pendingShards + si
	c.secret = rand.Uint64() // ChaCha8, seeded by the OS: unpredictable
}

// insert makes an assigned call pending and starts its timer: expire runs
// after timeout unless c is taken first.
// A call dropped (see dropOnDone) before it is inserted is not inserted.
func (t *pendingTable) insert(c *call, timeout time.Duration, expire func(*call)) {
	s := c.shard
	s.mu.Lock()
	if c.done {
		s.mu.Unlock()
		return
	}
	c.timer = time.AfterFunc(timeout, func() { expire(c) })
	s.byCorr[c.corr] = c
	s.byKey[c.key] = append(s.byKey[c.key], c)
	s.mu.Unlock()
}

// dropOnDone arranges for the assigned call c to leave the table, without
// an answer, once ctx is done (its connection has ended): then drop runs with
// c, unless c was answered or dropped first. Its timer stops with it, and
// the table lets go of the caller at once instead of after requests.timeout.
// Answering c first unregisters this from ctx.
func (t *pendingTable) dropOnDone(ctx context.Context, c *call, drop func(*call)) {
	if ctx.Done() == nil {
		return // never done
	}
	s := c.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.done {
		return
	}
	c.stopDrop = context.AfterFunc(ctx, func() {
		if t.take(c) {
			drop(c)
		}
	})
}

// correlationID renders the correlation id of c as sent to the broker: the
// table's prefix, the correlation number and the call's secret, both in
// base 36. Knowing other calls' ids does not tell a third's.
func (t *pendingTable) correlationID(c *call) string {
	return t.prefix + strconv.FormatUint(c.corr, 36) + "." + strconv.FormatUint(c.secret, 36)
}

// corrRef is a correlation id this table issued, parsed.
type corrRef struct {
	n, secret uint64
}

// parseCorrelation parses an id with this table's prefix; ok is false for
// ids of other processes or none. An id with our prefix that does not parse
// is still ours: it matches no call (or, by a 2^-64 chance, mismatches one).
func (t *pendingTable) parseCorrelation(id string) (ref corrRef, ok bool) {
	rest, found := strings.CutPrefix(id, t.prefix)
	if !found {
		return corrRef{}, false
	}
	n, secret, _ := strings.Cut(rest, ".")
	ref.n, _ = strconv.ParseUint(n, 36, 64)
	ref.secret, _ = strconv.ParseUint(secret, 36, 64)
	return ref, true
}

// takeByCorr removes and returns the call ref names, when ref's secret is
// the call's and token is the call's token (token "": the broker's return
// of our own publish, not checked). Else it returns nil and why: "late"
// (no call has that number any more) or "mismatch" (a call has it, but the
// result is not its own: a guessed id, or one copied onto another token's
// result); a mismatch leaves the call waiting for its own result.
func (t *pendingTable) takeByCorr(ref corrRef, token string) (*call, string) {
	s := &t.shards[ref.n%pendingShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byCorr[ref.n]
	switch {
	case c == nil:
		return nil, "late"
	case c.secret != ref.secret || (token != "" && token != c.token):
		return nil, "mismatch"
	}
	s.removeLocked(c)
	return c, ""
}

// takeByKey removes and returns the oldest call of token with this method
// and an id of the same JSON value as id (the raw JSON of a result's id),
// or nil. It does not allocate for keys of up to matchKeyStack bytes.
func (t *pendingTable) takeByKey(token string, id []byte, method string) *call {
	var buf [matchKeyStack]byte
	key, ok := appendMatchKey(buf[:0], token, id, method)
	if !ok {
		return nil
	}
	s := &t.shards[maphash.String(t.seed, token)%pendingShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.byKey[string(key)]
	if len(q) == 0 {
		return nil
	}
	c := q[0]
	s.removeLocked(c)
	return c
}

// take removes c if it is still pending; false means it was answered already.
func (t *pendingTable) take(c *call) bool {
	c.shard.mu.Lock()
	defer c.shard.mu.Unlock()
	if c.done {
		return false
	}
	c.shard.removeLocked(c)
	return true
}

// removeLocked marks c done and unlinks it; s.mu must be held.
func (s *pendingShard) removeLocked(c *call) {
	c.done = true
	delete(s.byCorr, c.corr)
	q := s.byKey[c.key]
	for i, o := range q {
		if o == c {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(s.byKey, c.key)
	} else {
		s.byKey[c.key] = q
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stopDrop != nil {
		c.stopDrop()
	}
}

// len returns the number of pending calls.
func (t *pendingTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.byCorr)
		s.mu.Unlock()
	}
	return n
}

// takeAll removes and returns every pending call.
func (t *pendingTable) takeAll() []*call {
	var all []*call
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		start := len(all)
		for _, c := range s.byCorr {
			all = append(all, c)
		}
		for _, c := range all[start:] {
			s.removeLocked(c)
		}
		s.mu.Unlock()
	}
	return all
}
