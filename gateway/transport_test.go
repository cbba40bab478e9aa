package gateway

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/internal/wsframe"
)

// serverFrame is one frame as the client read it off the socket.
type serverFrame struct {
	op      byte
	payload []byte
}

func (f serverFrame) String() string {
	if f.op == wsframe.OpClose && len(f.payload) >= 2 {
		return fmt.Sprintf("close %d %q", binary.BigEndian.Uint16(f.payload), f.payload[2:])
	}
	return fmt.Sprintf("op %x %.40q", f.op, f.payload)
}

// readServerFrames reads frames from the client's raw socket until EOF (or
// within), checking each against RFC 6455 for a server: final, no reserved
// bits, unmasked, a known opcode. It fails the test on anything else,
// which is also what bytes of one frame inside another look like.
func readServerFrames(t *testing.T, nc net.Conn, within time.Duration) []serverFrame {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(within))
	br := bufio.NewReaderSize(nc, 64<<10)
	var frames []serverFrame
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			if err == io.EOF || isReset(err) {
				return frames
			}
			t.Fatalf("after %d frames: %v", len(frames), err)
		}
		if h[0]&0x70 != 0 || h[0]&0x80 == 0 || h[1]&0x80 != 0 {
			t.Fatalf("frame %d: bad header % x (after %v)", len(frames), h, lastFrames(frames))
		}
		op := h[0] & 0x0f
		switch op {
		case wsframe.OpText, wsframe.OpClose, wsframe.OpPing, wsframe.OpPong:
		default:
			t.Fatalf("frame %d: opcode %x (after %v)", len(frames), op, lastFrames(frames))
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				t.Fatal(err)
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				t.Fatal(err)
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 1<<24 {
			t.Fatalf("frame %d: length %d (after %v)", len(frames), n, lastFrames(frames))
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatalf("frame %d: payload: %v", len(frames), err)
		}
		frames = append(frames, serverFrame{op, p})
	}
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

func lastFrames(frames []serverFrame) []serverFrame {
	return frames[max(0, len(frames)-3):]
}

// closePayload is a close frame's payload: code and reason.
func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// pollModes runs a test with the poller (Linux) and with a read goroutine
// per connection (elsewhere, or a socket without a descriptor).
var pollModes = []struct {
	name string
	poll bool
}{{"poller", true}, {"read goroutine", false}}

func newModeServer(t *testing.T, poll bool, tweak func(*config.WS)) *testServer {
	ts := newTestServer(t, tweak)
	if !poll {
		ts.srv.cfg.poll = nil // before any connection: nothing reads it yet
	}
	return ts
}

// The client's ping and close arrive in one write, behind a call: its
// answer, then the pong (RFC 6455 5.5.2: every ping read before the close
// is answered), then the close, echoing the client's code, and nothing
// after it: the server closes the TCP connection.
func TestPongBeforeClose(t *testing.T) {
	tests := []struct {
		name   string
		frames [][]byte
		want   []string
	}{
		{"ping, close", [][]byte{maskedFrame(0x89, []byte("abc")), maskedFrame(0x88, closePayload(1000, ""))},
			[]string{`op a "abc"`, `close 1000 ""`}},
		{"call, ping, close", [][]byte{maskedText(`{"id":7,"method":"m"}`), maskedFrame(0x89, []byte("p")), maskedFrame(0x88, closePayload(4321, ""))},
			[]string{`op 1 "{\"type\":\"result\",\"method\":\"m\"}"`, `op a "p"`, `close 4321 ""`}},
		{"two pings, close without a code", [][]byte{maskedFrame(0x89, []byte("1")), maskedFrame(0x89, []byte("2")), maskedFrame(0x88, nil)},
			[]string{`op a "1"`, `op a "2"`, `op 8 ""`}},
	}
	for _, mode := range pollModes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				ts := newModeServer(t, mode.poll, nil)
				c := ts.dial(t, "tok")
				nc := c.NetConn()
				var all []byte
				for _, f := range tt.frames {
					all = append(all, f...)
				}
				if _, err := nc.Write(all); err != nil {
					t.Fatal(err)
				}
				frames := readServerFrames(t, nc, 5*time.Second)
				var got []string
				for _, f := range frames {
					got = append(got, f.String())
				}
				if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
					t.Fatalf("server sent\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
				waitFor(t, func() bool { return ts.hub.Len() == 0 })
			})
		}
	}
}

