package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/piped-dev/piped/internal/rabbitnode"
)

// ownBroker is a RabbitMQ node of the harness's own (as test/faults starts
// one): the broker's CPU per call then counts the benchmark's traffic only,
// not that of other clients of the machine's broker.
type ownBroker struct {
	name string
	port int
	dir  string
}

// startOwnBroker starts rabbitmq-server -detached as node name on a free
// port, in a fresh directory owned by the rabbitmq user (the server drops
// to it), and waits until it has started.
func startOwnBroker(name string) (*ownBroker, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("starting a RabbitMQ node needs root here")
	}
	if _, err := exec.LookPath("rabbitmq-server"); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dist, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "piped-bench-rabbitmq-")
	if err != nil {
		return nil, err
	}
	b := &ownBroker{name: name + "@localhost", port: port, dir: dir}
	// Not the machine's /etc/rabbitmq/rabbitmq.conf, which listens on 5672.
	if err := rabbitnode.PrepareDir(dir, fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\n", port)); err != nil {
		b.remove()
		return nil, err
	}
	cmd := exec.Command("rabbitmq-server", "-detached")
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+b.name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "rabbitmq.pid"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.remove()
		return nil, fmt.Errorf("rabbitmq-server -detached: %v\n%s", err, out)
	}
	// await_startup fails at once (exit 69) while the Erlang node is not
	// reachable yet: ask again until it waits and succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		out, err := exec.CommandContext(ctx, "rabbitmqctl", "-n", b.name, "await_startup").CombinedOutput()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			b.stop()
			return nil, fmt.Errorf("rabbitmqctl -n %s await_startup: %v\n%s", b.name, err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return b, nil
		}
		if time.Now().After(deadline) {
			b.stop()
			return nil, fmt.Errorf("%s: port %d does not answer", b.name, port)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *ownBroker) url() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", b.port) }

// stop stops the node and removes its files.
func (b *ownBroker) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "rabbitmqctl", "-n", b.name, "stop").CombinedOutput(); err != nil {
		logf("rabbitmqctl -n %s stop: %v\n%s", b.name, err, out)
	}
	b.remove()
}

func (b *ownBroker) remove() { _ = os.RemoveAll(b.dir) }
