package routing

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A result without our correlation id finds its call by the JSON value of
// its id, however the backend's encoder spelled it, and reaches the caller
// byte for byte as the backend wrote it.
func TestMatchByIDValue(t *testing.T) {
	for _, tc := range []struct {
		name, callID, callMethod, resultID, resultMethod string
		match                                            bool
	}{
		{"PHP escapes the slash", `"a/1"`, "get", `"a\/1"`, "get", true},
		{"PHP escapes non-ASCII", `"é-2"`, "get", `"\u00e9-2"`, "get", true},
		{"Python ensure_ascii, surrogate pair", `"😀-3"`, "get", `"\ud83d\ude00-3"`, "get", true},
		{"client escaped, backend did not", `"\u00e9"`, "get", `"é"`, "get", true},
		{"escaped method", `"x"`, "user/get", `"x"`, `user\/get`, true},
		{"number re-spelled", `1.50e3`, "get", `1500.0`, "get", true},
		{"integer as float", `7`, "get", `7.0`, "get", true},
		{"-0 is 0", `-0`, "get", `0`, "get", true},
		{"big integer re-spelled", `12345678901234567890123`, "get", `1.2345678901234567890123e22`, "get", true},
		{"big integers differ in the last digit", `12345678901234567890123`, "get", `12345678901234567890124`, "get", false},
		{"string 1 is not number 1", `"1"`, "get", `1`, "get", false},
		{"number 1 is not string 1", `1`, "get", `"1"`, "get", false},
		{"different method", `"a/1"`, "get", `"a\/1"`, "put", false},
		{"object id matches nothing", `1`, "get", `{"a":1}`, "get", false},
		{"null id answers a call without id", ``, "get", `null`, "get", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := &fakeHub{conns: map[string]int{"t": 2}}
			r := newTestRouter(hub, time.Minute)
			s := &sink{}
			c := addCall(r, s, "t", tc.callID, tc.callMethod)
			body := `{"id":` + tc.resultID + `,"type":"result","token":"t","method":"` + tc.resultMethod + `","payload":{"n":1.50e3}}`
			want := `{"id":` + tc.resultID + `,"type":"result","method":"` + tc.resultMethod + `","payload":{"n":1.50e3}}`
			newDispatcher(r).route(&amqp.Delivery{Body: []byte(body)})
			if tc.match {
				if got := s.answers(); len(got) != 1 || got[0] != want {
					t.Fatalf("caller got %q, want exactly %q", got, want)
				}
				if len(hub.got) != 0 || r.Pending() != 0 || !r.pending.isDone(c) {
					t.Fatalf("broadcast %q, pending %d: the call must be answered and gone", hub.got, r.Pending())
				}
				return
			}
			if got := s.answers(); len(got) != 0 {
				t.Fatalf("caller got %q, want nothing", got)
			}
			if len(hub.got) != 1 || r.Pending() != 1 {
				t.Fatalf("broadcast %q, pending %d: want one broadcast and the call still waiting", hub.got, r.Pending())
			}
			r.FailPending("x", "cleanup")
		})
	}
}

// isDone reports whether c was taken from the table.
func (t *pendingTable) isDone(c *call) bool {
	c.shard.mu.Lock()
	defer c.shard.mu.Unlock()
	return c.done
}

// Looking a result up by id value costs no allocation for plain and
// escaped string ids and for numbers. Run without -race (make unit does).
func TestTakeByKeyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	r := newTestRouter(&fakeHub{}, time.Hour)
	defer r.FailPending("x", "cleanup")
	addCall(r, &sink{}, "0123456789abcdef", `"a/1-é"`, "get-article")
	addCall(r, &sink{}, "0123456789abcdef", `1500`, "get-article")
	for _, id := range []string{`"a\/1-\u00e9"`, `"a/1"`, `1.5e3`, `17`} {
		raw := []byte(id)
		if n := testing.AllocsPerRun(100, func() { r.pending.takeByKey("0123456789abcdef", raw, "x") }); n != 0 {
			t.Errorf("takeByKey(%s) allocs = %v, want 0", id, n)
		}
	}
}
