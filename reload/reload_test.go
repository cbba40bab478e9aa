package reload

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/gateway"
	"github.com/piped-dev/piped/routetable"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNode records what a reload applies.
type fakeNode struct {
	mu     sync.Mutex
	tables []*routetable.Table
	limits []gateway.Limits
	refuse error
}

func (f *fakeNode) SetRoutes(ctx context.Context, t *routetable.Table) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return f.refuse
	}
	f.tables = append(f.tables, t)
	return nil
}

func (f *fakeNode) SetLimits(l gateway.Limits) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.limits = append(f.limits, l)
}

func (f *fakeNode) counts() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.tables), len(f.limits)
}

// syncBuffer is a log sink safe for the Run goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func running() *config.Config {
	c := config.Defaults()
	c.Node.ID = "n1"
	return &c
}

func newReloader(load func() (*config.Config, error), node *fakeNode, sigs chan os.Signal, file string) (*Reloader, *syncBuffer) {
	logs := &syncBuffer{}
	return New(Options{Load: load, Running: running(), Routes: node, Limits: node, Signals: sigs, WatchFile: file,
		Log: slog.New(slog.NewTextHandler(logs, nil))}), logs
}

func TestReload(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(c *config.Config) // the loaded configuration, from running()
		loadErr error
		refuse  error
		applied bool
		log     []string
	}{
		{
			name: "routes and limits",
			edit: func(c *config.Config) {
				c.Routes = []config.Route{{Match: "billing.*", Exchange: "billing"}}
				c.WS.MaxInflight, c.Requests.Timeout = 7, 3*time.Second
			},
			applied: true,
			log:     []string{`msg="configuration reloaded"`, "routes=1", "requests_timeout=3s", "trigger=test"},
		},
		{
			name: "a restart-only key changed",
			edit: func(c *config.Config) {
				c.AMQP.URL = "amqp://u:secret@other:5672/"
				c.HTTP.Port = 9999
				c.Routes = []config.Route{{Match: "a", Exchange: "x"}}
			},
			applied: true,
			log:     []string{"NOT applied", "not_applied=\"[http.port amqp.url]\""},
		},
		{
			name:    "invalid file",
			loadErr: errors.New("config: ws.max_inflight: must be at least 1, got 0"),
			log:     []string{"reload rejected", "ws.max_inflight: must be at least 1"},
		},
		{
			name: "invalid route",
			edit: func(c *config.Config) {
				c.Routes = []config.Route{{Match: "a.*", Exchange: "x", RoutingKey: "{token}"}}
			},
			log: []string{"reload rejected", `routes[0] (match \"a.*\"): routing_key: placeholder {token} is not allowed`},
		},
		{
			name:   "an exchange is missing",
			edit:   func(c *config.Config) { c.Routes = []config.Route{{Match: "a", Exchange: "gone"}} },
			refuse: errors.New(`routing: a route's exchange does not exist: routes[0] (match "a"): exchange "gone" does not exist`),
			log:    []string{"reload rejected", `exchange \"gone\" does not exist`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := &fakeNode{refuse: tt.refuse}
			load := func() (*config.Config, error) {
				if tt.loadErr != nil {
					return nil, tt.loadErr
				}
				c := running()
				tt.edit(c)
				return c, nil
			}
			r, logs := newReloader(load, node, nil, "")
			err := r.Reload(t.Context(), "test")
			tables, limits := node.counts()
			if tt.applied != (err == nil) || tt.applied != (tables == 1 && limits == 1) {
				t.Errorf("Reload: %v; %d tables and %d limits applied; want applied %v", err, tables, limits, tt.applied)
			}
			for _, want := range tt.log {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log %q does not say %q", logs, want)
				}
			}
			if strings.Contains(logs.String(), "secret") {
				t.Errorf("log shows a password: %s", logs)
			}
		})
	}
}

// The running configuration moves on with each applied reload: a second
// identical reload reports no restart-only change, and the default route
// keeps the running node's out-exchange.
func TestReloadTracksRunning(t *testing.T) {
	node := &fakeNode{}
	load := func() (*config.Config, error) {
		c := running()
		c.Requests.Timeout = 2 * time.Second
		c.Node.ID = "renamed" // restart-only
		return c, nil
	}
	r, logs := newReloader(load, node, nil, "")
	_ = r.Reload(t.Context(), "first")
	_ = r.Reload(t.Context(), "second")
	if n := strings.Count(logs.String(), "not_applied=[node.id]"); n != 2 {
		t.Errorf("node.id reported %d times, want on both reloads (it never applies): %s", n, logs)
	}
	d := node.tables[1].Default()
	if d.Exchange != "exchange-out-n1" || d.Timeout != 2*time.Second {
		t.Errorf("default route %+v: want the running out-exchange and the new timeout", d)
	}
}

// applied takes exactly the runtime keys: after a reload that changed every
// one of them, nothing is left to restart for.
func TestAppliedTakesTheRuntimeKeys(t *testing.T) {
	old, next := running(), running()
	next.Routes = []config.Route{{Match: "x", Exchange: "e"}}
	next.Routing.DefaultRoute = false
	next.Requests.Timeout = time.Second
	next.WS.RatePerSecond, next.WS.RateBurst, next.WS.MaxInflight, next.WS.MaxConnections = 1, 2, 3, 4
	next.Lifecycle.RefreshInterval = time.Minute
	next.Log.Level = "debug"
	if got := config.RestartOnly(old, next); len(got) != 0 {
		t.Fatalf("the test changed restart-only keys: %v", got)
	}
	if got := applied(old, next); !reflect.DeepEqual(got, next) {
		t.Errorf("applied left runtime keys out:\n got %+v\nwant %+v", got, next)
	}
	if n := len(config.RuntimeKeys()); n != 9 {
		t.Errorf("config has %d runtime keys; applied and this test know 9", n)
	}
}

// log.level applies at once.
func TestReloadLogLevel(t *testing.T) {
	node := &fakeNode{}
	var level slog.LevelVar
	r := New(Options{Load: func() (*config.Config, error) { c := running(); c.Log.Level = "debug"; return c, nil },
		Running: running(), Routes: node, Limits: node, LogLevel: &level, Log: slog.New(slog.DiscardHandler)})
	if err := r.Reload(t.Context(), "test"); err != nil {
		t.Fatal(err)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("level %v after reloading log.level = debug", level.Level())
	}
}

// Run reloads on SIGHUP and, with a watched file, when the file changes,
// including when it is replaced by a rename; it stops with its context.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "piped.toml")
	if err := os.WriteFile(file, []byte("# v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	node := &fakeNode{}
	sigs := make(chan os.Signal, 1)
	r, logs := newReloader(func() (*config.Config, error) { return running(), nil }, node, sigs, file)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "the watch", func() bool { return strings.Contains(logs.String(), "watching the configuration file") })

	sigs <- os.Interrupt // any signal on the channel
	waitFor(t, "the SIGHUP reload", func() bool { n, _ := node.counts(); return n == 1 })

	if err := os.WriteFile(file, []byte("# v2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload after a write", func() bool { n, _ := node.counts(); return n == 2 })

	tmp := filepath.Join(dir, ".piped.toml.tmp")
	if err := os.WriteFile(tmp, []byte("# v3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload after a rename", func() bool { n, _ := node.counts(); return n == 3 })
	if !strings.Contains(logs.String(), `trigger="file changed"`) || !strings.Contains(logs.String(), "trigger=SIGHUP") {
		t.Errorf("log does not name the triggers: %s", logs)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
