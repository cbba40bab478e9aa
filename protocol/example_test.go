package protocol_test

import (
	"errors"
	"fmt"

	"github.com/piped-dev/piped/protocol"
)

func ExampleParseFrame() {
	msg := []byte(`{"id":12345678901234567890123,"method":"user.get","payload":{"price":1.10}}`)
	f, err := protocol.ParseFrame(msg)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Publish the call for the client's connection token.
	fmt.Printf("%s\n", protocol.AppendCall(nil, &f, "conn-1"))

	// A rejected frame is answered with an error frame echoing its id.
	_, err = protocol.ParseFrame([]byte(`{"id":"c2","method":""}`))
	var fe *protocol.FrameError
	if errors.As(err, &fe) {
		fmt.Printf("%s\n", protocol.AppendError(nil, fe.ID, protocol.CodeBadRequest, fe.Reason))
	}
	// Output:
	// {"id":12345678901234567890123,"method":"user.get","token":"conn-1","payload":{"price":1.10}}
	// {"type":"error","id":"c2","error":{"code":"bad_request","message":"method must not be empty"}}
}

func ExampleParseInbound() {
	msg := []byte(`{"type":"response","id":7,"token":"conn-1","payload":{"ok":true}}`)
	in, err := protocol.ParseInbound(msg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(in.Token, in.Type, string(in.ID))
	fmt.Println(string(in.Body))

	_, err = protocol.ParseInbound([]byte(`{"type":"response"}`))
	fmt.Println(errors.Is(err, protocol.ErrNoToken))
	// Output:
	// conn-1 response 7
	// {"type":"response","id":7,"payload":{"ok":true}}
	// true
}
