package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIdleHold(t *testing.T) {
	for _, tc := range []struct {
		name       string
		hold, ping time.Duration
		quick      bool
		want       time.Duration
	}{
		{"default: the floor", 0, 2 * time.Second, false, 20 * time.Second},
		{"long interval: 3 intervals", 0, 10 * time.Second, false, 30 * time.Second},
		{"quick: 3 intervals", 0, 2 * time.Second, true, 6 * time.Second},
		{"given wins", 9 * time.Second, 2 * time.Second, false, 9 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := idleHold(tc.hold, tc.ping, tc.quick)
			if got != tc.want {
				t.Errorf("idleHold(%v, %v, %v) = %v, want %v", tc.hold, tc.ping, tc.quick, got, tc.want)
			}
			if got < idleMinPings*tc.ping {
				t.Errorf("idleHold = %v, shorter than %d ping intervals", got, idleMinPings)
			}
		})
	}
}

func TestIdleNodeEnv(t *testing.T) {
	got := idleNodeEnv(2 * time.Second)
	want := []string{"PIPED_WS_PING_INTERVAL=2s", "PIPED_WS_PONG_TIMEOUT=6s"}
	if !slices.Equal(got, want) {
		t.Errorf("idleNodeEnv(2s) = %q, want %q", got, want)
	}
}

func TestParseFlagsIdle(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		wantPing  time.Duration
		wantHold  time.Duration
		wantError string
	}{
		{"defaults", []string{"-only", "idle"}, 2 * time.Second, 20 * time.Second, ""},
		{"quick", []string{"-quick", "-only", "idle"}, 2 * time.Second, 6 * time.Second, ""},
		{"quick, longer interval", []string{"-quick", "-only", "idle", "-idle-ping-interval", "5s"}, 5 * time.Second, 15 * time.Second, ""},
		{"hold given", []string{"-only", "idle", "-idle-hold", "30s"}, 2 * time.Second, 30 * time.Second, ""},
		{"hold under 2 intervals", []string{"-only", "idle", "-idle-hold", "3s"}, 0, 0, "-idle-hold 3s"},
		{"interval under 1s", []string{"-only", "idle", "-idle-ping-interval", "500ms"}, 0, 0, "-idle-ping-interval 500ms"},
		{"not checked without idle", []string{"-only", "rpc", "-idle-hold", "3s"}, 2 * time.Second, 3 * time.Second, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("parseFlags(%q) error = %v, want one containing %q", tc.args, err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if o.idlePing != tc.wantPing || o.idleHold != tc.wantHold {
				t.Errorf("parseFlags(%q): ping %v, hold %v; want %v, %v", tc.args, o.idlePing, o.idleHold, tc.wantPing, tc.wantHold)
			}
		})
	}
}

func TestIdleRowConditions(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    idleResult
		want string
	}{
		{"held", idleResult{Conns: 15000, PingInterval: 2, HoldSeconds: 20.01, PingsPerConn: 10}, "at 15000 (after 10.0 pings each, a ping every 2 s, held 20 s)"},
		{"held, forced GC", idleResult{Conns: 5000, PingInterval: 1.5, HoldSeconds: 6, PingsPerConn: 4, ForcedGC: true}, "at 5000 (after 4.0 pings each, a ping every 1.5 s, held 6 s, then a forced GC)"},
		{"a run from before the hold", idleResult{Conns: 15000}, "at 15000 (after settling)"},
		{"a run from before the hold, forced GC", idleResult{Conns: 15000, ForcedGC: true}, "at 15000 (after a forced GC)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &report{Idle: &tc.r}
			if table := r.table(); !strings.Contains(table, "idle: node RSS KiB per connection "+tc.want+" |") {
				t.Errorf("table has no idle row %q:\n%s", tc.want, table)
			}
		})
	}
}
