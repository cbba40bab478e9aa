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

// Ids are compared by JSON value: a backend's re-encoded id has the key of
// the client's.
func ExampleAppendIDKey() {
	for _, pair := range [][2]string{
		{`"a/1"`, `"a\/1"`},
		{`"é-1"`, `"\u00e9-1"`},
		{`1.50e3`, `1500.0`},
		{`"1"`, `1`},
		{`12345678901234567890123`, `12345678901234567890124`},
	} {
		a, _ := protocol.AppendIDKey(nil, []byte(pair[0]))
		b, _ := protocol.AppendIDKey(nil, []byte(pair[1]))
		fmt.Printf("%s %s same=%v\n", pair[0], pair[1], string(a) == string(b))
	}
	// Output:
	// "a/1" "a\/1" same=true
	// "é-1" "\u00e9-1" same=true
	// 1.50e3 1500.0 same=true
	// "1" 1 same=false
	// 12345678901234567890123 12345678901234567890124 same=false
}
