package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAppendCall(t *testing.T) {
	tests := []struct {
		name  string
		frame Frame
		token string
		want  string
	}{
		{name: "method only", frame: Frame{Method: "m"}, token: "t", want: `{"method":"m","token":"t"}`},
		{
			name:  "all members",
			frame: Frame{ID: raw(`"c1"`), Method: "user.get", Payload: raw(`{"x":1}`), TraceParent: "tp", TraceState: "ts"},
			token: "tok",
			want:  `{"id":"c1","method":"user.get","token":"tok","payload":{"x":1}}`,
		},
		{name: "number id", frame: Frame{ID: raw(`12345678901234567890123`), Method: "m"}, token: "t", want: `{"id":12345678901234567890123,"method":"m","token":"t"}`},
		{name: "payload only", frame: Frame{Method: "m", Payload: raw(`{}`)}, token: "t", want: `{"method":"m","token":"t","payload":{}}`},
		{
			name:  "raw bytes verbatim",
			frame: Frame{ID: raw(`"\u00e9"`), Method: "m", Payload: raw("{ \"d\" : 1.000000000000000000001 ,\n\"s\":\"\\ud83d\\ude00\" }")},
			token: "t",
			want:  "{\"id\":\"\\u00e9\",\"method\":\"m\",\"token\":\"t\",\"payload\":{ \"d\" : 1.000000000000000000001 ,\n\"s\":\"\\ud83d\\ude00\" }}",
		},
		{
			name:  "special characters",
			frame: Frame{Method: "a\"b\\c\n\r\t\x00\x1f\x7f<>&é😀"},
			token: "t\"ok\u2028\u2029",
			want:  `{"method":"a\"b\\c\n\r\t\u0000\u001f` + "\x7f" + `<>&é😀","token":"t\"ok\u2028\u2029"}`,
		},
		{name: "invalid utf8", frame: Frame{Method: "a\xffb\xc3"}, token: "\xe2\x82", want: `{"method":"a\ufffdb\ufffd","token":"\ufffd\ufffd"}`},
		{name: "empty token", frame: Frame{Method: "m"}, token: "", want: `{"method":"m","token":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			got := AppendCall(prefix, &tt.frame, tt.token)
			if string(got) != "prefix"+tt.want {
				t.Errorf("AppendCall =\n%s\nwant\n%s", got, "prefix"+tt.want)
			}
			if !json.Valid(got[len("prefix"):]) {
				t.Errorf("output is not valid JSON: %s", got)
			}
			if err := checkCall(&tt.frame, tt.token); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestAppendError(t *testing.T) {
	tests := []struct {
		name    string
		id      []byte
		code    string
		message string
		want    string
	}{
		{name: "no id", code: CodeBadRequest, message: "method is required", want: `{"type":"error","error":{"code":"bad_request","message":"method is required"}}`},
		{name: "string id", id: raw(`"c1"`), code: CodeTimeout, message: "call timed out", want: `{"type":"error","id":"c1","error":{"code":"timeout","message":"call timed out"}}`},
		{name: "big number id", id: raw(`1.000000000000000000001`), code: CodeInternal, message: "", want: `{"type":"error","id":1.000000000000000000001,"error":{"code":"internal","message":""}}`},
		{name: "object id echoed", id: raw(`{"a":[1]}`), code: CodeBadRequest, message: reasonIDType, want: `{"type":"error","id":{"a":[1]},"error":{"code":"bad_request","message":"id must be a string or a number"}}`},
		{
			name:    "special characters",
			code:    CodeUnavailable,
			message: "bad \"x\"\\\n\t\x01<b>&\u2028é\xff",
			want:    `{"type":"error","error":{"code":"unavailable","message":"bad \"x\"\\\n\t\u0001<b>&\u2028é\ufffd"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendError([]byte("x"), tt.id, tt.code, tt.message)
			if string(got) != "x"+tt.want {
				t.Errorf("AppendError =\n%s\nwant\nx%s", got, tt.want)
			}
			got = got[1:]
			if !json.Valid(got) {
				t.Fatalf("output is not valid JSON: %s", got)
			}
			var v struct {
				Type  string          `json:"type"`
				ID    json.RawMessage `json:"id"`
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(got, &v); err != nil {
				t.Fatal(err)
			}
			if v.Type != "error" || v.Error.Code != tt.code || v.Error.Message != string([]rune(tt.message)) || !sameRaw(v.ID, tt.id) {
				t.Errorf("decoded %+v", v)
			}
		})
	}
}

func TestAppendPong(t *testing.T) {
	tests := []struct {
		name string
		id   []byte
		want string
	}{
		{name: "no id", want: `{"type":"event","event":"pong"}`},
		{name: "string id", id: raw(`"p1"`), want: `{"type":"event","event":"pong","id":"p1"}`},
		{name: "number id", id: raw(`12345678901234567890123`), want: `{"type":"event","event":"pong","id":12345678901234567890123}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendPong([]byte("x"), tt.id)
			if string(got) != "x"+tt.want {
				t.Errorf("AppendPong = %s, want x%s", got, tt.want)
			}
			if !json.Valid(got[1:]) {
				t.Errorf("output is not valid JSON: %s", got)
			}
		})
	}
}

func TestAppendQuoted(t *testing.T) {
	var all strings.Builder
	for c := 0; c < 0x80; c++ {
		all.WriteByte(byte(c))
	}
	tests := []struct {
		name string
		in   string
		want string // "" to only check the decoding
	}{
		{name: "empty", in: "", want: `""`},
		{name: "plain", in: "user.get", want: `"user.get"`},
		{name: "quote and backslash", in: `a"b\c`, want: `"a\"b\\c"`},
		{name: "control characters", in: "\x00\x08\x0c\x1b\x1f", want: `"\u0000\u0008\u000c\u001b\u001f"`},
		{name: "newline tab return", in: "\n\t\r", want: `"\n\t\r"`},
		{name: "html not escaped", in: "<a href='x'>&</a>", want: `"<a href='x'>&</a>"`},
		{name: "line separators", in: "\u2028\u2029", want: `"\u2028\u2029"`},
		{name: "multibyte kept", in: "é€😀", want: `"é€😀"`},
		{name: "invalid utf8", in: "\xff\xfe", want: `"\ufffd\ufffd"`},
		{name: "truncated rune", in: "a\xf0\x9f\x98", want: `"a\ufffd\ufffd\ufffd"`},
		{name: "surrogate encoded in utf8", in: "\xed\xa0\x80", want: `"\ufffd\ufffd\ufffd"`},
		{name: "all ascii", in: all.String()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := appendQuoted(nil, tt.in)
			if tt.want != "" && string(got) != tt.want {
				t.Errorf("appendQuoted(%q) = %s, want %s", tt.in, got, tt.want)
			}
			var s string
			if err := json.Unmarshal(got, &s); err != nil {
				t.Fatalf("appendQuoted(%q) = %s: %v", tt.in, got, err)
			}
			if want := string([]rune(tt.in)); s != want {
				t.Errorf("decoded %q, want %q", s, want)
			}
		})
	}
}

func TestAppendAllocs(t *testing.T) {
	f := Frame{ID: raw(`17`), Method: "user.get", Payload: raw(`{"userId":"u-123"}`)}
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendCall(buf[:0], &f, "conn-0123456789")
		buf = AppendError(buf[:0], f.ID, CodeTimeout, "call timed out")
		buf = AppendPong(buf[:0], f.ID)
	})
	if allocs != 0 {
		t.Errorf("allocs = %v, want 0", allocs)
	}
}
