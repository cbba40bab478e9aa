package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseInboundErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{name: "empty", in: ``, want: ErrNotJSON},
		{name: "garbage", in: `token`, want: ErrNotJSON},
		{name: "truncated", in: `{"token":"t"`, want: ErrNotJSON},
		{name: "trailing comma", in: `{"token":"t",}`, want: ErrNotJSON},
		{name: "trailing data", in: `{"token":"t"} {}`, want: ErrNotJSON},
		{name: "10001 deep", in: `{"token":"t","a":` + nested(10001) + `}`, want: ErrNotJSON},
		{name: "array", in: `[{"token":"t"}]`, want: ErrNotObject},
		{name: "string", in: `"token"`, want: ErrNotObject},
		{name: "number", in: `1`, want: ErrNotObject},
		{name: "null", in: ` null `, want: ErrNotObject},
		{name: "false", in: `false`, want: ErrNotObject},
		{name: "empty object", in: `{}`, want: ErrNoToken},
		{name: "no token", in: `{"type":"response","id":1}`, want: ErrNoToken},
		{name: "token number", in: `{"token":1}`, want: ErrNoToken},
		{name: "token null", in: `{"token":null}`, want: ErrNoToken},
		{name: "token object", in: `{"token":{"token":"t"}}`, want: ErrNoToken},
		{name: "token empty", in: `{"token":""}`, want: ErrNoToken},
		{name: "token case", in: `{"Token":"t"}`, want: ErrNoToken},
		{name: "token nested only", in: `{"a":{"token":"t"}}`, want: ErrNoToken},
		{name: "duplicate token last not string", in: `{"token":"t","token":2}`, want: ErrNoToken},
		{name: "duplicate token last empty", in: `{"token":"t","token":""}`, want: ErrNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			got, err := ParseInbound(in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
			if got.Body != nil || got.Token != "" {
				t.Errorf("Inbound = %+v on error, want zero", got)
			}
			if !strings.HasPrefix(err.Error(), "protocol: ") {
				t.Errorf("error text %q lacks the package prefix", err)
			}
			if err := checkInboundAgainstRef(in); err != nil {
				t.Errorf("reference mismatch: %v", err)
			}
		})
	}
}

