package harness

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// rabbitmqctl runs rabbitmqctl on the shared broker (the local node that
// listens on 5672) with args, and returns its output, failing the test
// with a clear message when the command is missing or fails. Each call
// takes about half a second.
func rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s (the shared broker's CLI, from Debian's rabbitmq-server): %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// BrokerConnections returns the pids of the shared broker's connections
// whose client-provided name (connection_name) is name, such as
// "piped <id> consume".
func BrokerConnections(t testing.TB, name string) []string {
	t.Helper()
	out := rabbitmqctl(t, "list_connections", "pid", "client_properties", "-q", "--no-table-headers")
	want := `{"connection_name","` + name + `"}`
	var pids []string
	for _, line := range strings.Split(out, "\n") {
		pid, props, ok := strings.Cut(line, "\t")
		if ok && strings.Contains(props, want) {
			pids = append(pids, strings.TrimSpace(pid))
		}
	}
	return pids
}

// CloseBrokerConnections closes, from the broker's side (rabbitmqctl
// close_connection), every connection of the shared broker named one of
// names, and returns how many it closed.
func CloseBrokerConnections(t testing.TB, names ...string) int {
	t.Helper()
	n := 0
	for _, name := range names {
		for _, pid := range BrokerConnections(t, name) {
			rabbitmqctl(t, "close_connection", pid, "closed by a test")
			n++
		}
	}
	return n
}

// Bindings returns the bindings whose source is exchange on the shared
// broker's default vhost, each as "destination routing-key", sorted.
func Bindings(t testing.TB, exchange string) []string {
	t.Helper()
	out := rabbitmqctl(t, "list_bindings", "source_name", "destination_name", "routing_key", "-q", "--no-table-headers")
	var got []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 3 && f[0] == exchange {
			got = append(got, f[1]+" "+f[2])
		}
	}
	slices.Sort(got)
	return got
}

// DurableBindings returns how many of the bindings whose source is
// exchange (in vhost "/") the shared broker keeps in its durable route
// table (rabbitmqctl eval on rabbit_durable_route, RabbitMQ 3.10's Mnesia
// schema): the bindings that survive a broker restart and cost a disk
// transaction to make. exchange must be plain (it is put in an Erlang
// binary literal).
func DurableBindings(t testing.TB, exchange string) int {
	t.Helper()
	if strings.ContainsAny(exchange, `"\`) {
		t.Fatalf("DurableBindings: odd exchange name %q", exchange)
	}
	expr := `length(mnesia:dirty_match_object(rabbit_durable_route, {route, {binding, {resource, <<"/">>, exchange, <<"` +
		exchange + `">>}, '_', '_', '_'}, '_'})).`
	out := strings.TrimSpace(rabbitmqctl(t, "eval", expr))
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("rabbitmqctl eval (durable bindings of %s): %q", exchange, out)
	}
	return n
}

// Exchange returns the shared broker's "durable auto_delete internal type"
// of exchange in vhost "/" (rabbitmqctl list_exchanges), or "" when it does
// not exist.
func Exchange(t testing.TB, exchange string) string {
	t.Helper()
	out := rabbitmqctl(t, "list_exchanges", "name", "durable", "auto_delete", "internal", "type", "-q", "--no-table-headers")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Split(line, "\t"); len(f) == 5 && f[0] == exchange {
			return strings.Join(f[1:], " ")
		}
	}
	return ""
}

// DeleteExchange deletes exchange on the shared broker (for exchanges a
// test declared, in its cleanup); failures are logged.
func DeleteExchange(t testing.TB, exchange string) {
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		t.Logf("cleanup of %s: %v", exchange, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err == nil {
		err = ch.ExchangeDelete(exchange, false, false)
	}
	if err != nil {
		t.Logf("cleanup: delete exchange %s: %v", exchange, err)
	}
}
