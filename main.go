// Command piped runs one Piped node: a WebSocket gateway whose clients' calls
// travel through RabbitMQ to backends written in any language.
//
//	piped --port 8080 --nodeId 1
//	piped healthcheck     (exit 0 when this host's node is ready; package healthcheck)
//
// See README.md and docs/ for the protocol and the configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/piped-dev/piped/auth"
	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/gateway"
	"github.com/piped-dev/piped/healthcheck"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/reload"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/routing"
	"github.com/piped-dev/piped/shutdown"
	"github.com/piped-dev/piped/telemetry"
)

// The hub carries out what routing dispatches (results, events and control
// messages) and lists its connections for $presence; the router carries out
// the gateway's lifecycle hooks.
var (
	_ routing.Hub         = (*gateway.Hub)(nil)
	_ routing.Connections = (*gateway.Hub)(nil)
	_ gateway.Notifier    = (*routing.Router)(nil)
	_ gateway.Authorizer  = (*routing.Router)(nil)
	_ gateway.TokenBinder = (*routing.Router)(nil)
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" { // the container's probe: package healthcheck
		os.Exit(healthcheck.Run(context.Background(), os.Args[2:], os.Environ(), os.Stderr))
	}
	os.Exit(run())
}

// run wires the node and returns the process exit code.
func run() int {
	// Registered first: a SIGHUP that comes before the reloader runs must not kill the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	args, environ := os.Args[1:], os.Environ()
	cfg, err := config.Load(args, environ, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cfg.Validate()
	}
	var routes *routetable.Table
	if err == nil {
		routes, err = routetable.FromConfig(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "piped:", err)
		return 2
	}
	log, level, err := telemetry.NewLeveledLogger(os.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintln(os.Stderr, "piped:", err)
		return 2
	}
	reloader := reload.Options{
		Load: func() (*config.Config, error) {
			c, err := config.Load(args, environ, io.Discard)
			if err == nil {
				err = c.Validate()
			}
			return c, err
		},
		Running:  cfg,
		Signals:  hup,
		LogLevel: level,
		Log:      log,
	}
	if cfg.Reload.Watch {
		reloader.WatchFile, _ = config.File(args, environ) // Load parsed the same args
	}
	if err := serve(cfg, routetable.NewHolder(routes), reloader, log); err != nil {
		log.Error("piped stopped", "error", err)
		return 1
	}
	return 0
}

