package rabbitnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Options describe a RabbitMQ node of a test's or a benchmark's own.
type Options struct {
	// Name is the node's short name; the node is Name@localhost. It must be
	// unique on the machine (add the process id).
	Name string
	// Plugins are enabled at start, e.g. "rabbitmq_federation".
	Plugins []string
	// Conf is appended to rabbitmq.conf after the node's own listener.
	Conf string
	// BusyWait keeps the Erlang schedulers' busy-waiting (RabbitMQ's
	// default), for measuring the broker's CPU as a production node spends
	// it; without it an idle node costs nothing, which suits tests that run
	// several nodes beside each other.
	BusyWait bool
	// Port and DistPort are the AMQP and distribution ports; 0: a free one.
	Port, DistPort int
}

// Node is a RabbitMQ node started with rabbitmq-server -detached on free
// ports, in a fresh directory; Stop and Start take it down and up again with
// its data, Remove stops it and deletes its directory. It needs root.
type Node struct {
	Name     string // Name@localhost, for rabbitmqctl -n
	Port     int    // the AMQP port on 127.0.0.1
	DistPort int
	Dir      string
	busyWait bool
}

// Start starts a new node and waits until it has booted.
func Start(ctx context.Context, o Options) (*Node, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("starting a RabbitMQ node needs root here (rabbitmq-server drops to the rabbitmq user)")
	}
	for _, cmd := range []string{"rabbitmq-server", "rabbitmqctl"} {
		if _, err := exec.LookPath(cmd); err != nil {
			return nil, fmt.Errorf("%s is not installed (scripts/ensure-rabbitmq.sh installs it): %w", cmd, err)
		}
	}
	port, dist := o.Port, o.DistPort
	var err error
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if dist == 0 {
		if dist, err = FreePort(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "piped-rabbitmq-"+o.Name+"-")
	if err != nil {
		return nil, err
	}
	n := &Node{Name: o.Name + "@localhost", Port: port, DistPort: dist, Dir: dir, busyWait: o.BusyWait}
	// Not the machine's /etc/rabbitmq/rabbitmq.conf, which listens on 5672.
	conf := fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\n%s", port, o.Conf)
	if err := PrepareDir(dir, conf); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if len(o.Plugins) > 0 {
		plugins := fmt.Sprintf("[%s].\n", strings.Join(o.Plugins, ","))
		if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte(plugins), 0o644); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := n.Start(ctx); err != nil {
		n.Remove()
		return nil, err
	}
	return n, nil
}

// URL is the node's AMQP URL (guest/guest, the default vhost).
func (n *Node) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.Port) }

// Start starts the node (again) with its data directory and waits until
// its AMQP port answers.
func (n *Node) Start(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "rabbitmq-server", "-detached")
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+n.Name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.Port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.DistPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.Dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.Dir, "rabbitmq.pid"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.Dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.Dir, "enabled_plugins"),
	)
	if !n.busyWait {
		// Several nodes share 2 cores with the tests: an idle node should cost nothing.
		cmd.Env = append(cmd.Env, "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=+sbwt none +sbwtdcpu none +sbwtdio none")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("rabbitmq-server -detached (%s): %w\n%s", n.Name, err, out)
	}
	// await_startup fails at once while the Erlang node is not reachable
	// yet: ask again until it waits and succeeds.
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	for {
		out, err := n.Ctl(ctx, "await_startup")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s did not start: %w\n%s\nits log:\n%s", n.Name, err, out, n.LogTail())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !WaitPort(ctx, n.Port, true) {
		return fmt.Errorf("%s: port %d does not answer\nits log:\n%s", n.Name, n.Port, n.LogTail())
	}
	return nil
}

// Ctl runs rabbitmqctl -n Name args... and returns its combined output.
func (n *Node) Ctl(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl -n %s %s: %w", n.Name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// JoinCluster makes n a member of other's cluster (stop_app, reset,
// join_cluster, start_app); n's data is discarded.
func (n *Node) JoinCluster(ctx context.Context, other *Node) error {
	for _, args := range [][]string{{"stop_app"}, {"reset"}, {"join_cluster", other.Name}, {"start_app"}, {"await_startup"}} {
		if out, err := n.Ctl(ctx, args...); err != nil {
			return fmt.Errorf("%w\n%s", err, out)
		}
	}
	return nil
}

// Stop stops the node, keeping its data directory, and waits until its
// port is closed.
func (n *Node) Stop(ctx context.Context) error {
	out, err := n.Ctl(ctx, "stop")
	if err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	if !WaitPort(ctx, n.Port, false) {
		return fmt.Errorf("%s: port %d still answers after stop", n.Name, n.Port)
	}
	return nil
}

// Remove stops the node (its Erlang VM too when only the application was
// stopped; an error when nothing runs is ignored) and deletes its directory.
func (n *Node) Remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil && PortOpen(n.Port) {
		fmt.Fprintf(os.Stderr, "rabbitnode: %v\n", err)
	}
	_ = os.RemoveAll(n.Dir)
}

// LogTail returns the end of the node's logs, for failure messages.
func (n *Node) LogTail() string {
	var out strings.Builder
	matches, _ := filepath.Glob(filepath.Join(n.Dir, "log", "*.log"))
	for _, m := range matches {
		data, _ := os.ReadFile(m)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		fmt.Fprintf(&out, "== %s\n%s\n", m, strings.Join(lines, "\n"))
	}
	if out.Len() == 0 {
		return "(no log written)"
	}
	return out.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// PortOpen reports whether 127.0.0.1:port accepts a connection.
func PortOpen(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// WaitPort waits until the port answers (open) or not (!open), or ctx ends.
func WaitPort(ctx context.Context, port int, open bool) bool {
	for {
		if PortOpen(port) == open {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
