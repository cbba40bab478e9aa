package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// raw returns s as a byte slice, or nil for the empty string.
func raw(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

func TestParseFrame(t *testing.T) {
	long255 := strings.Repeat("a", 255)
	long256 := strings.Repeat("a", 256)
	esc255 := strings.Repeat(`\u0061`, 255)
	esc256 := strings.Repeat(`\u0061`, 256)
	euro85 := strings.Repeat("€", 85) // 255 bytes
	euro86 := strings.Repeat("€", 86) // 258 bytes

	tests := []struct {
		name   string
		in     string
		want   Frame  // on success; ID and Payload given as raw JSON
		reason string // expected FrameError.Reason, "" for success
		errID  string // expected FrameError.ID, "" for nil
	}{
		// Success.
		{name: "minimal", in: `{"method":"a"}`, want: Frame{Method: "a"}},
		{
			name: "all members",
			in:   `{"id":"c1","method":"user.get","payload":{"x":1},"traceparent":"00-abc-def-01","tracestate":"k=v"}`,
			want: Frame{ID: raw(`"c1"`), Method: "user.get", Payload: raw(`{"x":1}`), TraceParent: "00-abc-def-01", TraceState: "k=v"},
		},
		{name: "big integer id", in: `{"id":12345678901234567890123,"method":"m"}`, want: Frame{ID: raw(`12345678901234567890123`), Method: "m"}},
		{name: "method with NUL", in: `{"id":2,"method":"a\u0000b"}`, reason: reasonMethodControl, errID: "2"},
		{name: "method with a newline", in: `{"method":"a\nb"}`, reason: reasonMethodControl},
		{name: "method with DEL", in: "{\"method\":\"a\x7fb\"}", reason: reasonMethodControl},
		{name: "method with an escaped slash", in: `{"method":"a\/b"}`, want: Frame{Method: "a/b"}},
		{name: "id of 256 bytes", in: `{"id":"` + strings.Repeat("i", 254) + `","method":"m"}`, want: Frame{ID: raw(`"` + strings.Repeat("i", 254) + `"`), Method: "m"}},
		{name: "id of 257 bytes: refused, not echoed", in: `{"id":"` + strings.Repeat("i", 255) + `","method":"m"}`, reason: reasonIDTooLong},
		{name: "number id with a 60,000-digit exponent", in: `{"id":1e` + strings.Repeat("9", 60000) + `,"method":"m"}`, reason: reasonIDTooLong},
		{name: "long id, bad method: the method error, not echoing the id", in: `{"id":"` + strings.Repeat("i", 300) + `"}`, reason: reasonMethodRequired},
		{name: "long object id: not echoed", in: `{"id":{"a":"` + strings.Repeat("i", 300) + `"},"method":"m"}`, reason: reasonIDType},
		{name: "long decimal id", in: `{"id":1.000000000000000000001,"method":"m"}`, want: Frame{ID: raw(`1.000000000000000000001`), Method: "m"}},
		{name: "exponent id", in: `{"id":-1.5E+400,"method":"m"}`, want: Frame{ID: raw(`-1.5E+400`), Method: "m"}},
		{name: "negative zero id", in: `{"id":-0,"method":"m"}`, want: Frame{ID: raw(`-0`), Method: "m"}},
		{name: "zero id", in: `{"id":0,"method":"m"}`, want: Frame{ID: raw(`0`), Method: "m"}},
		{name: "escaped string id", in: `{"id":"\u00e9\"\\\/x","method":"m"}`, want: Frame{ID: raw(`"\u00e9\"\\\/x"`), Method: "m"}},
		{name: "empty string id", in: `{"id":"","method":"m"}`, want: Frame{ID: raw(`""`), Method: "m"}},
		{name: "null id", in: `{"id":null,"method":"m"}`, want: Frame{Method: "m"}},
		{name: "null payload", in: `{"method":"m","payload":null}`, want: Frame{Method: "m"}},
		{name: "empty payload", in: `{"method":"m","payload":{}}`, want: Frame{Method: "m", Payload: raw(`{}`)}},
		{
			name: "payload kept byte-exact",
			in:   `{"method":"m","payload":{"n":12345678901234567890123,"d":1.000000000000000000001,"s":"\u00e9\ud83d\ude00","e":1E2}}`,
			want: Frame{Method: "m", Payload: raw(`{"n":12345678901234567890123,"d":1.000000000000000000001,"s":"\u00e9\ud83d\ude00","e":1E2}`)},
		},
		{
			name: "nested payload with tricky strings",
			in:   `{"payload":{"a":"}\"]{","b":[[{"c":[]}],"]"],"\"payload\"":{"method":1}},"method":"m"}`,
			want: Frame{Method: "m", Payload: raw(`{"a":"}\"]{","b":[[{"c":[]}],"]"],"\"payload\"":{"method":1}}`)},
		},
		{
			name: "whitespace everywhere",
			in:   " \t\r\n{ \n\t\"id\" \r: 7 ,\n  \"method\"\t:\t\"m\" , \"payload\" :\n{ \"a\" : [ 1 , 2 ] }\n} \n\t",
			want: Frame{ID: raw(`7`), Method: "m", Payload: raw("{ \"a\" : [ 1 , 2 ] }")},
		},
		{
			name: "pretty printed",
			in:   "{\n  \"id\": \"x\",\n  \"method\": \"a.b\",\n  \"payload\": {\n    \"k\": true\n  }\n}\n",
			want: Frame{ID: raw(`"x"`), Method: "a.b", Payload: raw("{\n    \"k\": true\n  }")},
		},
		{
			name: "escaped keys",
			in:   `{"\u0069d":1,"meth\u006fd":"m","p\u0061yload":{"a":1},"trace\u0070arent":"tp","\u0074racestat\u0065":"ts"}`,
			want: Frame{ID: raw(`1`), Method: "m", Payload: raw(`{"a":1}`), TraceParent: "tp", TraceState: "ts"},
		},
		{name: "escaped key all escapes", in: `{"\u006D\u0065\u0074\u0068\u006F\u0064":"m"}`, want: Frame{Method: "m"}},
		{name: "escaped solidus in key does not match", in: `{"me\/thod":"x","method":"m"}`, want: Frame{Method: "m"}},
		{name: "key with lone surrogate ignored", in: `{"method\ud800":"x","method":"m"}`, want: Frame{Method: "m"}},
		{name: "key prefix ignored", in: `{"methods":"x","metho":"y","method":"m"}`, want: Frame{Method: "m"}},
		{name: "keys are case-sensitive", in: `{"Method":"x","method":"m","ID":3}`, want: Frame{Method: "m"}},
		{name: "long escaped other key", in: `{"\u0074\u0072\u0061\u0063\u0065\u0070\u0061\u0072\u0065\u006e\u0074\u0078":1,"method":"m"}`, want: Frame{Method: "m"}},
		{name: "duplicate method last wins", in: `{"method":"a","method":"b"}`, want: Frame{Method: "b"}},
		{name: "duplicate method invalid then valid", in: `{"method":1,"method":"b"}`, want: Frame{Method: "b"}},
		{name: "duplicate id last wins", in: `{"id":1,"method":"m","id":"two"}`, want: Frame{ID: raw(`"two"`), Method: "m"}},
		{name: "duplicate id null last", in: `{"id":1,"method":"m","id":null}`, want: Frame{Method: "m"}},
		{name: "duplicate id invalid then valid", in: `{"id":{},"method":"m","id":2}`, want: Frame{ID: raw(`2`), Method: "m"}},
		{name: "duplicate payload null last", in: `{"payload":{"a":1},"method":"m","payload":null}`, want: Frame{Method: "m"}},
		{name: "duplicate escaped and plain key", in: `{"method":"a","m\u0065thod":"b"}`, want: Frame{Method: "b"}},
		{name: "escaped method", in: `{"method":"a\"b\\c\/d\u00e9\ud83d\ude00"}`, want: Frame{Method: "a\"b\\c/dé😀"}},
		{name: "method lone surrogate", in: `{"method":"a\ud800b"}`, want: Frame{Method: "a\uFFFDb"}},
		{name: "method invalid utf8", in: "{\"method\":\"a\xffb\"}", want: Frame{Method: "a\uFFFDb"}},
		{name: "method raw utf8", in: `{"method":"café"}`, want: Frame{Method: "café"}},
		{name: "method 255 bytes", in: `{"method":"` + long255 + `"}`, want: Frame{Method: long255}},
		{name: "method 255 bytes escaped", in: `{"method":"` + esc255 + `"}`, want: Frame{Method: long255}},
		{name: "method 255 bytes multibyte", in: `{"method":"` + euro85 + `"}`, want: Frame{Method: euro85}},
		{name: "trace context escaped", in: `{"method":"m","traceparent":"a\u0062c","tracestate":""}`, want: Frame{Method: "m", TraceParent: "abc"}},
		{
			name: "other members ignored",
			in:   `{"method":"m","extra":[1,{"x":"}"}],"token":"forged","type":"x","n":null,"t":true,"f":false}`,
			want: Frame{Method: "m"},
		},

		// Invalid JSON.
		{name: "empty input", in: ``, reason: reasonInvalidJSON},
		{name: "only whitespace", in: " \n", reason: reasonInvalidJSON},
		{name: "truncated", in: `{"method":"m"`, reason: reasonInvalidJSON},
		{name: "trailing comma", in: `{"method":"m",}`, reason: reasonInvalidJSON},
		{name: "trailing garbage", in: `{"method":"m"}x`, reason: reasonInvalidJSON},
		{name: "two objects", in: `{"method":"m"}{}`, reason: reasonInvalidJSON},
		{name: "single quotes", in: `{'method':'m'}`, reason: reasonInvalidJSON},
		{name: "control char in string", in: "{\"method\":\"a\x01\"}", reason: reasonInvalidJSON},
		{name: "bad escape", in: `{"method":"\x"}`, reason: reasonInvalidJSON},
		{name: "leading zero", in: `{"id":01,"method":"m"}`, reason: reasonInvalidJSON},
		{name: "NaN", in: `{"id":NaN,"method":"m"}`, reason: reasonInvalidJSON},

		// Not an object.
		{name: "array", in: `[{"method":"m"}]`, reason: reasonNotObject},
		{name: "string", in: `"method"`, reason: reasonNotObject},
		{name: "number", in: ` 1 `, reason: reasonNotObject},
		{name: "null", in: `null`, reason: reasonNotObject},
		{name: "true", in: `true`, reason: reasonNotObject},

		// Method.
		{name: "empty object", in: `{}`, reason: reasonMethodRequired},
		{name: "empty object with spaces", in: "{ \n }", reason: reasonMethodRequired},
		{name: "method missing", in: `{"id":1,"payload":{}}`, reason: reasonMethodRequired, errID: `1`},
		{name: "method nested only", in: `{"payload":{"method":"m"}}`, reason: reasonMethodRequired},
		{name: "method number", in: `{"method":1}`, reason: reasonMethodNotString},
		{name: "method null", in: `{"method":null}`, reason: reasonMethodNotString},
		{name: "method object", in: `{"method":{}}`, reason: reasonMethodNotString},
		{name: "method array", in: `{"method":["m"]}`, reason: reasonMethodNotString},
		{name: "method true", in: `{"method":true}`, reason: reasonMethodNotString},
		{name: "duplicate method valid then invalid", in: `{"id":"i","method":"m","method":false}`, reason: reasonMethodNotString, errID: `"i"`},
		{name: "method empty", in: `{"id":"i","method":""}`, reason: reasonMethodEmpty, errID: `"i"`},
		{name: "method 256 bytes", in: `{"id":1,"method":"` + long256 + `"}`, reason: reasonMethodTooLong, errID: `1`},
		{name: "method 256 bytes escaped", in: `{"method":"` + esc256 + `"}`, reason: reasonMethodTooLong},
		{name: "method 258 bytes multibyte", in: `{"method":"` + euro86 + `"}`, reason: reasonMethodTooLong},
		{name: "method huge", in: `{"method":"` + strings.Repeat("x", 1<<20) + `"}`, reason: reasonMethodTooLong},

		// Id.
		{name: "id true", in: `{"id":true,"method":"m"}`, reason: reasonIDType, errID: `true`},
		{name: "id false", in: `{"id":false,"method":"m"}`, reason: reasonIDType, errID: `false`},
		{name: "id object", in: `{"id":{"a":[1]},"method":"m"}`, reason: reasonIDType, errID: `{"a":[1]}`},
		{name: "id array", in: `{"id":[1,2],"method":"m"}`, reason: reasonIDType, errID: `[1,2]`},
		{name: "id invalid and method missing", in: `{"id":[1]}`, reason: reasonMethodRequired},

		// Payload.
		{name: "payload array", in: `{"id":5,"method":"m","payload":[]}`, reason: reasonPayloadType, errID: `5`},
		{name: "payload string", in: `{"method":"m","payload":"{}"}`, reason: reasonPayloadType},
		{name: "payload number", in: `{"method":"m","payload":1}`, reason: reasonPayloadType},
		{name: "payload true", in: `{"id":"x","method":"m","payload":true}`, reason: reasonPayloadType, errID: `"x"`},

		// Trace context.
		{name: "traceparent number", in: `{"id":1,"method":"m","traceparent":1}`, reason: reasonTraceParentType, errID: `1`},
		{name: "traceparent null", in: `{"method":"m","traceparent":null}`, reason: reasonTraceParentType},
		{name: "traceparent object", in: `{"method":"m","traceparent":{}}`, reason: reasonTraceParentType},
		{name: "tracestate array", in: `{"id":"q","method":"m","tracestate":["a"]}`, reason: reasonTraceStateType, errID: `"q"`},
		{name: "tracestate false", in: `{"method":"m","tracestate":false}`, reason: reasonTraceStateType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			got, err := ParseFrame(in)
			if tt.reason != "" {
				var fe *FrameError
				if !errors.As(err, &fe) {
					t.Fatalf("error = %v (%T), want *FrameError", err, err)
				}
				if fe.Reason != tt.reason {
					t.Errorf("Reason = %q, want %q", fe.Reason, tt.reason)
				}
				if !sameRaw(fe.ID, raw(tt.errID)) {
					t.Errorf("FrameError.ID = %q, want %q", fe.ID, tt.errID)
				}
				if want := "protocol: bad frame: " + tt.reason; fe.Error() != want {
					t.Errorf("Error() = %q, want %q", fe.Error(), want)
				}
				if got.ID != nil || got.Payload != nil || got.Method != "" || got.TraceParent != "" || got.TraceState != "" {
					t.Errorf("Frame = %+v on error, want zero", got)
				}
			} else {
				if err != nil {
					t.Fatalf("error = %v, want success", err)
				}
				if diff := compareFrames(got, tt.want); diff != nil {
					t.Error(diff)
				}
			}
			if err := checkFrameAgainstRef(in); err != nil {
				t.Errorf("reference mismatch: %v", err)
			}
		})
	}
}

