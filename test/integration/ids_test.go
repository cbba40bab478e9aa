package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// Backends written for the original Piped do not copy correlation_id, and
// their JSON encoders re-spell ids: PHP's json_encode writes "a\/1" and
// "\u00e9", Python's json.dumps (ensure_ascii) "\u00e9" and surrogate pairs,
// re-encoded numbers change spelling. Each call still gets exactly one
// answer, on its own connection, byte for byte as the backend wrote it: no
// broadcast to the token's other connection, no timeout after the result.
// Two big integers that differ in their last digit stay two ids.
func TestReencodedIDsAnsweredOnce(t *testing.T) {
	t.Parallel()
	const timeout = 3 * time.Second
	n := h.StartNode(t, h.WithEnv(fmt.Sprintf("PIPED_REQUESTS_TIMEOUT=%v", timeout)))
	ch := h.Channel(t)
	token := h.UniqueID("tok")
	caller, other := h.Dial(t, n, token), h.Dial(t, n, token)

	// php: json_encode(["id"=>…,"type"=>"result","token"=>…,"method"=>…,"payload"=>…]);
	// py: json.dumps({"id": …, "type": "result", "token": …, …}) with its
	// default separators and ensure_ascii.
	php := func(id, method string, c int) string {
		return `{"id":` + id + `,"type":"result","token":"` + token + `","method":"` + strings.ReplaceAll(method, "/", `\/`) + `","payload":{"case":` + fmt.Sprint(c) + `}}`
	}
	py := func(id, method string, c int) string {
		return `{"id": ` + id + `, "type": "result", "token": "` + token + `", "method": "` + method + `", "payload": {"case": ` + fmt.Sprint(c) + `}}`
	}
	cases := []struct {
		name     string
		callID   string // as the client sent it; "" for none
		resultID string // as the backend's encoder wrote it
		encode   func(id, method string, c int) string
	}{
		{"PHP escapes the slash", `"a/1"`, `"a\/1"`, php},
		{"PHP escapes non-ASCII", `"é-2"`, `"\u00e9-2"`, php},
		{"PHP surrogate pair", `"😀-4"`, `"\ud83d\ude00-4"`, php},
		{"Python ensure_ascii", `"é-1"`, `"\u00e9-1"`, py},
		{"Python surrogate pair", `"😀-3"`, `"\ud83d\ude00-3"`, py},
		{"Python float", `1.50e3`, `1500.0`, py},
		{"Python None for a call without id", ``, `null`, py},
		{"big integer, exact decimal re-spelling", `12345678901234567890123`, `1.2345678901234567890123e22`, php},
		{"big integer nobody answers", `12345678901234567890124`, ``, nil},
	}
	const unanswered = `12345678901234567890124`
	// The unanswered call goes first: an id compared through float64 would
	// give it the next call's result (oldest first) and time out the other.
	order := []int{8, 0, 1, 2, 3, 4, 5, 6, 7}
	start := time.Now()
	for _, i := range order {
		tc := cases[i]
		if tc.callID == "" {
			caller.Send(t, fmt.Sprintf(`{"method":"user/get","payload":{"case":%d}}`, i))
		} else {
			caller.Send(t, fmt.Sprintf(`{"id":%s,"method":"user/get","payload":{"case":%d}}`, tc.callID, i))
		}
	}

	// The backend: take every call, answer it without a correlation id.
	var want []string // what the caller must receive, in order
	for range cases {
		d := getCall(t, ch, n, timeout/2)
		var call struct {
			ID      json.RawMessage
			Method  string
			Payload struct{ Case int }
		}
		if err := json.Unmarshal(d.Body, &call); err != nil {
			t.Fatalf("published call %s: %v", d.Body, err)
		}
		tc := cases[call.Payload.Case]
		if string(call.ID) != tc.callID {
			t.Fatalf("%s: published id %s, want the client's %s", tc.name, call.ID, tc.callID)
		}
		if tc.encode == nil {
			continue
		}
		body := tc.encode(tc.resultID, call.Method, call.Payload.Case)
		h.Publish(t, "exchange-in-"+n.ID, "", amqp.Publishing{Body: []byte(body)})
		sep := `"token":"` + token + `",`
		if !strings.Contains(body, sep) {
			sep = `"token": "` + token + `", `
		}
		want = append(want, strings.Replace(body, sep, "", 1))
	}
	want = append(want, `{"type":"error","id":`+unanswered+`,"error":{"code":"timeout","message":"no result within `+timeout.String()+`"}}`)

	// Past the timeout (and a margin) nothing else may come: a ping on
	// each connection must be answered by the very next frame.
	time.Sleep(time.Until(start.Add(timeout + 1500*time.Millisecond)))
	caller.Send(t, `{"method":"ping"}`)
	other.Send(t, `{"method":"ping"}`)
	const pong = `{"type":"event","event":"pong"}`
	var got []string
	for {
		b := string(caller.Next(t, wait))
		if b == pong {
			break
		}
		got = append(got, b)
	}
	if !slices.Equal(got, want) {
		t.Errorf("caller got:\n  %s\nwant exactly:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if b := string(other.Next(t, wait)); b != pong {
		t.Errorf("the token's other connection got %s, want nothing before its pong", b)
	}
	if v := n.Metric(t, `piped_results_total{routed_by="match"}`); v != float64(len(cases)-1) {
		t.Errorf("results routed by match = %v, want %d", v, len(cases)-1)
	}
	if v := n.Metric(t, `piped_call_errors_total{code="timeout"}`); v != 1 {
		t.Errorf("timeouts = %v, want 1 (the unanswered call's)", v)
	}
}
