package gateway

import (
	"time"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/routetable"
)

// Limits are the per-node and per-connection limits that a reload may
// change while connections stay open (see Server.SetLimits).
type Limits struct {
	// MaxInflight bounds the calls with an id awaiting their answer, per connection.
	MaxInflight int
	// RatePerSecond and RateBurst are the per-connection call token bucket; 0 disables it.
	RatePerSecond float64
	RateBurst     int
	// MaxConnections refuses upgrades beyond this many open connections; 0 = no limit.
	MaxConnections int
}

// LimitsOf returns the limits of ws.
func LimitsOf(ws config.WS) Limits {
	return Limits{MaxInflight: ws.MaxInflight, RatePerSecond: ws.RatePerSecond, RateBurst: ws.RateBurst, MaxConnections: ws.MaxConnections}
}

// SetLimits makes l the limits of every connection, open or new, from its
// next call on; a connection's ws.rate_per_second bucket keeps its tokens
// (at most the new burst). Safe for concurrent use.
func (s *Server) SetLimits(l Limits) { s.cfg.limits.Store(&l) }

// tokenBucket is a per-connection call rate limit. Owned by the read loop:
// not safe for concurrent use. A zero rate disables it.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
	lim    *Limits // the limits rate and burst were taken from (setLimits)
}

func newTokenBucket(rate float64, burst int) tokenBucket {
	return tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// setLimits takes rate and burst from l when l is not the limits the
// bucket has: the tokens stay (capped at the new burst), and a bucket that
// was off starts full.
func (b *tokenBucket) setLimits(l *Limits) {
	if b.lim == l {
		return
	}
	if b.lim == nil || b.rate <= 0 {
		b.tokens = float64(l.RateBurst)
	}
	b.lim = l
	b.rate, b.burst = l.RatePerSecond, float64(l.RateBurst)
	b.tokens = min(b.tokens, b.burst)
}

// allow takes one token if there is one at time now.
func (b *tokenBucket) allow(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// routeBucket is a connection's bucket for one route with a rate.
type routeBucket struct {
	rt     *routetable.Route
	bucket tokenBucket
}

// frameBudget is a connection's budget of frames (ws.frame_rate,
// ws.frame_burst): every frame the client sends draws one. Below zero the
// frames are refused, and burst frames below zero the connection is
// closed: what one client can make the node do is bounded whatever it
// sends. Owned by the reader: not safe for concurrent use. A zero rate
// disables it.
type frameBudget struct {
	rate, burst float64
	tokens      float64 // from burst down to -burst
	last        time.Time
}

func newFrameBudget(rate float64, burst int) frameBudget {
	return frameBudget{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// take draws one frame at time now. ok: within the budget. over: the
// client went on sending burst frames after being refused; close it.
func (b *frameBudget) take(now time.Time) (ok, over bool) {
	if b.rate <= 0 {
		return true, false
	}
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	b.tokens--
	return b.tokens >= 0, b.tokens < -b.burst
}
