package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// frameSeeds are seeds for FuzzParseFrame (more live in
// testdata/fuzz/FuzzParseFrame).
var frameSeeds = []string{
	`{"id":1,"method":"user.get","payload":{"id":"u-1"}}`,
	`{"id":"c1","method":"m","payload":null,"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"a=b"}`,
	`{"id":12345678901234567890123,"method":"m"}`,
	`{"id":1.000000000000000000001,"method":"m","payload":{"s":"\u00e9"}}`,
	`{"meth\u006fd":"m","\u0069d":"\ud83d\ude00","method":"x"}`,
	`{"method":"a","method":1}`,
	`{"id":{},"method":""}`,
	`{"id":[1],"payload":[]}`,
	`{"method":"m","traceparent":1}`,
	`{"method":"m","tracestate":null}`,
	` { "method" : "m" , "payload" : { "a" : [ 1 , "}" ] } } `,
	`[]`,
	`null`,
	`{`,
	``,
	"{\"method\":\"\xff\"}",
	`{"method":"\ud800\u0041"}`,
	`{"method":"` + strings.Repeat(`\u0061`, 256) + `"}`,
}

// inboundSeeds are seeds for FuzzParseInbound (more live in
// testdata/fuzz/FuzzParseInbound).
var inboundSeeds = []string{
	`{"type":"response","id":1,"token":"conn-1","payload":{"ok":true}}`,
	`{"token":"t"}`,
	`{"a":1,"token":"t"}`,
	`{"token":"t","a":1}`,
	`{"a":1, "token":"x" ,"b":2,"token":"t"}`,
	"{\n  \"token\": \"t\",\n  \"type\": \"event\"\n}\n",
	`{"\u0074oken":"t","t\u0079pe":"x","method":"m","id":null}`,
	`{"token":""}`,
	`{"token":1}`,
	`{"token":"t","token":null}`,
	`{"o":{"token":"t"}}`,
	`[{"token":"t"}]`,
	`"token"`,
	`{"token":"t",}`,
	``,
	`{"type":"event","token":"t","connection":"n1.0123456789abcdef","event":"e"}`,
	`{"type":"event","token":"t","connection":1}`,
	`{"type":"event","token":"t","connection":null,"conn\u0065ction":"c"}`,
	`{"type":"broadcast","event":"e","payload":{"token":"inner"}}`,
	`{"type":"disconnect","token":"t","code":4001,"reason":"bye"}`,
}

// controlSeeds are seeds for FuzzParseControl.
var controlSeeds = []string{
	`{"type":"disconnect","token":"t"}`,
	`{"type":"disconnect","token":"t","connection":"n1.0123456789abcdef","code":4321,"reason":"banned"}`,
	`{"type":"disconnect","token":"t","code":4001.5,"reason":null}`,
	`{"type":"disconnect","token":"t","code":"4001"}`,
	`{"type":"disconnect","token":"t","code":-1e3}`,
	`{"type":"disconnect","token":"t","code":12345678901234567890}`,
	`{"type":"disconnect","token":"","connection":"c"}`,
	`{"type":"disconnect","token":"t","connection":""}`,
	`{"type":"disconnect","token":"t","reason":"\u00e9\ud83d\ude00"}`,
	`{"type":"disconnect","tok\u0065n":"t","token":null}`,
	`{"type":"broadcast","event":"e"}`,
	`{"type":"broadcast","event":"e","payload":null}`,
	`{"type":"broadcast","event":"\u0065","payload":[1,{"a":"}"}]}`,
	`{"type":"broadcast","event":""}`,
	`{"type":"broadcast","event":7}`,
	`{"type":"broadcast","event":"a","event":null}`,
	`{"t\u0079pe":"broadcast","event":"e","type":"event"}`,
	`{"type":"result"}`,
	`{}`,
	`[]`,
	``,
}

func FuzzParseFrame(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		frame, err := ParseFrame(b)
		if err := checkFrameAgainstRef(b); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FrameError", err, err)
			}
			// The error frame must be valid JSON even when it echoes
			// arbitrary input as its message.
			out := AppendError(nil, fe.ID, CodeBadRequest, string(b))
			if !json.Valid(out) {
				t.Fatalf("AppendError output %q is not valid JSON", out)
			}
			var v struct {
				Error struct{ Message string }
			}
			if err := json.Unmarshal(out, &v); err != nil || v.Error.Message != string([]rune(string(b))) {
				t.Fatalf("AppendError message round trip: %v, %q", err, v.Error.Message)
			}
			return
		}
		if frame.Method == "" || len(frame.Method) > MaxMethodLength {
			t.Fatalf("bad Method %q", frame.Method)
		}
		if err := checkCall(&frame, string(b)); err != nil {
			t.Fatal(err)
		}
		if out := AppendPong(nil, frame.ID); !json.Valid(out) {
			t.Fatalf("AppendPong output %q is not valid JSON", out)
		}
	})
}

func FuzzParseInbound(f *testing.F) {
	for _, s := range inboundSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseInbound(b)
		if err := checkInboundAgainstRef(b); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			if !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrNotObject) && !errors.Is(err, ErrNoToken) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if in.Token == "" {
			t.Fatal("empty Token on success")
		}
		if msg, err := ParseMessage(b); err != nil || msg.Token != in.Token || !sameRaw(msg.Body, in.Body) {
			t.Fatalf("ParseMessage = %+v, %v; ParseInbound = %+v", msg, err, in)
		}
		// checkInboundAgainstRef already checked Body; check it once more
		// without the reference map, as the documented invariant.
		if err := checkBody(b, in.Body, nil); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseControl(f *testing.F) {
	for _, s := range controlSeeds {
		f.Add([]byte(s))
	}
	for _, s := range inboundSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseControl(b)
		if err := checkControlAgainstRef(b); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			if !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrNotObject) && !errors.Is(err, ErrBadControl) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		switch c.Type {
		case TypeDisconnect:
			if c.Token == "" {
				t.Fatal("disconnect without a token on success")
			}
		case TypeBroadcast:
			if len(c.Event) < 3 {
				t.Fatalf("broadcast event %q", c.Event)
			}
		default:
			t.Fatalf("Type %q on success", c.Type)
		}
	})
}
