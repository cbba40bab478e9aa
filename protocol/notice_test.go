package protocol

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// Notice bodies are exact, and valid JSON whatever a token holds: in jwt
// mode the token is the JWT's subject, which may contain quotes,
// backslashes, control characters and any Unicode.
func TestNoticeBodies(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"connect", AppendConnectNotice(nil, "tok", "n1", "n1.00000000000000ff", false),
			`{"type":"connect","method":"$connect","token":"tok","node":"n1","connection":"n1.00000000000000ff"}`},
		{"connect as a call", AppendConnectNotice(nil, "tok", "n1", "n1.0a", true),
			`{"type":"connect","method":"$connect","token":"tok","node":"n1","connection":"n1.0a","id":"n1.0a"}`},
		{"connect escapes the token", AppendConnectNotice(nil, "a\"b\\c\n\x01</é>\u2028", "n1", "n1.0a", false),
			`{"type":"connect","method":"$connect","token":"a\"b\\c\n\u0001</é>\u2028","node":"n1","connection":"n1.0a"}`},
		{"disconnect", AppendDisconnectNotice(nil, "tok", "n1", "n1.0a", 4001, "disconnected"),
			`{"type":"disconnect","method":"$disconnect","token":"tok","node":"n1","connection":"n1.0a","code":4001,"reason":"disconnected"}`},
		{"disconnect escapes token and reason", AppendDisconnectNotice(nil, `"}`, "n1", "n1.0a", 1000, `a"b`),
			`{"type":"disconnect","method":"$disconnect","token":"\"}","node":"n1","connection":"n1.0a","code":1000,"reason":"a\"b"}`},
		{"presence without connections", AppendPresenceNotice(nil, "n1", nil, 0, true),
			`{"type":"presence","method":"$presence","node":"n1","connections":[],"seq":0,"last":true}`},
		{"presence", AppendPresenceNotice(nil, "n1", []Presence{{"t1", "n1.01"}, {`q"`, "n1.02"}}, 3, false),
			`{"type":"presence","method":"$presence","node":"n1","connections":[{"token":"t1","connection":"n1.01"},{"token":"q\"","connection":"n1.02"}],"seq":3,"last":false}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if string(tc.got) != tc.want {
				t.Errorf("got  %s\nwant %s", tc.got, tc.want)
			}
			if !json.Valid(tc.got) {
				t.Errorf("not valid JSON: %s", tc.got)
			}
		})
	}
}

// Whatever the token, a backend decoding the notice reads the token back.
func TestNoticeTokenRoundTrip(t *testing.T) {
	for _, token := range []string{"plain", `"`, `\`, "\x00\x1f\x7f", "é😀", "\u2028\u2029", "a/b", "<script>", "bad\xffutf8"} {
		t.Run(fmt.Sprintf("%q", token), func(t *testing.T) {
			want := token
			if token == "bad\xffutf8" {
				want = "bad\ufffdutf8" // invalid UTF-8 becomes U+FFFD
			}
			var c struct{ Token, Connection, ID string }
			if err := json.Unmarshal(AppendConnectNotice(nil, token, "n", "n.1", true), &c); err != nil || c.Token != want || c.ID != "n.1" {
				t.Errorf("connect: %+v %v, want token %q", c, err, want)
			}
			var d struct {
				Token  string
				Code   int
				Reason string
			}
			if err := json.Unmarshal(AppendDisconnectNotice(nil, token, "n", "n.1", 4008, "slow_client"), &d); err != nil || d.Token != want || d.Code != 4008 {
				t.Errorf("disconnect: %+v %v, want token %q", d, err, want)
			}
			var p struct {
				Connections []struct{ Token, Connection string }
			}
			if err := json.Unmarshal(AppendPresenceNotice(nil, "n", []Presence{{token, "n.1"}}, 0, true), &p); err != nil ||
				!reflect.DeepEqual(p.Connections, []struct{ Token, Connection string }{{want, "n.1"}}) {
				t.Errorf("presence: %+v %v, want token %q", p, err, want)
			}
		})
	}
}
