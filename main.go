// Command piped runs one Piped node: a WebSocket gateway whose clients' calls
// travel through RabbitMQ to backends written in any language.
//
//	piped --port 8080 --nodeId 1
//
// See README.md and docs/ for the protocol and the configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/gateway"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routing"
	"github.com/piped-dev/piped/telemetry"
)

func main() {
	os.Exit(run())
}

// run wires the node and returns the process exit code.
func run() int {
	cfg, err := config.Load(os.Args[1:], os.Environ(), os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "piped:", err)
		return 2
	}
	log, err := telemetry.NewLogger(os.Stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintln(os.Stderr, "piped:", err)
		return 2
	}
	if err := serve(cfg, log); err != nil {
		log.Error("piped stopped", "error", err)
		return 1
	}
	return 0
}

// serve runs the node until SIGTERM/SIGINT, then drains: /readyz turns 503
// and upgrades are refused at once; connections close with 1012 as soon as
// their calls are answered; after shutdown.drain_timeout the remaining calls
// get an error and every connection is closed; then the broker connections.
func serve(cfg *config.Config, log *slog.Logger) error {
	metrics := telemetry.NewMetrics()
	tracing, err := telemetry.NewTracing(context.Background(), cfg.Telemetry, cfg.Node.ID, os.Getenv)
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
	hub := gateway.NewHub()
	router := routing.New(routing.Options{
		NodeID:  cfg.Node.ID,
		AMQP:    cfg.AMQP,
		Timeout: cfg.Requests.Timeout,
		Hub:     hub,
		Logger:  log,
		Metrics: metrics,
		Tracing: tracing,
	})
	srv := gateway.New(gateway.Options{
		WS:        cfg.WS,
		Router:    router,
		Readiness: router,
		Hub:       hub,
		Logger:    log,
		Metrics:   metrics,
		Tracing:   tracing,
	})

	addr := net.JoinHostPort(cfg.HTTP.Host, strconv.Itoa(cfg.HTTP.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	routerCtx, stopRouter := context.WithCancel(context.Background())
	defer stopRouter()

	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(routerCtx) }()
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(ln) }()
	log.Info("piped node started", "node_id", cfg.Node.ID, "addr", ln.Addr().String(),
		"amqp_url", config.RedactURL(cfg.AMQP.URL), "in_queue", router.Topology().QueueIn)

	var runErr error
	select {
	case <-sigCtx.Done():
		log.Info("shutting down: draining", "drain_timeout", cfg.Shutdown.DrainTimeout.String())
	case runErr = <-routerDone:
		routerDone <- runErr // for the wait below
		log.Error("broker side failed; shutting down", "error", runErr)
	case err := <-httpDone:
		runErr = fmt.Errorf("http server: %w", err)
		httpDone <- err
	}
	stopSignals() // a second signal kills the process the default way

	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Timeout)
	defer cancel()

	// 1. Readiness 503, refuse upgrades, close idle connections with 1012.
	hub.Drain()
	// 2. Let calls in flight be answered, up to the drain timeout.
	drainCtx, cancelDrain := context.WithTimeout(shutdownCtx, cfg.Shutdown.DrainTimeout)
	// Connections close as soon as their calls with an id are answered; calls
	// without an id cannot be answered once their connection is gone.
	waitFor(drainCtx, func() bool { return hub.Len() == 0 })
	cancelDrain()
	// 3. Whatever is still pending gets an error, then every connection 1012.
	if n := router.FailPending(protocol.CodeShuttingDown, "the node shut down before the backend answered"); n > 0 {
		log.Warn("calls unanswered at the end of the drain", "calls", n)
	}
	if err := hub.Close(shutdownCtx); err != nil {
		log.Warn("connections cut at the shutdown deadline", "error", err)
	}
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		log.Warn("http shutdown", "error", err)
	}
	// 4. The broker side last: results could still arrive until here.
	stopRouter()
	if err := <-routerDone; err != nil && runErr == nil {
		runErr = err
	}
	log.Info("piped node stopped")
	return runErr
}

// waitFor polls cond until it holds or ctx is done.
func waitFor(ctx context.Context, cond func() bool) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
