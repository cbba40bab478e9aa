//go:build federation

// Package federation tests Piped across two regions: two independent
// single-node RabbitMQ brokers of the package's own ("regions" A and B,
// started with internal/rabbitnode and the rabbitmq_federation plugin) whose
// exchange-mass is federated both ways with max-hops 1, and Piped nodes
// (real processes) in each region. It never touches the shared broker on
// 127.0.0.1:5672: the harness's broker is region A. Build tag "federation";
// the Makefile runs it with -p 1 (make federation).
package federation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/internal/rabbitnode"
	"github.com/piped-dev/piped/test/harness"
)

// massExchange is the mass exchange of every Piped node here: the real
// name, which the federation policy matches. Piped declares it (a durable
// fanout without arguments); TestMain declares it the same way first, so
// that the federation links start before any node does.
const massExchange = "exchange-mass"

// region is one broker and what is federated into it.
type region struct {
	name     string // "a" or "b"
	node     *rabbitnode.Node
	upstream string // the federation-upstream parameter naming the other region
	// in is the network from the other region to this one: the other
	// region's upstream URI names it rather than this broker.
	in *proxy
}

// regions A and B, set by TestMain.
var regionA, regionB *region

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, b, err := startRegions(ctx)
	if a != nil {
		defer a.node.Remove()
	}
	if b != nil {
		defer b.node.Remove()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "federation: could not start the two RabbitMQ nodes (regions A and B) with rabbitmq_federation:\n%v\n", err)
		return 1
	}
	regionA, regionB = a, b
	for _, r := range []*region{a, b} {
		if r.in, err = newProxy(fmt.Sprintf("127.0.0.1:%d", r.node.Port)); err != nil {
			fmt.Fprintln(os.Stderr, "federation: a proxy between the regions:", err)
			return 1
		}
		defer r.in.Close()
	}
	if err := federate(ctx, a, b); err != nil {
		fmt.Fprintf(os.Stderr, "federation: could not federate %s both ways:\n%v\n", massExchange, err)
		return 1
	}
	// The harness cleans up each node's queues and exchanges on the broker
	// it knows: region A, never the shared broker.
	if err := os.Setenv("PIPED_TEST_AMQP_URL", a.node.URL()); err != nil {
		fmt.Fprintln(os.Stderr, "federation:", err)
		return 1
	}
	return harness.Main(m)
}

// startAttempts is how often a broker's start is tried: the free ports
// rabbitnode picks can be taken by another process before the broker
// listens on them (eaddrinuse), which a new attempt on new ports avoids.
const startAttempts = 3

// startRegions starts the two brokers at once (each takes 10-20 s to boot).
func startRegions(ctx context.Context) (a, b *region, err error) {
	var wg sync.WaitGroup
	var errA, errB error
	start := func(name string, r **region, errp *error) {
		defer wg.Done()
		var errs []error
		for range startAttempts {
			n, err := rabbitnode.Start(ctx, rabbitnode.Options{
				Name:    fmt.Sprintf("piped-fed-%s-%d", name, os.Getpid()),
				Plugins: []string{"rabbitmq_federation"},
			})
			if err == nil {
				*r = &region{name: name, node: n}
				return
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		*errp = fmt.Errorf("region %s: %w", name, errors.Join(errs...))
	}
	wg.Add(2)
	go start("a", &a, &errA)
	go start("b", &b, &errB)
	wg.Wait()
	if errA != nil {
		return a, b, errA
	}
	return a, b, errB
}

// federate makes each region's exchange-mass a downstream of the other's:
// a federation-upstream parameter with max-hops 1 (a message federated once
// is not federated back) and reconnect-delay 1 s, through the other
// region's proxy, and a policy applying it to exchange-mass only.
// It declares exchange-mass in both regions as Piped does and waits until
// both links run.
func federate(ctx context.Context, a, b *region) error {
	for _, p := range [][2]*region{{a, b}, {b, a}} {
		down, up := p[0], p[1]
		down.upstream = "region-" + up.name
		// Through the proxy, which the tests cut. No "/" after the port:
		// in the Erlang client's URIs "host/" is the empty vhost, "host"
		// the default one.
		uri := "amqp://guest:guest@" + up.in.Addr()
		def := fmt.Sprintf(`{"uri":%q,"max-hops":1,"reconnect-delay":1}`, uri)
		if out, err := down.node.Ctl(ctx, "set_parameter", "federation-upstream", down.upstream, def); err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
		if out, err := down.node.Ctl(ctx, "set_policy", "--apply-to", "exchanges", "federate-mass",
			"^"+massExchange+"$", fmt.Sprintf(`{"federation-upstream":%q}`, down.upstream)); err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
		if err := declareMass(down.node.URL()); err != nil {
			return fmt.Errorf("region %s: %w", down.name, err)
		}
	}
	for _, r := range []*region{a, b} {
		if err := waitLinkRunning(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// declareMass declares exchange-mass exactly as a Piped node does.
func declareMass(url string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return ch.ExchangeDeclare(massExchange, amqp.ExchangeFanout, true, false, false, false, nil)
}

// linkStatus returns the status of r's federation links: one Erlang
// proplist per link, with {upstream,…} and {status,running|starting|error…}.
// It evaluates rabbit_federation_status:status() rather than running
// rabbitmqctl federation_status, which the CLI only knows when it reads an
// enabled_plugins file listing the plugin (the machine's does not).
func linkStatus(ctx context.Context, r *region) (string, error) {
	return r.node.Ctl(ctx, "eval", "rabbit_federation_status:status().")
}

// waitLinkRunning waits until r's federation link from its upstream is running.
func waitLinkRunning(ctx context.Context, r *region) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		out, err := linkStatus(ctx, r)
		if err == nil && strings.Contains(out, `<<"`+r.upstream+`">>`) && strings.Contains(out, "{status,running}") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("region %s: the federation link from %s is not running after 60 s (rabbitmqctl federation_status: %v):\n%s\nits log:\n%s",
				r.name, r.upstream, err, out, r.node.LogTail())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
