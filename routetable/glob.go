package routetable

import (
	"math/bits"
	"strings"
	"unicode/utf8"
)

// maxPatternBytes bounds a match pattern; a method is at most
// protocol.MaxMethodLength (255) bytes, so a longer pattern can only be a
// mistake. It also bounds the glob automaton to globWords*64 states.
const maxPatternBytes = 255

// globWords is the size of the glob automaton's state set in 64-bit words:
// one state per pattern character plus the accepting one.
const globWords = (maxPatternBytes + 1 + 63) / 64

// isGlob reports whether pattern has wildcards; without any it is an exact
// method name.
func isGlob(pattern string) bool { return strings.ContainsAny(pattern, "*?") }

// tokKind is one element of a compiled glob.
type tokKind uint8

const (
	tokLit  tokKind = iota // one literal character
	tokOne                 // "?": one character other than "."
	tokStar                // "*": any run of characters other than "."
	tokAny                 // "**": any run of characters
)

type tok struct {
	kind tokKind
	r    rune // tokLit only
}

// glob is a compiled pattern. Matching strips the literal prefix and suffix
// with plain string comparisons and runs the rest (mid, which starts and
// ends with a wildcard) through a small NFA whose state set is a bitset on
// the stack: time linear in len(method)·len(mid)/64, no backtracking and no
// allocation, whatever the pattern.
type glob struct {
	prefix, suffix string
	mid            []tok
	// dollar: the pattern starts with "$" and may match the reserved
	// lifecycle methods; others never do.
	dollar bool
}

// compileGlob compiles a pattern that isGlob reported as one. A run of two
// or more stars is "**".
func compileGlob(pattern string) glob {
	g := glob{dollar: strings.HasPrefix(pattern, "$")}
	var toks []tok
	for i := 0; i < len(pattern); {
		switch pattern[i] {
		case '*':
			j := i
			for j < len(pattern) && pattern[j] == '*' {
				j++
			}
			if j-i == 1 {
				toks = append(toks, tok{kind: tokStar})
			} else {
				toks = append(toks, tok{kind: tokAny})
			}
			i = j
		case '?':
			toks = append(toks, tok{kind: tokOne})
			i++
		default:
			r, n := utf8.DecodeRuneInString(pattern[i:])
			toks = append(toks, tok{kind: tokLit, r: r})
			i += n
		}
	}
	first := strings.IndexAny(pattern, "*?")
	last := strings.LastIndexAny(pattern, "*?")
	g.prefix, g.suffix = pattern[:first], pattern[last+1:]
	nPrefix := utf8.RuneCountInString(g.prefix)
	nSuffix := utf8.RuneCountInString(g.suffix)
	g.mid = toks[nPrefix : len(toks)-nSuffix]
	return g
}

// match reports whether method matches the glob.
func (g *glob) match(method string) bool {
	if len(method) < len(g.prefix)+len(g.suffix) ||
		!strings.HasPrefix(method, g.prefix) || !strings.HasSuffix(method, g.suffix) {
		return false
	}
	s := method[len(g.prefix) : len(method)-len(g.suffix)]
	if len(g.mid) == 1 { // the common shapes: "billing.*", "admin.**", "v?.get"
		switch g.mid[0].kind {
		case tokStar:
			return strings.IndexByte(s, '.') < 0
		case tokAny:
			return true
		case tokOne:
			r, n := utf8.DecodeRuneInString(s)
			return n == len(s) && n > 0 && r != '.'
		}
	}
	if len(g.mid) < 64 {
		return g.run64(s)
	}
	return g.run(s)
}

// run64 is run for a mid of fewer than 64 elements: the state set fits one word.
func (g *glob) run64(s string) bool {
	n := len(g.mid)
	cur := g.closure64(1)
	for len(s) > 0 {
		r, size := rune(s[0]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s)
		}
		s = s[size:]
		var next uint64
		for word := cur &^ (1 << n); word != 0; word &= word - 1 {
			i := bits.TrailingZeros64(word)
			switch t := g.mid[i]; t.kind {
			case tokLit:
				if t.r == r {
					next |= 1 << (i + 1)
				}
			case tokOne:
				if r != '.' {
					next |= 1 << (i + 1)
				}
			case tokStar:
				if r != '.' {
					next |= 1 << i
				}
			case tokAny:
				next |= 1 << i
			}
		}
		if next == 0 {
			return false
		}
		cur = g.closure64(next)
	}
	return cur&(1<<n) != 0
}

func (g *glob) closure64(st uint64) uint64 {
	for i, t := range g.mid {
		if (t.kind == tokStar || t.kind == tokAny) && st&(1<<i) != 0 {
			st |= 1 << (i + 1)
		}
	}
	return st
}

// run matches s against mid with the NFA: state i means "mid[:i] matched".
func (g *glob) run(s string) bool {
	n := len(g.mid)
	var cur, next [globWords]uint64
	cur[0] = 1
	g.closure(&cur)
	for len(s) > 0 {
		r, size := rune(s[0]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s)
		}
		s = s[size:]
		next = [globWords]uint64{}
		alive := false
		for w := range cur {
			for word := cur[w]; word != 0; word &= word - 1 {
				i := w*64 + bits.TrailingZeros64(word)
				if i >= n {
					continue // accepting state: nothing more to consume
				}
				t := g.mid[i]
				switch t.kind {
				case tokLit:
					if t.r == r {
						set(&next, i+1)
						alive = true
					}
				case tokOne:
					if r != '.' {
						set(&next, i+1)
						alive = true
					}
				case tokStar:
					if r != '.' {
						set(&next, i)
						alive = true
					}
				case tokAny:
					set(&next, i)
					alive = true
				}
			}
		}
		if !alive {
			return false
		}
		g.closure(&next)
		cur = next
	}
	return cur[n/64]&(1<<(n%64)) != 0
}

// closure adds the states reachable by letting stars match nothing; in
// increasing order, so a run of stars propagates in one pass.
func (g *glob) closure(st *[globWords]uint64) {
	for i, t := range g.mid {
		if (t.kind == tokStar || t.kind == tokAny) && st[i/64]&(1<<(i%64)) != 0 {
			set(st, i+1)
		}
	}
}

func set(s *[globWords]uint64, i int) { s[i/64] |= 1 << (i % 64) }
