package config

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRestartOnly(t *testing.T) {
	tests := []struct {
		name string
		fn   func(c *Config)
		want []string
	}{
		{"nothing changed", func(*Config) {}, nil},
		{"routes", func(c *Config) { c.Routes = []Route{{Match: "a", Exchange: "x"}} }, nil},
		{"every runtime key", func(c *Config) {
			c.Routes = []Route{{Match: "a"}}
			c.Routing.DefaultRoute = false
			c.Requests.Timeout = time.Second
			c.WS.RatePerSecond = 1
			c.WS.RateBurst = 1
			c.WS.MaxInflight = 1
			c.WS.MaxConnections = 1
			c.Lifecycle.RefreshInterval = time.Minute
			c.Log.Level = "debug"
		}, nil},
		{"node id", func(c *Config) { c.Node.ID = "other" }, []string{"node.id"}},
		{"restart-only keys with runtime keys, in declaration order", func(c *Config) {
			c.Log.Level = "debug"
			c.Auth.Mode = "jwt"
			c.HTTP.Port = 9000
			c.WS.TokenMaxLength = 4096
			c.AMQP.URL = "amqp://other/"
		}, []string{"http.port", "ws.token_max_length", "amqp.url", "auth.mode"}},
		{"a list", func(c *Config) { c.WS.AllowedOrigins = []string{"https://a.example"} }, []string{"ws.allowed_origins"}},
		{"lifecycle switches", func(c *Config) { c.Lifecycle.Connect = true; c.Reload.Watch = true }, []string{"lifecycle.connect", "reload.watch"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := valid()
			nu := valid()
			tt.fn(&nu)
			before := valid()
			if got := RestartOnly(&old, &nu); !slices.Equal(got, tt.want) {
				t.Errorf("RestartOnly = %q, want %q", got, tt.want)
			}
			if !reflect.DeepEqual(old, before) {
				t.Error("RestartOnly changed old")
			}
		})
	}

	t.Run("nil and empty lists are the same", func(t *testing.T) {
		old, nu := valid(), valid()
		old.Auth.JWTPublicKeys, nu.Auth.JWTPublicKeys = nil, []string{}
		if got := RestartOnly(&old, &nu); got != nil {
			t.Errorf("RestartOnly = %q", got)
		}
	})

	t.Run("runtime keys exist", func(t *testing.T) {
		known := map[string]bool{routesKey: true}
		for _, f := range fields() {
			known[f.key] = true
		}
		for _, k := range RuntimeKeys() {
			if !known[k] {
				t.Errorf("runtime key %s is not a key", k)
			}
		}
	})
}

// TestDocsReload checks that docs/config.md lists exactly the runtime keys
// under "What a reload changes".
func TestDocsReload(t *testing.T) {
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## What a reload changes\n")
	if !ok {
		t.Fatal(`docs/config.md lacks "## What a reload changes"`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var listed []string
	for line := range strings.SplitSeq(section, "\n") {
		if k, ok := strings.CutPrefix(line, "- `"); ok {
			listed = append(listed, k[:strings.IndexByte(k, '`')])
		}
	}
	if want := RuntimeKeys(); !slices.Equal(listed, want) {
		t.Errorf("docs/config.md lists %q under What a reload changes, want %q", listed, want)
	}
	if !strings.Contains(section, "restart-only") {
		t.Error("docs/config.md does not say the other keys are restart-only")
	}
}