// serve runs the node until SIGTERM/SIGINT (or a failure of the broker side
// or of an HTTP server), reloading routes and limits on SIGHUP (see
// package reload), then drains in the order shutdown.Plan holds: see
// docs/operations.md.
func serve(cfg *config.Config, routes *routetable.Holder, ro reload.Options, log *slog.Logger) error {
	metrics := telemetry.NewMetricsForRegion(cfg.Node.Region)
	tracing, err := telemetry.NewTracing(context.Background(), cfg.Telemetry, cfg.Node, os.Getenv)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(ctx); err != nil {
			log.Warn("flushing spans", "error", err)
		}
	}()
	// In auth mode "jwt" the JWKS is fetched here, before the node listens:
	// a node that cannot verify tokens does not start.
	var verifier gateway.Verifier // nil: mode "none", the token is the address
	switch cfg.Auth.Mode {
	case "none":
	case "jwt":
		v, err := auth.New(context.Background(), cfg.Auth, log)
		if err != nil {
			return fmt.Errorf("auth.mode \"jwt\": %w", err)
		}
		defer v.Close()
		verifier = v
	default: // never silently without auth because of a typo
		return fmt.Errorf("auth.mode %q: want \"none\" or \"jwt\"", cfg.Auth.Mode)
	}
	hub := gateway.NewHub()
	router := routing.New(routing.Options{
		NodeID:        cfg.Node.ID,
		AMQP:          cfg.AMQP,
		Routes:        routes,
		Hub:           hub,
		Logger:        log,
		Metrics:       metrics,
		Tracing:       tracing,
		SubjectHeader: verifier != nil,
	})
	var binder gateway.TokenBinder // targeted events only as amqp.events_exchange turns them on
	if cfg.AMQP.EventsExchange != "" {
		binder = router
	}
	srv := gateway.New(gateway.Options{
		NodeID:    cfg.Node.ID,
		WS:        cfg.WS,
		Routes:    routes,
		Router:    router,
		Readiness: router,
		Hub:       hub,
		Verifier:  verifier,
		Logger:    log,
		Metrics:   metrics,
		Tracing:   tracing,
		// Notices and authorization only as [lifecycle] turns them on.
		Lifecycle:  cfg.Lifecycle,
		Notifier:   router,
		Authorizer: router,
		Binder:     binder,
	})

	// The client port, and the internal one when configured.
	clientAddr := net.JoinHostPort(cfg.HTTP.Host, strconv.Itoa(cfg.HTTP.Port))
	clientLn, err := net.Listen("tcp", clientAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", clientAddr, err)
	}
	client := shutdown.OnceListener(clientLn)
	// Every server bounds what a connection that is not a WebSocket holds:
	// idle keep-alive connections close after http.idle_timeout (they are
	// not counted in ws.max_connections), headers are capped.
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{Handler: h, ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
			IdleTimeout: cfg.HTTP.IdleTimeout, MaxHeaderBytes: cfg.HTTP.MaxHeaderBytes}
	}
	servers := []*http.Server{newServer(srv.Handler())}
	listeners := []net.Listener{client}
	var stopAccepting []io.Closer
	if addr := cfg.HTTP.InternalAddr; addr != "" {
		internalLn, err := net.Listen("tcp", addr)
		if err != nil {
			client.Close()
			return fmt.Errorf("listen on %s (http.internal_addr): %w", addr, err)
		}
		servers[0].Handler = srv.ClientHandler()
		servers = append(servers, newServer(srv.InternalHandler()))
		listeners = append(listeners, internalLn)
		// Readiness lives on the internal listener: the client port can
		// stop accepting at the first moment of the drain.
		stopAccepting = []io.Closer{client}
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	broker := shutdown.Go(router.Run)
	ro.Routes, ro.Limits = router, srv
	reloads := shutdown.Go(reload.New(ro).Run)
	var presence *shutdown.Task // $presence rounds, stopped after the drain
	if every := cfg.Lifecycle.RefreshInterval; every > 0 {
		presence = shutdown.Go(func(ctx context.Context) error { return router.RunPresence(ctx, every, hub) })
	}
	httpFailed := make(chan error, len(servers))
	plan := &shutdown.Plan{
		Hub:           hub,
		Calls:         router,
		StopAccepting: stopAccepting,
		Broker:        broker,
		Notices:       router,
		DrainTimeout:  cfg.Shutdown.DrainTimeout,
		FailCode:      protocol.CodeShuttingDown,
		FailMessage:   "the node shut down before the backend answered",
		Log:           log,
	}
	for i, hs := range servers {
		ln := listeners[i]
		plan.Servers = append(plan.Servers, hs)
		go func() {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				httpFailed <- fmt.Errorf("http server on %s: %w", ln.Addr(), err)
			}
		}()
	}
	attrs := []any{"node_id", cfg.Node.ID, "addr", clientLn.Addr().String()}
	if len(listeners) > 1 {
		attrs = append(attrs, "internal_addr", listeners[1].Addr().String())
	}
	if cfg.AMQP.Cluster() {
		urls := cfg.AMQP.BrokerURLs()
		for i, u := range urls {
			urls[i] = config.RedactURL(u)
		}
		attrs = append(attrs, "amqp_urls", urls, "first_broker", routing.StartIndex(cfg.Node.ID, len(urls)))
	} else {
		attrs = append(attrs, "amqp_url", config.RedactURL(cfg.AMQP.URL))
	}
	log.Info("piped node started", append(attrs, "in_queue", router.Topology().QueueIn)...)

	var runErr error
	select {
	case <-sigCtx.Done():
		log.Info("shutting down: draining", "drain_timeout", cfg.Shutdown.DrainTimeout.String())
	case <-broker.Done():
		runErr = broker.Err()
		log.Error("broker side failed; shutting down", "error", runErr)
	case runErr = <-httpFailed:
	}
	stopSignals() // a second signal kills the process the default way

	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Timeout)
	defer cancel()
	_ = reloads.Stop(shutdownCtx) // no reload during the drain (SIGHUP stays caught and ignored)
	if err := plan.Shutdown(shutdownCtx); err != nil && runErr == nil {
		runErr = err
	}
	if presence != nil {
		if err := presence.Stop(shutdownCtx); err != nil {
			log.Warn("stopping presence notices", "error", err)
		}
	}
	log.Info("piped node stopped")
	return runErr
}
