package conformance

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/piped-dev/piped/internal/wsframe"
)

// rawClient is a WebSocket client that writes frames built by hand, as the
// Autobahn|Testsuite fuzzing client does, and reads the server's frames
// checking each against RFC 6455.
type rawClient struct {
	nc net.Conn
	br *bufio.Reader
}

// dialRaw opens a TCP connection to addr and does the opening handshake
// for /api/{token} by hand.
func dialRaw(t *testing.T, addr, token string) *rawClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET /api/" + token + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: HTTP %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: Sec-WebSocket-Accept %q", got)
	}
	return &rawClient{nc: nc, br: br}
}

// write sends b in one write, or in chunks of chop bytes with a short pause
// between them (Autobahn's "chopped" cases). It stops at the first error:
// a server that fails the connection may close it while frames are still
// being sent.
func (c *rawClient) write(b []byte, chop int) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if chop <= 0 {
		chop = len(b)
	}
	for len(b) > 0 {
		n := min(chop, len(b))
		if _, err := c.nc.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		if len(b) > 0 && chop < 1<<20 {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// read returns the server's next frame, "" with io.EOF once the server
// closed the TCP connection; a frame that breaks RFC 6455 for a server
// (not final, reserved bits, masked, unknown opcode, a control frame over
// 125 bytes) fails the test.
func (c *rawClient) read(t *testing.T, within time.Duration) (string, error) {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(within))
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		if err == io.EOF || strings.Contains(err.Error(), "connection reset") {
			return "", io.EOF
		}
		return "", err
	}
	if h[0]&0x70 != 0 || h[0]&0x80 == 0 || h[1]&0x80 != 0 {
		t.Fatalf("server frame header % x: not final, reserved bits or masked", h)
	}
	op := h[0] & 0x0f
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return "", err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return "", err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if op >= 8 && n > 125 {
		t.Fatalf("server control frame of %d bytes", n)
	}
	if n > 1<<20 {
		t.Fatalf("server frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return "", err
	}
	switch op {
	case 0x1:
		return describeText(t, p), nil
	case 0x8:
		if len(p) == 0 {
			return "close", nil
		}
		return fmt.Sprintf("close %d", binary.BigEndian.Uint16(p)), nil
	case 0x9:
		return "ping", nil
	case 0xA:
		return "pong " + string(p), nil
	}
	t.Fatalf("server frame with opcode %x", op)
	return "", nil
}

// describeText names a Piped answer: "pong <id>" for the answer to a ping
// call, "error <code>" for an error frame.
func describeText(t *testing.T, p []byte) string {
	var f struct {
		Type  string          `json:"type"`
		Event string          `json:"event"`
		ID    json.RawMessage `json:"id"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(p, &f); err != nil {
		t.Fatalf("server text frame is not JSON: %.80q", p)
	}
	switch {
	case f.Type == "event" && f.Event == "pong":
		return "answer " + string(f.ID)
	case f.Type == "error":
		return "error " + f.Error.Code
	}
	return "text " + string(p)
}

// masked builds a client frame: first byte b0 (FIN, RSV, opcode), payload
// masked with a fixed key, the shortest length encoding.
func masked(b0 byte, payload []byte) []byte {
	return wsframe.AppendClientFrame(nil, b0, [4]byte{0x37, 0xfa, 0x21, 0x3d}, payload)
}
