package routetable

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/piped-dev/piped/config"
)

var testDefault = Default{NodeID: "n1", Exchange: "exchange-out-n1", Timeout: 30 * time.Second, Enabled: true}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"billing.*", []string{"billing.pay", "billing.", "billing.refund-all"}, []string{"billing", "billing.a.b", "xbilling.pay", "$billing.pay"}},
		{"billing.**", []string{"billing.pay", "billing.a.b.c", "billing."}, []string{"billing", "billin.a"}},
		{"*.get", []string{"user.get", ".get"}, []string{"a.user.get", "user.gets"}},
		{"**.get", []string{"user.get", "a.b.get", ".get"}, []string{"get", "user.set"}},
		{"v?.get", []string{"v1.get", "vé.get"}, []string{"v.get", "v12.get", "v..get"}},
		{"a*b*c", []string{"abc", "axbyc", "aabbcc", "abbbc"}, []string{"ab", "a.bc", "abc.", "axb.c"}},
		{"a**b*c", []string{"a.x.bc", "abyc", "a.b.byc"}, []string{"a.b.c", "ab"}},
		{"*", []string{"get", "x", ""}, []string{"a.b", "$connect"}},
		{"**", []string{"get", "a.b.c", ""}, []string{"$connect", "$presence"}},
		{"?", []string{"a", "é"}, []string{"", "ab", "."}},
		{"*?*", []string{"a", "abc"}, []string{"", "a.b"}},
		{"$*", []string{"$connect", "$disconnect"}, []string{"connect", "$a.b"}},
		{"$**", []string{"$connect", "$a.b"}, []string{"connect"}},
		{"***", []string{"a.b"}, nil}, // a run of stars is "**"
		{"x*y*z*w*v", []string{"xyzwv", "x1y2z3w4v"}, []string{"x.y.z.w.v", strings.Repeat("x", 250)}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			tab, err := Compile([]config.Route{{Match: tt.pattern, Exchange: "e"}}, Default{Exchange: "d"})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tt.match {
				if r := tab.Lookup(m); r == nil || r.Match != tt.pattern {
					t.Errorf("%q does not match %q, want a match", m, tt.pattern)
				}
			}
			for _, m := range tt.miss {
				if r := tab.Lookup(m); r != nil {
					t.Errorf("%q matches %q, want none", m, tt.pattern)
				}
			}
		})
	}
}

// TestGlobLongPattern exercises the automaton beyond one 64-bit word.
func TestGlobLongPattern(t *testing.T) {
	p := "*" + strings.Repeat("ab", 60) + "*" + strings.Repeat("c", 50) + "?"
	tab, err := Compile([]config.Route{{Match: p, Exchange: "e"}}, Default{})
	if err != nil {
		t.Fatal(err)
	}
	hit := "zz" + strings.Repeat("ab", 60) + "q" + strings.Repeat("c", 50) + "x"
	if tab.Lookup(hit) == nil {
		t.Errorf("long pattern does not match %q", hit)
	}
	if tab.Lookup(hit[:len(hit)-1]) != nil {
		t.Errorf("long pattern matches a method one character short")
	}
}

func TestLookupPrecedence(t *testing.T) {
	routes := []config.Route{
		{Match: "billing.refund", Exchange: "refunds"},   // 0: exact before the glob
		{Match: "billing.*", Exchange: "billing"},        // 1
		{Match: "billing.pay", Exchange: "never"},        // 2: after the glob: never taken
		{Match: "**", Exchange: "catchall"},              // 3
		{Match: "$connect", Exchange: "lifecycle"},       // 4: ** does not take $ methods
		{Match: "$*", Exchange: "lifecycle-other"},       // 5
		{Match: "unreachable.exact", Exchange: "shadow"}, // 6: ** comes first
	}
	tab, err := Compile(routes, testDefault)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, exchange, name string
	}{
		{"billing.refund", "refunds", "routes[0] billing.refund"},
		{"billing.pay", "billing", "routes[1] billing.*"},
		{"billing.x", "billing", "routes[1] billing.*"},
		{"billing.a.b", "catchall", "routes[3] **"},
		{"get-article", "catchall", "routes[3] **"},
		{"unreachable.exact", "catchall", "routes[3] **"},
		{"$connect", "lifecycle", "routes[4] $connect"},
		{"$disconnect", "lifecycle-other", "routes[5] $*"},
	}
	for _, tt := range tests {
		r := tab.Lookup(tt.method)
		if r == nil || r.Exchange != tt.exchange || r.Name != tt.name {
			t.Errorf("Lookup(%q) = %+v, want exchange %q (%s)", tt.method, r, tt.exchange, tt.name)
		}
	}
}

