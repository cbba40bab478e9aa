package routing

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
	"github.com/piped-dev/piped/test/harness"
)

// amqpConfig returns the AMQP configuration of a test node id on the test
// broker: with amqp.urls (a cluster of one) when cluster, else amqp.url.
func amqpConfig(id string, cluster bool) config.AMQP {
	cfg := config.Defaults().AMQP
	cfg.MassExchange = "mass-" + id
	if cluster {
		cfg.URL = "amqp://unused.invalid/"
		cfg.URLs = []string{harness.AMQPURL()}
	} else {
		cfg.URL = harness.AMQPURL()
	}
	return cfg
}

// redeclareErr declares queue name again with durable and returns the error.
func redeclareErr(t *testing.T, name string, durable bool, args amqp.Table) error {
	t.Helper()
	_, err := harness.Channel(t).QueueDeclare(name, durable, false, false, false, args)
	return err
}

// With amqp.urls the node's queues are non-durable (they go with a lost
// broker node and can be declared on the next); with amqp.url they are
// durable, as the seed declared them. A queue of the other kind, left by a
// node that ran in the other mode, is a topology conflict that says which
// kind the node wants.
func TestQueueDurabilityFollowsTheMode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster bool
		want    string // in the conflict message
	}{
		{"amqp.urls: non-durable", true, "it must be non-durable (amqp.urls is set)"},
		{"amqp.url: durable", false, "it must be durable with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := harness.UniqueID("dur")
			topo := NewTopology(amqpConfig(id, tc.cluster), id)
			t.Cleanup(func() { deleteTopology(t, topo) })
			if topo.Transient != tc.cluster {
				t.Fatalf("Transient = %v, want %v", topo.Transient, tc.cluster)
			}
			if err := topo.Declare(harness.Channel(t)); err != nil {
				t.Fatalf("Declare: %v", err)
			}
			durable := !tc.cluster
			for _, q := range []struct {
				name string
				args amqp.Table
			}{{topo.QueueIn, topo.inQueueArgs()}, {topo.QueueOut, nil}} {
				if err := redeclareErr(t, q.name, durable, q.args); err != nil {
					t.Errorf("%s is not durable=%v: %v", q.name, durable, err)
				}
				var ae *amqp.Error
				if err := redeclareErr(t, q.name, !durable, q.args); !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
					t.Errorf("declaring %s durable=%v: %v, want 406", q.name, !durable, err)
				}
			}

			// The other mode's queue in place of the in-queue.
			other := harness.UniqueID("dur")
			otherTopo := NewTopology(amqpConfig(other, tc.cluster), other)
			t.Cleanup(func() { deleteTopology(t, otherTopo) })
			if err := redeclareErr(t, otherTopo.QueueIn, !durable, otherTopo.inQueueArgs()); err != nil {
				t.Fatal(err)
			}
			err := otherTopo.Declare(harness.Channel(t))
			if !errors.Is(err, ErrTopologyConflict) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Declare over the other kind of in-queue: %v, want ErrTopologyConflict saying %q", err, tc.want)
			}
		})
	}
}

// When the in-queue is gone at a reconnect (its broker node was lost, or it
// expired), the results it held are gone too: with amqp.urls the calls
// waiting for one are answered "unavailable" at once, each exactly once.
// With amqp.url the seed's behaviour stays: they wait for their result or
// timeout.
func TestCallsOfALostInQueueAreAnswered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster bool
		answers int
	}{
		{"amqp.urls: answered unavailable", true, 1},
		{"amqp.url: still waiting", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := harness.UniqueID("lost")
			metrics := telemetry.NewMetrics()
			r := New(Options{NodeID: id, AMQP: amqpConfig(id, tc.cluster), Timeout: time.Hour, Hub: &fakeHub{},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
				r.FailPending("test", "end of the test")
				deleteTopology(t, r.Topology())
			})
			waitFor(t, "the router to be ready", func() bool { return r.Ready() == nil })

			from := &sink{}
			addCall(r, from, "tok", "1", "m")
			if _, err := harness.Channel(t).QueueDelete(r.Topology().QueueIn, false, false, false); err != nil {
				t.Fatal(err)
			}
			// The broker cancels the consumer; the router reconnects and
			// declares the queue again.
			waitFor(t, "a second session", func() bool {
				return testutil.ToFloat64(metrics.BrokerReconnects) >= 2 && r.Ready() == nil
			})
			from.mu.Lock()
			got := append([]string(nil), from.got...)
			from.mu.Unlock()
			if len(got) != tc.answers {
				t.Fatalf("answers %q, want %d", got, tc.answers)
			}
			if tc.answers > 0 && !strings.Contains(got[0], `"code":"unavailable"`) {
				t.Errorf("answer %s, want an unavailable error", got[0])
			}
			if want := 1 - tc.answers; r.Pending() != want {
				t.Errorf("Pending() = %d, want %d", r.Pending(), want)
			}
		})
	}
}
