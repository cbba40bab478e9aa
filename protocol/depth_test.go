package protocol

import (
	"strings"
	"testing"
)

func TestDeeperThan(t *testing.T) {
	nest := func(n int) string { return strings.Repeat(`{"a":`, n-1) + "{}" + strings.Repeat("}", n-1) }
	tests := []struct {
		v    string
		max  int
		want bool
	}{
		{`{}`, 1, false},
		{`{"a":1}`, 1, false},
		{`{"a":{}}`, 1, true},
		{`{"a":[1,[2]]}`, 3, false},
		{`{"a":[1,[2]]}`, 2, true},
		{`{"s":"{[{[{[{["}`, 1, false},       // brackets inside strings do not count
		{`{"s":"\\\"{{{{"}`, 1, false},       // nor after escaped quotes
		{`{"a":{},"b":{},"c":{}}`, 2, false}, // siblings do not add up
		{nest(64), 64, false},
		{nest(65), 64, true},
		{nest(5000), 64, true},
	}
	for _, tt := range tests {
		if got := DeeperThan([]byte(tt.v), tt.max); got != tt.want {
			t.Errorf("DeeperThan(%.40s, %d) = %v, want %v", tt.v, tt.max, got, tt.want)
		}
	}
}