func TestLookupDefault(t *testing.T) {
	routes := []config.Route{{Match: "billing.*", Exchange: "billing", Timeout: 5 * time.Second}}
	tests := []struct {
		name    string
		enabled bool
		method  string
		want    string // exchange, "" for nil
		notice  string // ForNotice's exchange
	}{
		{"default on, no match", true, "get-article", "exchange-out-n1", "exchange-out-n1"},
		{"default on, match", true, "billing.pay", "billing", "billing"},
		{"default off, no match", false, "get-article", "", "exchange-out-n1"},
		{"default off, lifecycle", false, "$connect", "", "exchange-out-n1"},
		{"default on, lifecycle not taken by globs", true, "$connect", "exchange-out-n1", "exchange-out-n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := testDefault
			d.Enabled = tt.enabled
			tab, err := Compile(routes, d)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if r := tab.Lookup(tt.method); r != nil {
				got = r.Exchange
			}
			if got != tt.want {
				t.Errorf("Lookup(%q) exchange %q, want %q", tt.method, got, tt.want)
			}
			if r := tab.ForNotice(tt.method); r == nil || r.Exchange != tt.notice {
				t.Errorf("ForNotice(%q) = %+v, want exchange %q", tt.method, r, tt.notice)
			}
		})
	}
}

func TestRouteResolved(t *testing.T) {
	tab, err := Compile([]config.Route{
		{Match: "a", Exchange: "x", Declare: true, Durable: true, Timeout: 5 * time.Second, Rate: 2.5},
		{Match: "b", Exchange: "x", Declare: true, Durable: true, Type: "topic", Rate: 10, Burst: 3, MaxPayloadBytes: 100},
		{Match: "c", Exchange: "x", Queue: "jobs", BindingKey: "c"},
		{Match: "d", Exchange: "x", Queue: "fast", QueueType: "quorum", BindingKey: "#"},
	}, testDefault)
	if err != nil {
		t.Fatal(err)
	}
	a, b, d := tab.Lookup("a"), tab.Lookup("b"), tab.Lookup("zzz")
	if a.Queue != "" || a.QueueType != "" || a.BindingKey != "" {
		t.Errorf("routes[0] has queue %q of type %q, binding key %q; want none", a.Queue, a.QueueType, a.BindingKey)
	}
	if a.Type != "topic" || a.Timeout != 5*time.Second || a.Expiration != "5000" || a.Burst != 3 {
		t.Errorf("routes[0] = %+v: want type topic, timeout 5s, expiration 5000, burst ceil(2.5)=3", a)
	}
	if b.Timeout != 30*time.Second || b.Expiration != "30000" || b.Burst != 3 || b.MaxPayloadBytes != 100 {
		t.Errorf("routes[1] = %+v: want requests.timeout, burst 3, max_payload_bytes 100", b)
	}
	if c := tab.Lookup("c"); c.Queue != "jobs" || c.QueueType != "classic" || c.BindingKey != "c" {
		t.Errorf("routes[2] has queue %q of type %q, binding key %q; want jobs, classic (the default), c", c.Queue, c.QueueType, c.BindingKey)
	}
	if q := tab.Lookup("d"); q.Queue != "fast" || q.QueueType != "quorum" || q.BindingKey != "#" {
		t.Errorf("routes[3] has queue %q of type %q, binding key %q; want fast, quorum, #", q.Queue, q.QueueType, q.BindingKey)
	}
	if !d.IsDefault || d.Name != "default" || d.Exchange != "exchange-out-n1" || d.Expiration != "30000" || d.Rate != 0 {
		t.Errorf("default = %+v", d)
	}
}

func TestRoutingKey(t *testing.T) {
	long := strings.Repeat("m", 250)
	tests := []struct {
		tmpl, method, want string
	}{
		{"", "billing.pay", ""}, // explicitly empty (config.Load fills in "{method}" when the key is left out)
		{"{method}", "billing.pay", "billing.pay"},
		{"{method}", long + "123456789", (long + "123456789")[:255]},
		{"calls", "billing.pay", "calls"},
		{"node.{node}", "billing.pay", "node.n1"},
		{"{node}.{method}", "billing.pay", "n1.billing.pay"},
		{"rpc.{method}.v1", "get", "rpc.get.v1"},
		{"x.{method}", long + "123456789", ("x." + long + "123456789")[:255]},
	}
	for _, tt := range tests {
		tab, err := Compile([]config.Route{{Match: "**", Exchange: "e", RoutingKey: tt.tmpl}}, testDefault)
		if err != nil {
			t.Fatalf("%q: %v", tt.tmpl, err)
		}
		if got := tab.Lookup(tt.method).RoutingKey(tt.method); got != tt.want {
			t.Errorf("routing_key %q, method %q: %q, want %q", tt.tmpl, tt.method, got, tt.want)
		}
	}
	if got := tab(t).Default().RoutingKey("get-article"); got != "get-article" {
		t.Errorf("default route key %q, want the method", got)
	}
}

