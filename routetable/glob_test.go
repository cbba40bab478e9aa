package routetable

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// refMatch is a plain recursive matcher of the documented semantics, the
// reference the compiled glob is checked against.
func refMatch(p, s string) bool {
	if p == "" {
		return s == ""
	}
	switch {
	case strings.HasPrefix(p, "**"):
		rest := strings.TrimLeft(p, "*")
		for i := 0; i <= len(s); i++ {
			if refMatch(rest, s[i:]) {
				return true
			}
		}
		return false
	case p[0] == '*':
		for i := 0; i <= len(s); i++ {
			if refMatch(p[1:], s[i:]) {
				return true
			}
			if i < len(s) && s[i] == '.' {
				return false
			}
		}
		return false
	case p[0] == '?':
		r, n := utf8.DecodeRuneInString(s)
		return n > 0 && r != '.' && refMatch(p[1:], s[n:])
	default:
		r, n := utf8.DecodeRuneInString(p)
		r2, n2 := utf8.DecodeRuneInString(s)
		return n2 > 0 && r == r2 && refMatch(p[n:], s[n2:])
	}
}

// TestGlobAgainstReference compares compiled globs (both automata) with
// refMatch on random patterns and methods over a small alphabet.
func TestGlobAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(alphabet []string, n int) string {
		var b strings.Builder
		for range n {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	for range 3000 {
		p := pick([]string{"a", "b", ".", "*", "?", "é"}, 1+rng.IntN(8))
		if !isGlob(p) {
			continue
		}
		g := compileGlob(p)
		for range 20 {
			s := pick([]string{"a", "b", ".", "é"}, rng.IntN(10))
			want := refMatch(p, s)
			if got := g.match(s); got != want {
				t.Fatalf("match(%q, %q) = %v, reference says %v", p, s, got, want)
			}
			mid := s
			if len(s) >= len(g.prefix)+len(g.suffix) && strings.HasPrefix(s, g.prefix) && strings.HasSuffix(s, g.suffix) {
				mid = s[len(g.prefix) : len(s)-len(g.suffix)]
				if g.run(mid) != g.run64(mid) {
					t.Fatalf("pattern %q on %q: run and run64 disagree", p, s)
				}
			}
		}
	}
}
