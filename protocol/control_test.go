package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseControl(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Control
	}{
		{name: "disconnect, token only", in: `{"type":"disconnect","token":"t"}`,
			want: Control{Type: TypeDisconnect, Token: "t"}},
		{name: "disconnect, everything",
			in:   `{"type":"disconnect","token":"t","connection":"n1.0123456789abcdef","code":4321,"reason":"banned \u00e9"}`,
			want: Control{Type: TypeDisconnect, Token: "t", Connection: "n1.0123456789abcdef", Code: 4321, CodeSet: true, Reason: "banned é"}},
		{name: "disconnect, escaped keys and values", in: `{"t\u0079pe":"disconnect","tok\u0065n":"a\/b","r\u0065ason":"x"}`,
			want: Control{Type: TypeDisconnect, Token: "a/b", Reason: "x"}},
		{name: "disconnect, nulls are absent", in: `{"type":"disconnect","token":"t","connection":null,"code":null,"reason":null}`,
			want: Control{Type: TypeDisconnect, Token: "t"}},
		{name: "disconnect, code with a fraction is no code", in: `{"type":"disconnect","token":"t","code":4001.0}`,
			want: Control{Type: TypeDisconnect, Token: "t", CodeSet: true}},
		{name: "disconnect, code with an exponent is no code", in: `{"type":"disconnect","token":"t","code":4e3}`,
			want: Control{Type: TypeDisconnect, Token: "t", CodeSet: true}},
		{name: "disconnect, huge code", in: `{"type":"disconnect","token":"t","code":12345678901234567890}`,
			want: Control{Type: TypeDisconnect, Token: "t", CodeSet: true}},
		{name: "disconnect, negative code", in: `{"type":"disconnect","token":"t","code":-4001}`,
			want: Control{Type: TypeDisconnect, Token: "t", Code: -4001, CodeSet: true}},
		{name: "disconnect, out-of-range code is the caller's business", in: `{"type":"disconnect","token":"t","code":1000}`,
			want: Control{Type: TypeDisconnect, Token: "t", Code: 1000, CodeSet: true}},
		{name: "disconnect, last duplicate wins", in: `{"type":"disconnect","token":"a","token":"b","code":4002,"code":4003}`,
			want: Control{Type: TypeDisconnect, Token: "b", Code: 4003, CodeSet: true}},
		{name: "disconnect ignores event and payload", in: `{"type":"disconnect","token":"t","event":1,"payload":2}`,
			want: Control{Type: TypeDisconnect, Token: "t"}},
		{name: "broadcast", in: `{"type":"broadcast","event":"deploy","payload":{"v":1.50}}`,
			want: Control{Type: TypeBroadcast, Event: []byte(`"deploy"`), Payload: []byte(`{"v":1.50}`)}},
		{name: "broadcast, no payload", in: `{"type":"broadcast","event":"e"}`,
			want: Control{Type: TypeBroadcast, Event: []byte(`"e"`)}},
		{name: "broadcast, null payload is kept", in: `{"type":"broadcast","event":"e","payload":null}`,
			want: Control{Type: TypeBroadcast, Event: []byte(`"e"`), Payload: []byte(`null`)}},
		{name: "broadcast, event kept as written", in: `{"type":"broadcast","event":"\u00e9\/x"}`,
			want: Control{Type: TypeBroadcast, Event: []byte(`"\u00e9\/x"`)}},
		{name: "broadcast ignores token, connection and code", in: `{"type":"broadcast","event":"e","token":"t","connection":1,"code":"x"}`,
			want: Control{Type: TypeBroadcast, Event: []byte(`"e"`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseControl([]byte(tt.in))
			if err != nil {
				t.Fatalf("error = %v", err)
			}
			w := tt.want
			if got.Type != w.Type || got.Token != w.Token || got.Connection != w.Connection || got.Code != w.Code ||
				got.CodeSet != w.CodeSet || got.Reason != w.Reason || !sameRaw(got.Event, w.Event) || !sameRaw(got.Payload, w.Payload) {
				t.Errorf("ParseControl = %+v\nwant %+v", got, w)
			}
			if err := checkControlAgainstRef([]byte(tt.in)); err != nil {
				t.Errorf("reference mismatch: %v", err)
			}
		})
	}
}

func TestParseControlErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
		why  string // in the error text
	}{
		{name: "not JSON", in: `{"type":"broadcast"`, want: ErrNotJSON},
		{name: "not an object", in: `["broadcast"]`, want: ErrNotObject},
		{name: "not a control type", in: `{"type":"event","token":"t"}`, want: ErrBadControl, why: `type "event" is not a control type`},
		{name: "no type", in: `{"token":"t"}`, want: ErrBadControl, why: `type "" is not`},
		{name: "type case matters", in: `{"type":"Disconnect","token":"t"}`, want: ErrBadControl},
		{name: "disconnect without token", in: `{"type":"disconnect"}`, want: ErrBadControl, why: "needs a token"},
		{name: "disconnect, empty token", in: `{"type":"disconnect","token":""}`, want: ErrBadControl, why: "needs a token"},
		{name: "disconnect, token not a string", in: `{"type":"disconnect","token":7}`, want: ErrBadControl, why: "needs a token"},
		{name: "disconnect, token null last", in: `{"type":"disconnect","token":"t","token":null}`, want: ErrBadControl, why: "needs a token"},
		{name: "disconnect, connection not a string", in: `{"type":"disconnect","token":"t","connection":5}`, want: ErrBadControl, why: "connection must be"},
		{name: "disconnect, empty connection", in: `{"type":"disconnect","token":"t","connection":""}`, want: ErrBadControl, why: "connection must be"},
		{name: "disconnect, code a string", in: `{"type":"disconnect","token":"t","code":"4001"}`, want: ErrBadControl, why: "code must be a number"},
		{name: "disconnect, code an object", in: `{"type":"disconnect","token":"t","code":{}}`, want: ErrBadControl, why: "code must be a number"},
		{name: "disconnect, reason not a string", in: `{"type":"disconnect","token":"t","reason":["x"]}`, want: ErrBadControl, why: "reason must be a string"},
		{name: "broadcast without event", in: `{"type":"broadcast","payload":1}`, want: ErrBadControl, why: "needs an event"},
		{name: "broadcast, event not a string", in: `{"type":"broadcast","event":1}`, want: ErrBadControl, why: "needs an event"},
		{name: "broadcast, empty event", in: `{"type":"broadcast","event":""}`, want: ErrBadControl, why: "needs an event"},
		{name: "broadcast, event null last", in: `{"type":"broadcast","event":"e","event":null}`, want: ErrBadControl, why: "needs an event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseControl([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.why) || !strings.HasPrefix(err.Error(), "protocol: ") {
				t.Errorf("error text %q, want the package prefix and %q", err, tt.why)
			}
			if got.Type != "" || got.Token != "" || got.Event != nil {
				t.Errorf("Control = %+v on error, want zero", got)
			}
			if err := checkControlAgainstRef([]byte(tt.in)); err != nil {
				t.Errorf("reference mismatch: %v", err)
			}
		})
	}
}

func TestAppendEvent(t *testing.T) {
	tests := []struct{ event, payload, want string }{
		{`"e"`, ``, `{"type":"event","event":"e"}`},
		{`"e"`, `null`, `{"type":"event","event":"e","payload":null}`},
		{`"\u00e9"`, `{"a":1.50e1}`, `{"type":"event","event":"\u00e9","payload":{"a":1.50e1}}`},
	}
	for _, tt := range tests {
		var payload []byte
		if tt.payload != "" {
			payload = []byte(tt.payload)
		}
		if got := string(AppendEvent(nil, []byte(tt.event), payload)); got != tt.want {
			t.Errorf("AppendEvent(%s, %s) = %s, want %s", tt.event, tt.payload, got, tt.want)
		}
	}
}

// ParseMessage reads messages without a token that ParseInbound refuses,
// with the same fields and Body.
func TestParseMessageWithoutToken(t *testing.T) {
	tests := []struct {
		name, in, typ, body string
	}{
		{name: "broadcast", in: `{"type":"broadcast","event":"e"}`, typ: "broadcast", body: `{"type":"broadcast","event":"e"}`},
		{name: "empty object", in: ` {} `, body: ` {} `},
		{name: "token not a string is still removed", in: `{"type":"x","token":1}`, typ: "x", body: `{"type":"x"}`},
		{name: "empty token is still removed", in: `{"token":"","type":"x"}`, typ: "x", body: `{"type":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseInbound([]byte(tt.in)); !errors.Is(err, ErrNoToken) {
				t.Fatalf("ParseInbound error = %v, want ErrNoToken", err)
			}
			got, err := ParseMessage([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseMessage error = %v", err)
			}
			if got.Token != "" || got.Type != tt.typ || string(got.Body) != tt.body {
				t.Errorf("ParseMessage = %+v (Body %s), want Type %q Body %s", got, got.Body, tt.typ, tt.body)
			}
			if err := checkInboundAgainstRef([]byte(tt.in)); err != nil {
				t.Errorf("reference mismatch: %v", err)
			}
		})
	}
}

func TestParseInboundConnection(t *testing.T) {
	tests := []struct {
		name, in, conn string
		has            bool
	}{
		{name: "none", in: `{"token":"t"}`},
		{name: "string", in: `{"token":"t","connection":"n1.00ff"}`, conn: "n1.00ff", has: true},
		{name: "escaped", in: `{"token":"t","conn\u0065ction":"n\u0031"}`, conn: "n1", has: true},
		{name: "null is absent", in: `{"token":"t","connection":null}`},
		{name: "number", in: `{"token":"t","connection":1}`, has: true},
		{name: "empty", in: `{"token":"t","connection":""}`, has: true},
		{name: "last wins", in: `{"token":"t","connection":1,"connection":"c"}`, conn: "c", has: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInbound([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got.Connection != tt.conn || got.HasConnection != tt.has {
				t.Errorf("Connection = %q (present %v), want %q (%v)", got.Connection, got.HasConnection, tt.conn, tt.has)
			}
			if err := checkInboundAgainstRef([]byte(tt.in)); err != nil {
				t.Errorf("reference mismatch: %v", err)
			}
		})
	}
}
