// Command echo-backend is the example Piped backend: it answers every call
// that the Piped nodes publish with the call's own payload (see package echo
// for the special methods sleep, event, silent and garbage).
//
//	echo-backend [--amqp-url URL] [--nodes 1,2] [--reply-via exchange-in|reply-to] [--no-correlation-id] [--transient-queues]
//	echo-backend event --token T --event NAME [--payload JSON]
//
// The AMQP URL comes from --amqp-url, else $AMQP_URL, else $PIPED_AMQP_URL
// (the node's own variable), else amqp://guest:guest@localhost:5672/.
//
// Spans are exported when OTEL_EXPORTER_OTLP_ENDPOINT (and the other standard
// OTEL_* variables) say where; see package echo and docs/tracing.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/piped-dev/piped/examples/echo-backend/echo"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "event" {
		os.Exit(event(os.Args[2:]))
	}
	os.Exit(serve(os.Args[1:]))
}

// urlHelp describes --amqp-url's default without showing it: the URL
// (from the environment) may hold a password, and --help prints defaults.
const urlHelp = "AMQP URL (default: $AMQP_URL, else $PIPED_AMQP_URL, else " + echo.DefaultURL + ")"

// amqpURL is --amqp-url's value, or defaultURL() when it was not given.
func amqpURL(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return defaultURL()
}

func defaultURL() string {
	for _, env := range []string{"AMQP_URL", "PIPED_AMQP_URL"} {
		if v := os.Getenv(env); v != "" {
			return v
		}
	}
	return echo.DefaultURL
}

// serve runs the backend until SIGINT or SIGTERM.
func serve(args []string) int {
	fs := flag.NewFlagSet("echo-backend", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: echo-backend [flags]\n       echo-backend event --token T --event NAME [--payload JSON]\n\nflags:\n")
		fs.PrintDefaults()
	}
	url := fs.String("amqp-url", "", urlHelp)
	nodes := fs.String("nodes", "1", "comma-separated ids of the nodes to serve")
	replyVia := fs.String("reply-via", echo.ReplyViaExchangeIn, `where answers go: "exchange-in" (exchange-in-ID) or "reply-to" (default exchange, routing key reply_to)`)
	noCorrelation := fs.Bool("no-correlation-id", false, "do not copy correlation_id onto answers (like a backend written for the original protocol)")
	transient := fs.Bool("transient-queues", false, "declare queue-out-ID non-durable, as nodes with amqp.urls (a RabbitMQ cluster) do")
	queueOut := fs.String("queue-out-prefix", echo.DefaultQueueOutPrefix, "prefix of the queues to consume")
	exchangeIn := fs.String("exchange-in-prefix", echo.DefaultExchangeInPrefix, "prefix of the exchanges answers go to")
	mass := fs.String("mass-exchange", echo.DefaultMassExchange, "exchange for events")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "echo-backend: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "echo-backend: --log-level: %v\n", err)
		return 2
	}
	var ids []string
	for _, id := range strings.Split(*nodes, ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := echo.Run(ctx, echo.Config{
		URL:               amqpURL(*url),
		Nodes:             ids,
		QueueOutPrefix:    *queueOut,
		ExchangeInPrefix:  *exchangeIn,
		MassExchange:      *mass,
		ReplyVia:          *replyVia,
		CopyCorrelationID: !*noCorrelation,
		TransientQueues:   *transient,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo-backend: %v\n", err)
		return 1
	}
	return 0
}

// event publishes one event to the mass exchange and exits.
func event(args []string) int {
	fs := flag.NewFlagSet("echo-backend event", flag.ContinueOnError)
	url := fs.String("amqp-url", "", urlHelp)
	mass := fs.String("mass-exchange", echo.DefaultMassExchange, "exchange for events")
	token := fs.String("token", "", "token whose connections get the event (required)")
	name := fs.String("event", "", "event name (required)")
	payload := fs.String("payload", "", `event payload, a JSON value such as '{"a":1}' (optional)`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *token == "" || *name == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: echo-backend event --token T --event NAME [--payload JSON]")
		return 2
	}
	var raw json.RawMessage
	if *payload != "" {
		if !json.Valid([]byte(*payload)) {
			fmt.Fprintf(os.Stderr, "echo-backend event: --payload is not valid JSON: %s\n", *payload)
			return 2
		}
		raw = json.RawMessage(*payload)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echo.PublishEvent(ctx, amqpURL(*url), *mass, *token, *name, raw); err != nil {
		fmt.Fprintf(os.Stderr, "echo-backend event: %v\n", err)
		return 1
	}
	fmt.Printf("published event %q for token %q to %s\n", *name, *token, *mass)
	return 0
}
