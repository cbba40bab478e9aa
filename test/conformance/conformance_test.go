// Package conformance checks Piped's WebSocket endpoint against RFC 6455
// case by case: the cases of the Autobahn|Testsuite fuzzing client,
// categories 1–7 (framing, pings and pongs, reserved bits, opcodes,
// fragmentation, UTF-8, close handling) and 9 (limits), adapted to Piped's
// JSON calls (cases_test.go says how) and sent as raw frames built by hand.
//
// Every case runs against two servers: the gateway package's server in
// this process, so that the race detector sees the transport, and a real
// node (the piped binary, against the broker), so that the binary users run
// conforms too.
package conformance

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/gateway"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
	h "github.com/piped-dev/piped/test/harness"
)

func TestMain(m *testing.M) { os.Exit(h.Main(m)) }

// maxMessage takes category 9's largest message (16 MiB) and its call's JSON.
const maxMessage = 16<<20 + 1<<10

// noRouter answers every call that is not answered locally with an error;
// the cases make none (ping is answered by the gateway).
type noRouter struct{}

func (noRouter) Call(_ context.Context, _ string, f *protocol.Frame, _ *routetable.Route, from protocol.Answerer) {
	from.Answer(f.ID, protocol.AppendError(nil, f.ID, protocol.CodeUnavailable, "no router in the conformance suite"))
}

type ready struct{}

func (ready) Ready() error { return nil }

// inProcess serves the gateway in this process; it returns the address.
func inProcess(t *testing.T) string {
	ws := config.Defaults().WS
	ws.MaxMessageBytes = maxMessage
	ws.SendQueueBytes = 64 << 20
	ws.FrameRate = 0 // 9.7 and 9.8 send 1,000 messages at once: RFC 6455, not the frame budget, is tested here
	hub := gateway.NewHub()
	srv := gateway.New(gateway.Options{NodeID: "conformance", WS: ws, Router: noRouter{}, Readiness: ready{}, Hub: hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hub.Close(ctx)
		ts.Close()
	})
	return strings.TrimPrefix(ts.URL, "http://")
}

// node starts a real node; it returns the address of its client port.
func node(t *testing.T) string {
	n := h.StartNode(t, h.WithEnv("PIPED_WS_MAX_MESSAGE_BYTES=16778240", "PIPED_WS_SEND_QUEUE_BYTES=67108864", "PIPED_WS_FRAME_RATE=0"))
	return strings.TrimPrefix(strings.TrimSuffix(n.WSURL(""), "/api/"), "ws://")
}

func TestRFC6455(t *testing.T) {
	big := !testing.Short()
	targets := []struct {
		name string
		addr func(*testing.T) string
	}{{"in-process", inProcess}, {"node", node}}
	for _, target := range targets {
		t.Run(target.name, func(t *testing.T) {
			addr := target.addr(t)
			for _, tc := range cases(big) {
				t.Run(tc.id, func(t *testing.T) { runCase(t, addr, tc) })
			}
		})
	}
}

// runCase sends the case's frames, then checks what the server sends, in
// order, and that it closes the TCP connection after the close handshake.
func runCase(t *testing.T, addr string, tc tcase) {
	c := dialRaw(t, addr, "conformance")
	done := make(chan struct{})
	go func() { // write while reading: large cases fill both directions' buffers
		defer close(done)
		for _, s := range tc.steps {
			if s.b != nil && c.write(s.b, s.chop) != nil {
				return // the server closed the connection; what it sent is checked below
			}
			time.Sleep(s.pause)
		}
	}()
	var got []string
	for i := 0; i < len(tc.want); i++ {
		f, err := c.read(t, 30*time.Second)
		if err != nil {
			t.Fatalf("after %s: %v; want %s", summary(got), err, tc.want[i])
		}
		got = append(got, f)
		if f != tc.want[i] {
			t.Fatalf("frame %d: got %.80q, want %.80q (after %s)", i, f, tc.want[i], summary(got[:i]))
		}
	}
	<-done
	closed := len(tc.want) > 0 && strings.HasPrefix(tc.want[len(tc.want)-1], "close")
	if !closed {
		// Still open: our close is echoed.
		if err := c.write(closeFrame(1000, ""), 0); err != nil {
			t.Fatalf("after %s: our close: %v", summary(got), err)
		}
		if f, err := c.read(t, 5*time.Second); err != nil || f != "close 1000" {
			t.Fatalf("after %s: our close answered with %q (%v), want close 1000", summary(got), f, err)
		}
	}
	// Nothing follows the close frame, and the server closes the TCP connection.
	if f, err := c.read(t, 5*time.Second); err != io.EOF {
		t.Fatalf("after the close: %q, %v; want the server to close the connection", f, err)
	}
}

func summary(frames []string) string {
	if len(frames) > 4 {
		frames = append([]string{"…"}, frames[len(frames)-4:]...)
	}
	if len(frames) == 0 {
		return "nothing"
	}
	return strings.Join(frames, ", ")
}