func TestParseInbound(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		token  string
		typ    string
		id     string // raw JSON, "" for nil
		method string
		body   string
	}{
		{name: "only token", in: `{"token":"t"}`, token: "t", body: `{}`},
		{name: "only token spaced", in: ` { "token" : "t" } `, token: "t", body: ` {  } `},
		{name: "token last", in: `{"a":1,"token":"t"}`, token: "t", body: `{"a":1}`},
		{name: "token first", in: `{"token":"t","a":1}`, token: "t", body: `{"a":1}`},
		{name: "token middle", in: `{"a":1,"token":"t","b":2}`, token: "t", body: `{"a":1,"b":2}`},
		{name: "token middle spaced", in: `{"a":1 , "token" : "t" , "b":2}`, token: "t", body: `{"a":1 , "b":2}`},
		{name: "token first spaced", in: `{ "token":"t", "a" : 1 }`, token: "t", body: `{ "a" : 1 }`},
		{name: "token last spaced", in: `{ "a" : 1 , "token":"t" }`, token: "t", body: `{ "a" : 1 }`},
		{
			name:  "pretty printed token first",
			in:    "{\n  \"token\": \"t\",\n  \"type\": \"response\",\n  \"id\": 1\n}\n",
			token: "t", typ: "response", id: `1`,
			body: "{\n  \"type\": \"response\",\n  \"id\": 1\n}\n",
		},
		{
			name:  "pretty printed token last",
			in:    "{\n  \"type\": \"event\",\n  \"token\": \"t\"\n}",
			token: "t", typ: "event",
			body: "{\n  \"type\": \"event\"\n}",
		},
		{
			name:  "pretty printed token middle",
			in:    "{\n  \"a\": 1,\n  \"token\": \"t\",\n  \"b\": 2\n}",
			token: "t",
			body:  "{\n  \"a\": 1,\n  \"b\": 2\n}",
		},
		{name: "two tokens adjacent", in: `{"token":"x","token":"t"}`, token: "t", body: `{}`},
		{name: "two tokens first and last", in: `{"token":"x","a":1,"token":"t"}`, token: "t", body: `{"a":1}`},
		{name: "two tokens after member", in: `{"a":1,"token":"x","token":"t"}`, token: "t", body: `{"a":1}`},
		{name: "two tokens around members", in: `{"a":1,"token":"x","b":2,"token":"t","c":3}`, token: "t", body: `{"a":1,"b":2,"c":3}`},
		{name: "invalid token then valid", in: `{"token":null,"a":1,"token":"t"}`, token: "t", body: `{"a":1}`},
		{name: "three tokens", in: `{"token":"1","token":"2","token":"t"}`, token: "t", body: `{}`},
		{name: "escaped token key", in: `{"a":1,"\u0074oken":"t"}`, token: "t", body: `{"a":1}`},
		{name: "escaped and plain token keys", in: `{"tok\u0065n":"x","a":1,"token":"t"}`, token: "t", body: `{"a":1}`},
		{name: "escaped token value", in: `{"token":"a\u0062\"c\u00e9"}`, token: "ab\"cé", body: `{}`},
		{
			name:  "body byte-exact",
			in:    `{"z":1.0e+2,"token":"t","a":-0,"s":"\u00e9\/\ud83d\ude00","n":12345678901234567890123,"o":{"token":"inner"},"arr":[ 1 ,2 ]}`,
			token: "t",
			body:  `{"z":1.0e+2,"a":-0,"s":"\u00e9\/\ud83d\ude00","n":12345678901234567890123,"o":{"token":"inner"},"arr":[ 1 ,2 ]}`,
		},
		{
			name:  "type id method",
			in:    `{"type":"response","id":"c\u0031","method":"user.get","token":"t","payload":{"ok":true}}`,
			token: "t", typ: "response", id: `"c\u0031"`, method: "user.get",
			body: `{"type":"response","id":"c\u0031","method":"user.get","payload":{"ok":true}}`,
		},
		{
			name:  "escaped member keys",
			in:    `{"t\u0079pe":"event","\u0069d":7,"m\u0065thod":"x.y","token":"t"}`,
			token: "t", typ: "event", id: `7`, method: "x.y",
			body: `{"t\u0079pe":"event","\u0069d":7,"m\u0065thod":"x.y"}`,
		},
		{name: "id null kept", in: `{"id":null,"token":"t"}`, token: "t", id: `null`, body: `{"id":null}`},
		{name: "id object", in: `{"token":"t","id":{"a":[1]}}`, token: "t", id: `{"a":[1]}`, body: `{"id":{"a":[1]}}`},
		{name: "id big number", in: `{"token":"t","id":1.000000000000000000001}`, token: "t", id: `1.000000000000000000001`, body: `{"id":1.000000000000000000001}`},
		{name: "type not string", in: `{"token":"t","type":1,"method":["m"]}`, token: "t", body: `{"type":1,"method":["m"]}`},
		{name: "type escaped", in: `{"token":"t","type":"ev\u0065nt"}`, token: "t", typ: "event", body: `{"type":"ev\u0065nt"}`},
		{name: "duplicate type last wins", in: `{"type":"a","token":"t","type":"b"}`, token: "t", typ: "b", body: `{"type":"a","type":"b"}`},
		{name: "duplicate type last not string", in: `{"type":"a","token":"t","type":null}`, token: "t", body: `{"type":"a","type":null}`},
		{name: "token value with tricky characters", in: `{"token":"},\"token\":{","a":"token"}`, token: `},"token":{`, body: `{"a":"token"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			got, err := ParseInbound(in)
			if err != nil {
				t.Fatalf("error = %v", err)
			}
			if got.Token != tt.token {
				t.Errorf("Token = %q, want %q", got.Token, tt.token)
			}
			if got.Type != tt.typ {
				t.Errorf("Type = %q, want %q", got.Type, tt.typ)
			}
			if !sameRaw(got.ID, raw(tt.id)) {
				t.Errorf("ID = %q, want %q", got.ID, tt.id)
			}
			if got.Method != tt.method {
				t.Errorf("Method = %q, want %q", got.Method, tt.method)
			}
			if string(got.Body) != tt.body {
				t.Errorf("Body =\n%s\nwant\n%s", got.Body, tt.body)
			}
			if err := checkInboundAgainstRef(in); err != nil {
				t.Errorf("reference mismatch: %v", err)
			}
		})
	}
}

func TestParseInboundDeepAndHuge(t *testing.T) {
	deep := nested(9000)
	big := `"` + strings.Repeat(`ab\"}{][,`, 1<<17) + `"`
	tests := []struct {
		name string
		in   string
		body string
	}{
		{name: "9000 deep", in: `{"token":"t","data":` + deep + `}`, body: `{"data":` + deep + `}`},
		{name: "9000 deep before token", in: `{"data":` + deep + `,"token":"t"}`, body: `{"data":` + deep + `}`},
		{name: "1 MiB", in: `{"a":` + big + `,"token":"t","b":` + big + `}`, body: `{"a":` + big + `,"b":` + big + `}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			got, err := ParseInbound(in)
			if err != nil {
				t.Fatal(err)
			}
			if got.Token != "t" {
				t.Errorf("Token = %q", got.Token)
			}
			if string(got.Body) != tt.body {
				t.Errorf("Body differs (len %d, want %d)", len(got.Body), len(tt.body))
			}
		})
	}
}

func TestParseInboundBodyIsFresh(t *testing.T) {
	in := []byte(`{"token":"t","a":1}`)
	got, err := ParseInbound(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'x'
	}
	if string(got.Body) != `{"a":1}` {
		t.Errorf("Body changed with the input: %q", got.Body)
	}
}

func TestParseInboundAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	in := []byte(`{"type":"response","id":17,"token":"conn-0123456789","payload":{"user":{"id":"u-123","name":"Ann"}}}`)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseInbound(in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 { // Body, Token, Type
		t.Errorf("ParseInbound allocs = %v, want <= 3", allocs)
	}
}