// Results from several goroutines, pings (the server's every millisecond
// and the client's) and a close race while the client's socket buffer is
// full. Read afterwards, the stream is whole frames only, every result
// accepted before the close arrives intact and in order before the close
// frame, and nothing follows the close frame.
func TestCloseRaceKeepsFrames(t *testing.T) {
	for _, mode := range pollModes {
		for _, clientCloses := range []bool{true, false} {
			name := mode.name + "/server closes"
			if clientCloses {
				name = mode.name + "/client closes"
			}
			t.Run(name, func(t *testing.T) {
				ts := newModeServer(t, mode.poll, func(ws *config.WS) {
					ws.SendQueueBytes = 256 << 20
					ws.PingInterval = time.Millisecond
					ws.PongTimeout = time.Minute
				})
				client := ts.dial(t, "race")
				nc := client.NetConn()
				c := serverConn(t, ts, "race")
				const senders, perSender = 4, 3000
				accepted := make([]int, senders)
				var wg sync.WaitGroup
				for s := range senders {
					wg.Go(func() {
						for i := range perSender {
							msg := fmt.Appendf(nil, "s%d-%06d|%s", s, i, strings.Repeat("m", 100+(i*37+s*11)%4000))
							if !c.Send(msg) {
								return
							}
							accepted[s]++
						}
					})
				}
				// Close midway, with the client's pings racing it.
				time.Sleep(20 * time.Millisecond)
				for range 3 {
					if _, err := nc.Write(maskedFrame(0x89, []byte("cp"))); err != nil {
						t.Fatal(err)
					}
				}
				if clientCloses {
					if _, err := nc.Write(maskedFrame(0x88, closePayload(1000, ""))); err != nil {
						t.Fatal(err)
					}
				} else {
					c.Close(DisconnectBackend)
				}
				wg.Wait()
				if !clientCloses {
					// The client answers the server's close after reading it:
					// read everything, answering when the close comes.
					go func() {
						time.Sleep(100 * time.Millisecond)
						_, _ = nc.Write(maskedFrame(0x88, closePayload(1000, "")))
					}()
				}
				frames := readServerFrames(t, nc, 20*time.Second)
				checkRaceFrames(t, frames, accepted, clientCloses)
				waitFor(t, func() bool { return ts.hub.Len() == 0 })
			})
		}
	}
}

var raceMessage = regexp.MustCompile(`^s(\d)-(\d{6})\|m+$`)

func checkRaceFrames(t *testing.T, frames []serverFrame, accepted []int, clientCloses bool) {
	t.Helper()
	next := make([]int, len(accepted))
	closes := 0
	for i, f := range frames {
		if closes > 0 {
			t.Fatalf("frame %d follows the close frame: %v", i, f)
		}
		switch f.op {
		case wsframe.OpClose:
			closes++
			code := int(binary.BigEndian.Uint16(f.payload))
			if want := map[bool]int{true: 1000, false: DisconnectBackend.Code}[clientCloses]; code != want {
				t.Fatalf("close code %d, want %d", code, want)
			}
		case wsframe.OpText:
			m := raceMessage.FindSubmatch(f.payload)
			if m == nil {
				t.Fatalf("frame %d is not one whole result: %.60q", i, f.payload)
			}
			s, _ := strconv.Atoi(string(m[1]))
			n, _ := strconv.Atoi(string(m[2]))
			if n != next[s] {
				t.Fatalf("sender %d: result %d, want %d", s, n, next[s])
			}
			next[s]++
		}
	}
	if closes != 1 {
		t.Fatalf("%d close frames", closes)
	}
	for s := range accepted {
		if next[s] != accepted[s] {
			t.Errorf("sender %d: %d results arrived, %d were accepted", s, next[s], accepted[s])
		}
	}
	t.Logf("%d frames, accepted %v", len(frames), accepted)
}

// A text message that is not valid UTF-8, whole or in fragments, fails the
// connection with 1007 (RFC 6455 8.1); nothing of it is handled.
func TestInvalidUTF8Closes1007(t *testing.T) {
	bad := `{"id":"` + "\xce\xba\xe1\xbd" + `","method":"ping"}`
	tests := []struct {
		name   string
		frames [][]byte
	}{
		{"whole", [][]byte{maskedText(bad)}},
		{"fragmented", [][]byte{maskedFrame(0x01, []byte(bad[:8])), maskedFrame(0x80, []byte(bad[8:]))}},
		{"close reason", [][]byte{maskedFrame(0x88, append(closePayload(1000, ""), 0xff))}},
	}
	for _, mode := range pollModes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				ts := newModeServer(t, mode.poll, nil)
				c := ts.dial(t, "tok")
				nc := c.NetConn()
				for _, f := range tt.frames {
					if _, err := nc.Write(f); err != nil {
						t.Fatal(err)
					}
				}
				frames := readServerFrames(t, nc, 5*time.Second)
				if len(frames) != 1 || frames[0].op != wsframe.OpClose || binary.BigEndian.Uint16(frames[0].payload) != 1007 {
					t.Fatalf("server sent %v, want one close 1007", frames)
				}
				waitFor(t, func() bool { return ts.hub.Len() == 0 })
				if n := len(ts.router.calls); n != 0 {
					t.Fatalf("%d calls reached the router", n)
				}
			})
		}
	}
}
