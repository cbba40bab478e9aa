package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
)

// StartIndex is FNV-1a (32 bit) of the node id modulo the number of
// addresses, as docs/deploy.md documents: the values are pinned, so that a
// change of hash (which would move every node of a deployment) shows.
func TestStartIndex(t *testing.T) {
	tests := []struct {
		id   string
		n    int
		want int
	}{
		{"node-1", 0, 0},
		{"node-1", 1, 0},
		{"node-1", 2, 1}, // FNV-1a 32 of "node-1" is 1422144387
		{"node-1", 3, 0},
		{"node-2", 3, 2}, // 1438922006
		{"node-3", 3, 1}, // 1455699625
		{"n1", 3, 1},     // 70638592
		{"n1", 5, 2},
		{"3d8d9e1c", 5, 3}, // a Fly.io machine id: 1570723888
		{"piped-a", 2, 1},  // 3845496333: above 2^31, no negative index
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s of %d", tt.id, tt.n), func(t *testing.T) {
			for range 3 { // deterministic
				if got := StartIndex(tt.id, tt.n); got != tt.want {
					t.Fatalf("StartIndex(%q, %d) = %d, want %d", tt.id, tt.n, got, tt.want)
				}
			}
		})
	}
}

// The nodes of a deployment spread over the brokers: 300 node ids named
// like a deployment's over 3 addresses put about a third on each.
func TestStartIndexSpreads(t *testing.T) {
	counts := make([]int, 3)
	for i := range 300 {
		counts[StartIndex(fmt.Sprintf("piped-%d", i), len(counts))]++
	}
	for i, c := range counts {
		if c < 70 || c > 130 {
			t.Errorf("address %d is the first of %d of 300 nodes, want about 100 (all: %v)", i, c, counts)
		}
	}
}

// Every attempt takes the next address, round the list, from StartIndex.
func TestBrokersRotation(t *testing.T) {
	tests := []struct {
		name string
		urls []string
		id   string
		want []int // indexes of the first attempts
	}{
		{"one address: always it", []string{"amqp://a/"}, "node-1", []int{0, 0, 0}},
		{"two, starting at 1", []string{"amqp://a/", "amqp://b/"}, "node-1", []int{1, 0, 1, 0}},
		{"three, starting at 0", []string{"amqp://a/", "amqp://b/", "amqp://c/"}, "node-1", []int{0, 1, 2, 0, 1, 2, 0}},
		{"three, starting at 2", []string{"amqp://a/", "amqp://b/", "amqp://c/"}, "node-2", []int{2, 0, 1, 2}},
		{"three, starting at 1", []string{"amqp://a/", "amqp://b/", "amqp://c/"}, "node-3", []int{1, 2, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBrokers(tt.urls, tt.id)
			for i, want := range tt.want {
				url, index := b.take()
				if index != want || url != tt.urls[want] {
					t.Fatalf("attempt %d: %s (index %d), want %s (index %d)", i, url, index, tt.urls[want], want)
				}
			}
		})
	}
}

// logRecorder is a slog.Handler that keeps every record's message and
// attributes as one line.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}

func (l *logRecorder) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// closedPorts returns n TCP ports on 127.0.0.1 that refuse connections.
func closedPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	return ports
}

// With amqp.urls the router's attempts go to StartIndex's address first and
// then round the list, one address per attempt, within the backoff; each
// failed attempt's log line names its address, without the password, and
// the node is not ready meanwhile. With amqp.url alone every attempt goes to
// that address.
func TestRunRotatesBrokerAddresses(t *testing.T) {
	ports := closedPorts(t, 3)
	urls := make([]string, len(ports))
	for i, p := range ports {
		urls[i] = fmt.Sprintf("amqp://piped:s3cret@127.0.0.1:%d/", p)
	}
	tests := []struct {
		name string
		id   string
		set  func(a *config.AMQP)
		want []int // indexes into ports of the first attempts
	}{
		{"amqp.urls from node-2's start", "node-2", func(a *config.AMQP) { a.URLs = urls }, []int{2, 0, 1, 2, 0, 1}},
		{"amqp.urls from node-3's start", "node-3", func(a *config.AMQP) { a.URLs = urls }, []int{1, 2, 0, 1}},
		{"amqp.url alone", "node-2", func(a *config.AMQP) { a.URL = urls[1] }, []int{1, 1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Defaults().AMQP
			cfg.ReconnectMin, cfg.ReconnectMax = time.Millisecond, 4*time.Millisecond
			tt.set(&cfg)
			logs := &logRecorder{}
			r := New(Options{NodeID: tt.id, AMQP: cfg, Timeout: time.Minute, Hub: &fakeHub{},
				Logger: slog.New(logs), Metrics: telemetry.NewMetrics()})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			var attempts []string
			deadline := time.Now().Add(20 * time.Second)
			for {
				attempts = attempts[:0]
				for _, l := range logs.all() {
					if strings.HasPrefix(l, "cannot connect to the broker; retrying") {
						attempts = append(attempts, l)
					}
				}
				if len(attempts) >= len(tt.want) || time.Now().After(deadline) {
					break
				}
				if err := r.Ready(); !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrConnect) {
					t.Errorf("Ready() = %v while no broker answers, want not connected", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			if len(attempts) < len(tt.want) {
				t.Fatalf("%d attempts logged, want at least %d", len(attempts), len(tt.want))
			}
			for i, want := range tt.want {
				addr := fmt.Sprintf("amqp://piped:xxxxx@127.0.0.1:%d/", ports[want])
				if !strings.Contains(attempts[i], addr) {
					t.Errorf("attempt %d: %s\nwant address %d (%s)", i, attempts[i], want, addr)
				}
			}
			for _, l := range logs.all() {
				if strings.Contains(l, "s3cret") {
					t.Errorf("a log line shows the password: %s", l)
				}
			}
		})
	}
}
