//go:build !linux

package gateway

import "net"

// socketFD reports no descriptor: outside Linux every frame goes through
// the writer goroutine and every connection keeps a read goroutine.
func socketFD(net.Conn) int32 { return -1 }

func writeNonBlocking(int, []byte) (int, error) { return 0, errNoFD }

func (c *Conn) readFD([]byte) (int, error) { return 0, errNoFD }

// shutdownSocket reports false: cut closes the socket instead.
func shutdownSocket(net.Conn) bool { return false }
