// Package reload applies a changed configuration to a running node without
// dropping a connection or a call: on SIGHUP, and with reload.watch when
// the configuration file changes, it loads the configuration again from
// the sources the node started with, and when that is valid swaps in the
// new route table and the runtime limits. Everything else needs a restart;
// a reload that changes such a key says so and leaves it as it is.
package reload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/gateway"
	"github.com/piped-dev/piped/routetable"
)

// Routes takes a new route table (routing.Router.SetRoutes): it checks the
// table's exchanges on the broker and stores it, or returns why not.
type Routes interface {
	SetRoutes(ctx context.Context, t *routetable.Table) error
}

// Limits takes new runtime limits (gateway.Server.SetLimits).
type Limits interface {
	SetLimits(l gateway.Limits)
}

// Options are a Reloader's dependencies.
type Options struct {
	// Load reads and validates the configuration again, from the command
	// line and environment the node started with.
	Load func() (*config.Config, error)
	// Running is the configuration the node runs with.
	Running *config.Config
	Routes  Routes
	Limits  Limits
	// Signals delivers SIGHUP; main registers it before the node starts,
	// so that an early SIGHUP does not kill the process.
	Signals <-chan os.Signal
	// WatchFile, when not "", is the configuration file to watch
	// (reload.watch = true); its directory is watched, so that editors
	// that replace the file and Kubernetes' ConfigMap symlink swaps count.
	WatchFile string
	// LogLevel, when not nil, is the logger's level: log.level applies at
	// once.
	LogLevel *slog.LevelVar
	// Apply are called with every configuration a reload applies, after
	// the routes and limits: the runtime keys other parts own (such as
	// lifecycle.refresh_interval) take their new values there. They must
	// not block.
	Apply []func(next *config.Config)
	Log   *slog.Logger
}

// Reloader reloads the configuration; see the package comment.
type Reloader struct {
	// Set at construction.
	load   func() (*config.Config, error)
	routes Routes
	limits Limits
	sigs   <-chan os.Signal
	file   string
	level  *slog.LevelVar
	apply  []func(*config.Config)
	log    *slog.Logger

	mu sync.Mutex // serialises reloads
	// Guarded by mu.
	running *config.Config // what the node runs with: the start configuration plus every applied reload
}

// New returns a Reloader; it does nothing until Run or Reload.
func New(o Options) *Reloader {
	return &Reloader{load: o.Load, routes: o.Routes, limits: o.Limits, sigs: o.Signals,
		file: o.WatchFile, level: o.LogLevel, apply: o.Apply, log: o.Log, running: o.Running}
}

// watchSettle is how long the file must be quiet after a change before it
// is loaded: editors and `kubectl` write in several steps.
const watchSettle = 200 * time.Millisecond

// Run reloads on every signal and, when a file is watched, after each
// change of it, until ctx is done. A file that cannot be watched is logged
// and SIGHUP keeps working. It returns nil when ctx is done.
func (r *Reloader) Run(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if r.file != "" {
		w, err := watch(r.file)
		if err != nil {
			r.log.Error("reload.watch: cannot watch the configuration file; SIGHUP still reloads", "file", r.file, "error", err)
		} else {
			defer w.Close()
			events, watchErrs = w.Events, w.Errors
			r.log.Info("watching the configuration file for changes", "file", r.file)
		}
	}
	target := resolve(r.file)
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.sigs:
			_ = r.Reload(ctx, "SIGHUP")
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			// The file itself, or the target of its symlink (a ConfigMap's ..data swap).
			if t := resolve(r.file); filepath.Clean(ev.Name) == filepath.Clean(r.file) || t != target {
				target = t
				settle.Reset(watchSettle)
			}
		case err, ok := <-watchErrs:
			if !ok {
				watchErrs = nil
				continue
			}
			r.log.Warn("reload.watch: error watching the configuration file", "file", r.file, "error", err)
		case <-settle.C:
			_ = r.Reload(ctx, "file changed")
		}
	}
}

// watch watches the directory of file.
func watch(file string) (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(filepath.Dir(file)); err != nil {
		_ = w.Close()
		return nil, err
	}
	return w, nil
}

// resolve returns the file a path finally names, "" when it does not exist.
func resolve(path string) string {
	if path == "" {
		return ""
	}
	t, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	return t
}

// Reload loads the configuration and applies it, or rejects it and keeps
// the running one; trigger says why (for the log). It logs the outcome
// itself and returns the reason for a rejection.
func (r *Reloader) Reload(ctx context.Context, trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, table, err := r.prepare()
	if err == nil {
		err = r.routes.SetRoutes(ctx, table)
	}
	if err != nil {
		r.log.Error("configuration reload rejected; the running configuration stays", "trigger", trigger, "error", err)
		return err
	}
	r.limits.SetLimits(gateway.LimitsOf(next.WS))
	if r.level != nil {
		_ = r.level.UnmarshalText([]byte(next.Log.Level)) // validated
	}
	for _, f := range r.apply {
		f(next)
	}
	notApplied := config.RestartOnly(r.running, next)
	r.running = applied(r.running, next)
	attrs := []any{"trigger", trigger, "routes", len(table.Routes()), "default_route", next.Routing.DefaultRoute,
		"requests_timeout", next.Requests.Timeout.String()}
	if len(notApplied) > 0 {
		r.log.Warn("configuration reloaded; keys that need a restart changed and were NOT applied",
			append(attrs, "not_applied", notApplied)...)
	} else {
		r.log.Info("configuration reloaded", attrs...)
	}
	return nil
}

// prepare loads and validates the configuration and compiles its routes.
// The default route keeps the running node id and out-exchange: those
// need a restart.
func (r *Reloader) prepare() (*config.Config, *routetable.Table, error) {
	next, err := r.load()
	if err != nil {
		return nil, nil, err
	}
	d := routetable.DefaultOf(r.running)
	d.Timeout, d.Enabled = next.Requests.Timeout, next.Routing.DefaultRoute
	table, err := routetable.Compile(next.Routes, d)
	if err != nil {
		return nil, nil, fmt.Errorf("reload: %w", err)
	}
	return next, table, nil
}

// applied returns running with the runtime keys of next (config.RuntimeKeys).
func applied(running, next *config.Config) *config.Config {
	c := *running
	c.Routes = next.Routes
	c.Routing.DefaultRoute = next.Routing.DefaultRoute
	c.Requests.Timeout = next.Requests.Timeout
	c.WS.RatePerSecond = next.WS.RatePerSecond
	c.WS.RateBurst = next.WS.RateBurst
	c.WS.MaxInflight = next.WS.MaxInflight
	c.WS.MaxConnections = next.WS.MaxConnections
	c.Lifecycle.RefreshInterval = next.Lifecycle.RefreshInterval
	c.Log.Level = next.Log.Level
	return &c
}