func tab(t *testing.T) *Table {
	t.Helper()
	tb, err := Compile(nil, testDefault)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name  string
		route config.Route
		want  string // in the error
	}{
		{"no match", config.Route{Exchange: "e"}, `routes[1] (match ""): match: required`},
		{"token placeholder", config.Route{Match: "a.*", Exchange: "e", RoutingKey: "{token}"}, `routes[1] (match "a.*"): routing_key: placeholder {token} is not allowed`},
		{"unknown placeholder", config.Route{Match: "a", Exchange: "e", RoutingKey: "{meth}"}, "unknown placeholder {meth}"},
		{"unclosed", config.Route{Match: "a", Exchange: "e", RoutingKey: "x.{method"}, `"{" without "}"`},
		{"stray close", config.Route{Match: "a", Exchange: "e", RoutingKey: "x}"}, `"}" without "{"`},
		{"bad type", config.Route{Match: "a", Exchange: "e", Declare: true, Type: "toppic"}, "type: must be one of topic, direct, fanout, headers"},
		{"declare default exchange", config.Route{Match: "a", Declare: true}, "default exchange"},
		{"declare amq.", config.Route{Match: "a", Exchange: "amq.topic", Declare: true}, "amq.*"},
		{"negative timeout", config.Route{Match: "a", Exchange: "e", Timeout: -time.Second}, "timeout: must be 0"},
		{"tiny timeout", config.Route{Match: "a", Exchange: "e", Timeout: time.Microsecond}, "at least 1ms"},
		{"negative rate", config.Route{Match: "a", Exchange: "e", Rate: -1}, "rate: must be"},
		{"burst alone", config.Route{Match: "a", Exchange: "e", Burst: 3}, "burst: has no effect without rate"},
		{"negative payload", config.Route{Match: "a", Exchange: "e", MaxPayloadBytes: -1}, "max_payload_bytes"},
		{"duplicate exact", config.Route{Match: "first", Exchange: "e"}, `routes[1] (match "first"): match: routes[0] has the same match`},
		{"conflicting declare", config.Route{Match: "z", Exchange: "declared", Declare: true, Type: "direct", Durable: true}, `routes[0] declares exchange "declared" as topic`},
		{"long match", config.Route{Match: strings.Repeat("a", 256), Exchange: "e"}, "256 bytes long"},
		{"queue on the default exchange", config.Route{Match: "a", Queue: "q", BindingKey: "q"}, "queue: needs a non-empty exchange"},
		{"queue_type without queue", config.Route{Match: "a", Exchange: "e", QueueType: "quorum"}, "queue: queue_type and binding_key need queue"},
		{"unknown queue_type", config.Route{Match: "a", Exchange: "e", Queue: "q", QueueType: "stream"}, `queue_type: must be classic or quorum, got "stream"`},
		{"one queue, two types", config.Route{Match: "a", Exchange: "e", Queue: "jobs"}, `routes[1] (match "a"): queue_type: routes[0] declares queue "jobs" as quorum`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			routes := []config.Route{{Match: "first", Exchange: "declared", Declare: true, Durable: true, Queue: "jobs", QueueType: "quorum", BindingKey: "#"}, tt.route}
			_, err := Compile(routes, testDefault)
			if err == nil {
				t.Fatalf("Compile accepted %+v", tt.route)
			}
			if !errors.Is(err, ErrInvalidRoute) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want ErrInvalidRoute containing %q", err, tt.want)
			}
		})
	}
}

func TestCompileAllProblems(t *testing.T) {
	_, err := Compile([]config.Route{{Match: "a", RoutingKey: "{token}"}, {Match: "b", Rate: -1}}, testDefault)
	var e *Error
	if !errors.As(err, &e) || strings.Count(err.Error(), "\n") != 1 {
		t.Fatalf("error %q: want two problems, one per line", err)
	}
}

func TestHolder(t *testing.T) {
	var zero Holder
	if zero.Lookup("a") != nil {
		t.Error("zero Holder found a route")
	}
	old, _ := Compile([]config.Route{{Match: "a", Exchange: "old"}}, testDefault)
	h := NewHolder(old)
	kept := h.Lookup("a")
	next, _ := Compile([]config.Route{{Match: "a", Exchange: "new"}}, testDefault)
	h.Store(next)
	if got := h.Lookup("a").Exchange; got != "new" {
		t.Errorf("after Store: exchange %q, want new", got)
	}
	if kept.Exchange != "old" {
		t.Errorf("a route looked up before Store changed: %q", kept.Exchange)
	}
}

func TestLookupAllocs(t *testing.T) {
	tb := benchTable(t)
	for _, m := range []string{"billing.pay", "orders.v2.get", "chat.send", "nothing.matches.this"} {
		if n := testing.AllocsPerRun(100, func() { tb.Lookup(m) }); n != 0 {
			t.Errorf("Lookup(%q): %v allocations, want 0", m, n)
		}
	}
}
