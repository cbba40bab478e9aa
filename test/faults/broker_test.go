//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/piped-dev/piped/internal/rabbitnode"
)

// The separate RabbitMQ node of this package. Its host part is localhost,
// like the machine's default node (rabbit@localhost, see
// /etc/rabbitmq/rabbitmq-env.conf); every rabbitmqctl call names it with -n.
const (
	brokerNode     = "piped-faults@localhost"
	brokerPort     = 5682
	brokerDistPort = 25682
	// testURLVar tells the harness which broker to use.
	testURLVar = "PIPED_TEST_AMQP_URL"
)

// brokerURL is the AMQP URL of the separate node, set by TestMain.
var brokerURL string

// lockPath serialises fault-test runs on one machine (two checkouts, or
// two developers): they share the node name and port.
var lockPath = filepath.Join(os.TempDir(), "piped-faults-rabbitmq.lock")

type broker struct {
	node *rabbitnode.Node
	lock *os.File
}

// startBroker starts the separate node in a fresh directory and waits until
// it runs. It first takes a machine-wide lock, waiting for another run of
// the fault tests to end; holding it, a node of the same name that still
// runs was left by an interrupted run, and is stopped.
func startBroker() (*broker, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the fault tests start their own RabbitMQ node with rabbitmq-server, which needs root here; run them as root")
	}
	lock, err := takeLock(10 * time.Minute)
	if err != nil {
		return nil, err
	}
	b, err := startLocked()
	if err != nil {
		lock.Close()
		return nil, err
	}
	b.lock = lock
	return b, nil
}

// takeLock takes the exclusive lock on lockPath, waiting up to within.
func takeLock(within time.Duration) (*os.File, error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(within)
	for said := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another run of the fault tests held %s for more than %v", lockPath, within)
		}
		if !said {
			fmt.Fprintf(os.Stderr, "faults: another run of the fault tests holds %s; waiting for it\n", lockPath)
			said = true
		}
		time.Sleep(time.Second)
	}
}

func startLocked() (*broker, error) {
	if rabbitnode.PortOpen(brokerPort) {
		fmt.Fprintf(os.Stderr, "faults: port %d answers already; stopping a leftover %s\n", brokerPort, brokerNode)
		_, _ = ctl(context.Background(), "stop")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if !rabbitnode.WaitPort(ctx, brokerPort, false) {
			return nil, fmt.Errorf("port %d is taken by something that is not %s", brokerPort, brokerNode)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	// A small receive buffer (no autotuning to tens of MiB) so that a
	// stopped broker's sockets fill within seconds, as a real broker's do
	// under load (TestBrokerStopsReading).
	n, err := rabbitnode.Start(ctx, rabbitnode.Options{
		Name: strings.TrimSuffix(brokerNode, "@localhost"), Port: brokerPort, DistPort: brokerDistPort,
		Conf: "tcp_listen_options.recbuf = 65536\n",
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "faults: RabbitMQ node %s runs on 127.0.0.1:%d (started in %v, files in %s)\n",
		brokerNode, brokerPort, time.Since(start).Round(time.Second), n.Dir)
	return &broker{node: n}, nil
}

// stop stops the node, removes its files and releases the lock.
func (b *broker) stop() {
	b.node.Remove()
	if b.lock != nil {
		b.lock.Close() // releases the flock
	}
}

// ctl runs rabbitmqctl -n brokerNode args... and returns its output.
func ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-n", brokerNode}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// brokerPID returns the OS process id of the node (its Erlang VM).
func brokerPID(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := ctl(ctx, "eval", "os:getpid().")
	if err != nil {
		t.Fatalf("rabbitmqctl -n %s eval os:getpid(): %v\n%s", brokerNode, err, out)
	}
	pid, err := strconv.Atoi(strings.Trim(strings.TrimSpace(out), `"`))
	if err != nil {
		t.Fatalf("the node's pid: %q: %v", out, err)
	}
	return pid
}

// mustCtl runs rabbitmqctl on the test's node, failing the test on error.
func mustCtl(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := ctl(ctx, args...)
	if err != nil {
		t.Fatalf("rabbitmqctl -n %s %s: %v\n%s", brokerNode, strings.Join(args, " "), err, out)
	}
	t.Logf("rabbitmqctl %s (%v)", strings.Join(args, " "), time.Since(start).Round(10*time.Millisecond))
}
