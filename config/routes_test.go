package config

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, method string
		want            bool
	}{
		{"billing.pay", "billing.pay", true},
		{"billing.pay", "billing.pays", false},
		{"billing.*", "billing.pay", true},
		{"billing.*", "billing.", true},
		{"billing.*", "billing.pay.card", false},
		{"billing.*", "billing", false},
		{"billing.**", "billing.pay.card", true},
		{"**", "a.b.c", true},
		{"**", "", true},
		{"*.pay", "billing.pay", true},
		{"*.pay", "a.billing.pay", false},
		{"**.pay", "a.billing.pay", true},
		{"user.?", "user.1", true},
		{"user.?", "user.12", false},
		{"user.?", "user..", false},
		{"a?c", "a.c", false},
		{"*", "$connect", false},
		{"**", "$connect", false},
		{"$*", "$connect", true},
		{"$connect", "$connect", true},
		{"$**", "$presence", true},
		{"$connect", "connect", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axx.byyc", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.method); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.method, got, tt.want)
		}
	}
}

// TestDocsRoutes checks that docs/config.md documents every route key, says
// that the environment cannot set routes, and that each TOML example with
// [[routes]] in it loads and validates as written.
func TestDocsRoutes(t *testing.T) {
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, name := range routeFields() {
		if !strings.Contains(doc, "| `"+name+"`") {
			t.Errorf("docs/config.md lacks a row for route key %s", name)
		}
	}
	if !strings.Contains(doc, "### `[[routes]]`") || !strings.Contains(doc, "cannot be set from the environment") {
		t.Error("docs/config.md lacks the [[routes]] section or does not say the environment cannot set routes")
	}
	examples := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(doc, -1)
	n := 0
	for _, m := range examples {
		if !strings.Contains(m[1], "[[routes]]") {
			continue
		}
		n++
		dir := t.TempDir()
		path := filepath.Join(dir, "piped.toml")
		if err := os.WriteFile(path, []byte(m[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load([]string{"--config", path, "--nodeId", "n1"}, nil, io.Discard)
		if err != nil {
			t.Errorf("example %q: Load: %v", m[1], err)
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("example %q: Validate: %v", m[1], err)
		}
	}
	if n == 0 {
		t.Error("docs/config.md has no TOML example with [[routes]]")
	}
}

// TestExampleRoutes uncomments the [[routes]] example at the end of
// piped.toml.example: it must load and validate.
func TestExampleRoutes(t *testing.T) {
	b, err := os.ReadFile("../piped.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	_, tail, ok := strings.Cut(string(b), "\n# [[routes]]\n")
	if !ok {
		t.Fatal("piped.toml.example lacks the commented-out [[routes]] example")
	}
	toml := "[[routes]]\n"
	for line := range strings.SplitSeq(tail, "\n") {
		if l, ok := strings.CutPrefix(line, "# "); ok && strings.Contains(l, " = ") {
			toml += l + "\n"
		}
	}
	path := filepath.Join(t.TempDir(), "piped.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load([]string{"--config", path, "--nodeId", "n1"}, nil, io.Discard)
	if err != nil {
		t.Fatalf("Load(%q): %v", toml, err)
	}
	if len(c.Routes) == 0 {
		t.Fatalf("no routes from %q", toml)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestRedactedRoutesAndSecret(t *testing.T) {
	c := valid()
	c.Auth.Mode = "jwt"
	c.Auth.JWTSecret = "https://u:s3cret@x/" // a secret that looks like a URL is hidden too
	c.Routes = []Route{{Match: "billing.*", Exchange: "billing", RoutingKey: "{method}", Timeout: 5e9}}
	r := c.Redacted()
	if got := r["auth"].(map[string]any)["jwt_secret"]; got != "xxxxx" {
		t.Errorf("auth.jwt_secret = %#v, want xxxxx", got)
	}
	routes, ok := r["routes"].([]map[string]any)
	if !ok || len(routes) != 1 {
		t.Fatalf("routes = %#v", r["routes"])
	}
	if got := routes[0]["timeout"]; got != "5s" {
		t.Errorf("routes[0].timeout = %#v, want \"5s\"", got)
	}
	for _, name := range routeFields() {
		if _, ok := routes[0][name]; !ok {
			t.Errorf("Redacted route lacks %s", name)
		}
	}
	if n := reflect.TypeFor[Route]().NumField(); len(routes[0]) != n {
		t.Errorf("Redacted route has %d keys, Route %d fields", len(routes[0]), n)
	}
	empty := valid()
	if got := empty.Redacted()["auth"].(map[string]any)["jwt_secret"]; got != "" {
		t.Errorf("empty auth.jwt_secret = %#v, want \"\"", got)
	}
}

// TestCheckNested checks the file check on shapes Config may grow: a table
// inside a section, a map of tables, a list of tables inside a table.
func TestCheckNested(t *testing.T) {
	type leaf struct {
		N int `koanf:"n"`
	}
	type shape struct {
		Inner leaf            `koanf:"inner"`
		ByKey map[string]leaf `koanf:"by_key"`
		List  []leaf          `koanf:"list"`
	}
	typ := reflect.TypeFor[shape]()
	tests := []struct {
		name string
		tbl  map[string]any
		want []string // substrings, one error each; none: no error
	}{
		{"fine", map[string]any{
			"inner":  map[string]any{"n": int64(1)},
			"by_key": map[string]any{"a": map[string]any{"n": int64(2)}},
			"list":   []any{map[string]any{"n": int64(3)}},
		}, nil},
		{"nested table of the wrong type", map[string]any{"inner": int64(1)}, []string{"s.inner: expected a table, got integer 1"}},
		{"wrong value in a nested table", map[string]any{"inner": map[string]any{"n": "x"}}, []string{`s.inner.n: expected an integer, got string "x"`}},
		{"wrong value in a map", map[string]any{"by_key": map[string]any{"a": map[string]any{"n": 1.5}}}, []string{"s.by_key.a.n: expected an integer"}},
		{"unknown key in a map's table", map[string]any{"by_key": map[string]any{"a": map[string]any{"m": int64(1)}}}, []string{`unknown key "s.by_key.a.m"`}},
		{"unknown key in a list element", map[string]any{"list": []any{map[string]any{}, map[string]any{"nn": int64(1)}}}, []string{"s.list[1].nn: unknown key (did you mean s.list[1].n?)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := checkTable("s", tt.tbl, typ, "f.toml", fields())
			if len(errs) != len(tt.want) {
				t.Fatalf("errors %q, want %d", errs, len(tt.want))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tt.want[i]) {
					t.Errorf("error %q does not contain %q", e, tt.want[i])
				}
			}
		})
	}
}

// TestRouteQueue loads [[routes]] with queue, queue_type and binding_key
// from a file, then validates: Load fills the defaults (classic, "#" on a
// topic exchange, "" otherwise), and Validate names the route and key of
// every mistake.
func TestRouteQueue(t *testing.T) {
	tests := []struct {
		name  string
		route string // the keys of one [[routes]] table after match = "jobs.*"
		want  Route  // Queue, QueueType, BindingKey after Load, when err is ""
		err   string // substring of the one error of Load or Validate
	}{
		{"classic by default, # on a declared topic exchange",
			`exchange = "api"` + "\ndeclare = true\nqueue = \"jobs\"",
			Route{Queue: "jobs", QueueType: "classic", BindingKey: "#"}, ""},
		{"quorum, binding key given",
			`exchange = "api"` + "\ndeclare = true\nqueue = \"jobs\"\nqueue_type = \"quorum\"\nbinding_key = \"jobs.*\"",
			Route{Queue: "jobs", QueueType: "quorum", BindingKey: "jobs.*"}, ""},
		{"an explicit empty binding key on a topic exchange stays empty",
			`exchange = "api"` + "\ndeclare = true\nqueue = \"jobs\"\nbinding_key = \"\"",
			Route{Queue: "jobs", QueueType: "classic", BindingKey: ""}, ""},
		{"fanout: the empty key",
			`exchange = "fan"` + "\ndeclare = true\ntype = \"fanout\"\nqueue = \"jobs\"",
			Route{Queue: "jobs", QueueType: "classic", BindingKey: ""}, ""},
		{"an existing topic exchange, type given: #",
			`exchange = "api"` + "\ntype = \"topic\"\nqueue = \"jobs\"",
			Route{Queue: "jobs", QueueType: "classic", BindingKey: "#"}, ""},
		{"direct with a binding key",
			`exchange = "d"` + "\ndeclare = true\ntype = \"direct\"\nqueue = \"jobs\"\nbinding_key = \"jobs.run\"",
			Route{Queue: "jobs", QueueType: "classic", BindingKey: "jobs.run"}, ""},
		{"no queue: nothing filled in", `exchange = "api"`, Route{}, ""},

		{"direct needs binding_key", `exchange = "d"` + "\ndeclare = true\ntype = \"direct\"\nqueue = \"jobs\"", Route{},
			`config: routes[0].binding_key: is required on a direct exchange: the routing key of the calls queue "jobs" takes`},
		{"unknown exchange type needs binding_key or type", `exchange = "api"` + "\nqueue = \"jobs\"", Route{},
			`config: routes[0].binding_key: is required: the type of exchange "api" is unknown (declare = false and no type)`},
		{"queue_type without queue", `exchange = "api"` + "\nqueue_type = \"quorum\"", Route{},
			"config: routes[0].queue_type: needs queue"},
		{"binding_key without queue", `exchange = "api"` + "\nbinding_key = \"#\"", Route{},
			"config: routes[0].binding_key: needs queue"},
		{"queue_type unknown", `exchange = "api"` + "\ndeclare = true\nqueue = \"jobs\"\nqueue_type = \"Quorum\"", Route{},
			`config: routes[0].queue_type: must be one of classic, quorum, got "Quorum"`},
		{"queue on the default exchange", "queue = \"jobs\"\nbinding_key = \"jobs\"", Route{},
			`config: routes[0].queue: needs a non-empty exchange to bind "jobs" to`},
		{"queue name with a space", `exchange = "api"` + "\ndeclare = true\nqueue = \"my jobs\"", Route{},
			`config: routes[0].queue: must be at most 255 characters from A-Z a-z 0-9 - _ . :, got "my jobs" (route match "jobs.*")`},
		{"queue name of the broker's", `exchange = "api"` + "\ndeclare = true\nqueue = \"amq.jobs\"", Route{},
			`config: routes[0].queue: cannot declare "amq.jobs"`},
		{"binding key too long", `exchange = "api"` + "\ndeclare = true\nqueue = \"jobs\"\nbinding_key = \"" + strings.Repeat("k", 256) + "\"", Route{},
			"config: routes[0].binding_key: is 256 bytes long; AMQP allows at most 255"},
		{"misspelt key", `exchange = "api"` + "\nqueue_typ = \"quorum\"", Route{},
			"config: routes[0].queue_typ: unknown key (did you mean routes[0].queue_type?)"},
		{"queue_type of the wrong type", `exchange = "api"` + "\nqueue = \"jobs\"\nqueue_type = 1", Route{},
			"config: routes[0].queue_type: expected a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "piped.toml")
			toml := "[[routes]]\nmatch = \"jobs.*\"\n" + tt.route + "\n"
			if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load([]string{"--config", path, "--nodeId", "n1"}, nil, io.Discard)
			if err == nil {
				err = c.Validate()
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Count(err.Error(), "\n") != 0 {
					t.Fatalf("%s: error %v, want one error containing %q", toml, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", toml, err)
			}
			r := c.Routes[0]
			if got := (Route{Queue: r.Queue, QueueType: r.QueueType, BindingKey: r.BindingKey}); got != tt.want {
				t.Errorf("%s: queue %q, queue_type %q, binding_key %q; want %q, %q, %q", toml, got.Queue, got.QueueType, got.BindingKey, tt.want.Queue, tt.want.QueueType, tt.want.BindingKey)
			}
		})
	}

	// One queue, one type: a second route naming the queue with another type is refused.
	c := valid()
	c.Routes = []Route{
		{Match: "a", Exchange: "api", Declare: true, Type: "topic", Durable: true, Queue: "jobs", QueueType: "quorum", BindingKey: "a"},
		{Match: "b", Exchange: "api", Declare: true, Type: "topic", Durable: true, Queue: "jobs", QueueType: "classic", BindingKey: "b"},
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `config: routes[1].queue_type: routes[0] declares queue "jobs" as "quorum"; one queue has one type`) {
		t.Errorf("two types for one queue: %v", err)
	}
}
