package gateway

import (
	"bufio"
	"reflect"
	"unsafe"

	"github.com/gorilla/websocket"
)

// gorillaReader returns the bufio.Reader gorilla/websocket reads ws through,
// or nil when this version of gorilla has none where expected. Its Buffered
// count is the only way to know whether gorilla holds the next frame
// already: a connection may give up its read goroutine (wait for epoll)
// only when it does not. gorilla has no API for it, so this reads the
// unexported field br; TestGorillaReader fails when a gorilla upgrade moves
// it, and nil keeps every connection on a read goroutine of its own.
func gorillaReader(ws *websocket.Conn) *bufio.Reader {
	f := reflect.ValueOf(ws).Elem().FieldByName("br")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*bufio.Reader]() {
		return nil
	}
	return *(**bufio.Reader)(unsafe.Pointer(f.UnsafeAddr()))
}
