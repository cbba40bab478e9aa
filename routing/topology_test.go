package routing

import (
	"errors"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/test/harness"
)

// A queue or exchange that exists with other settings is reported as a
// topology conflict that names the object and the command deleting that
// kind of object — rabbitmqctl for a queue, rabbitmqadmin for an exchange,
// which rabbitmqctl cannot delete — and not the other kind's command.
func TestTopologyConflictNamesTheDeleteCommand(t *testing.T) {
	tests := []struct {
		name       string
		object     func(topo Topology) string
		predeclare func(ch *amqp.Channel, name string) error
		want, not  string
	}{
		{
			name:   "queue",
			object: func(topo Topology) string { return topo.QueueOut },
			predeclare: func(ch *amqp.Channel, name string) error {
				_, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-max-length": int32(5)})
				return err
			},
			want: "rabbitmqctl delete_queue queue-out-", not: "rabbitmqadmin",
		},
		{
			name:   "exchange",
			object: func(topo Topology) string { return topo.ExchangeOut },
			predeclare: func(ch *amqp.Channel, name string) error {
				return ch.ExchangeDeclare(name, amqp.ExchangeDirect, true, false, false, false, nil)
			},
			want: "rabbitmqadmin delete exchange name=exchange-out-", not: "delete_queue",
		},
		{
			name:   "events exchange that is a fanout",
			object: func(topo Topology) string { return topo.Events },
			predeclare: func(ch *amqp.Channel, name string) error {
				return ch.ExchangeDeclare(name, amqp.ExchangeFanout, true, false, false, false, nil)
			},
			want: "rabbitmqadmin delete exchange name=events-", not: "delete_queue",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := harness.UniqueID("topo")
			cfg := config.Defaults().AMQP
			cfg.URL = harness.AMQPURL()
			cfg.MassExchange = "mass-" + id
			cfg.EventsExchange = "events-" + id
			topo := NewTopology(cfg, id)
			t.Cleanup(func() { deleteTopology(t, topo) })
			ch := harness.Channel(t)
			if err := tc.predeclare(ch, tc.object(topo)); err != nil {
				t.Fatal(err)
			}
			err := topo.Declare(harness.Channel(t))
			if !errors.Is(err, ErrTopologyConflict) {
				t.Fatalf("Declare = %v, want ErrTopologyConflict", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, `"`+tc.object(topo)+`"`) || !strings.Contains(msg, tc.want+id) || strings.Contains(msg, tc.not) {
				t.Fatalf("conflict message %q: want the %s named and %q, not %q", msg, tc.name, tc.want+id, tc.not)
			}
		})
	}
}

// Outside the default vhost the command names it; odd names are quoted.
func TestDeleteCommand(t *testing.T) {
	tests := []struct {
		vhost, kind, name, want string
	}{
		{"/", "queue", "queue-in-a", "rabbitmqctl delete_queue queue-in-a"},
		{"/", "exchange", "exchange-in-a", "rabbitmqadmin delete exchange name=exchange-in-a"},
		{"staging", "queue", "queue-in-a", "rabbitmqctl -p staging delete_queue queue-in-a"},
		{"staging", "exchange", "mass", "rabbitmqadmin -V staging delete exchange name=mass"},
		{"/", "queue", "it's odd", `rabbitmqctl delete_queue 'it'\''s odd'`},
	}
	for _, tc := range tests {
		if got := (Topology{Vhost: tc.vhost}).deleteCommand(tc.kind, tc.name); got != tc.want {
			t.Errorf("deleteCommand(%s %s in %s) = %q, want %q", tc.kind, tc.name, tc.vhost, got, tc.want)
		}
	}
	if got := vhostOf("amqp://u:p@h:5672/staging"); got != "staging" {
		t.Errorf("vhostOf = %q, want staging", got)
	}
}
