//go:build !linux

package gateway

const maxInlineFrame = 2048

// socketFD reports no descriptor: outside Linux every message goes through
// the writer goroutine.
func socketFD(*Conn) int32 { return -1 }

func writeTextFrame(int, []byte, *[maxInlineFrame]byte) (int, []byte, error) {
	return 0, nil, errNoFD
}