func TestParseFrameAliasesInput(t *testing.T) {
	in := []byte(`{"id":"abc","method":"m","payload":{"k":"v"}}`)
	f, err := ParseFrame(in)
	if err != nil {
		t.Fatal(err)
	}
	if &f.ID[0] != &in[6] {
		t.Error("ID does not alias the input")
	}
	if &f.Payload[0] != &in[bytes.Index(in, []byte(`{"k"`))] {
		t.Error("Payload does not alias the input")
	}
	// Frame errors alias the id too.
	in = []byte(`{"id":42}`)
	_, err = ParseFrame(in)
	var fe *FrameError
	if !errors.As(err, &fe) || &fe.ID[0] != &in[6] {
		t.Errorf("FrameError.ID does not alias the input: %v", err)
	}
}

// nested returns a payload nested depth levels deep: {"a":{"a":...{}...}}.
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
}

func TestParseFrameDeepAndHuge(t *testing.T) {
	okDeep := nested(9000)
	arrDeep := strings.Repeat("[", 9000) + strings.Repeat("]", 9000)
	huge := `{"s":"` + strings.Repeat(`x\"{[`, 1<<18) + `","n":[` + strings.Repeat(`1,`, 1<<16) + `1]}`
	tests := []struct {
		name    string
		in      string
		payload string // "" when an error is expected
	}{
		{name: "9000 deep payload", in: `{"method":"m","payload":` + okDeep + `}`, payload: okDeep},
		{name: "9000 deep array in payload", in: `{"method":"m","payload":{"a":` + arrDeep + `}}`, payload: `{"a":` + arrDeep + `}`},
		{name: "10001 deep payload", in: `{"method":"m","payload":` + nested(10001) + `}`},
		{name: "10001 deep arrays", in: `{"method":"m","payload":{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}}`},
		{name: "10001 deep unterminated", in: `{"method":"m","payload":` + strings.Repeat(`{"a":`, 10001)},
		{name: "1 MiB payload", in: `{"id":1,"method":"m","payload":` + huge + `}`, payload: huge},
		{name: "1 MiB ignored member", in: `{"junk":` + huge + `,"method":"m","payload":{}}`, payload: `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFrame([]byte(tt.in))
			if tt.payload == "" {
				var fe *FrameError
				if !errors.As(err, &fe) || fe.Reason != reasonInvalidJSON {
					t.Fatalf("error = %v, want %q", err, reasonInvalidJSON)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(f.Payload) != tt.payload {
				t.Errorf("Payload differs (len %d, want %d)", len(f.Payload), len(tt.payload))
			}
			if f.Method != "m" {
				t.Errorf("Method = %q", f.Method)
			}
		})
	}
}

func TestParseFrameAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	in := []byte(`{"id":17,"method":"user.get","payload":{"userId":"u-123","fields":["name","email"]}}`)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseFrame(in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 { // the Method string
		t.Errorf("ParseFrame allocs = %v, want <= 1", allocs)
	}
	escaped := []byte(`{"id":17,"m\u0065thod":"user.get","payload":{}}`)
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := ParseFrame(escaped); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("ParseFrame with escaped key allocs = %v, want <= 1", allocs)
	}
}

func TestReasonMentionsMaxMethodLength(t *testing.T) {
	if want := "method is longer than 255 bytes"; reasonMethodTooLong != want || MaxMethodLength != 255 {
		t.Fatalf("reason %q and MaxMethodLength %d disagree", reasonMethodTooLong, MaxMethodLength)
	}
}
