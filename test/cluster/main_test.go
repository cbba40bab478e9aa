//go:build cluster

// Package cluster tests Piped nodes on a three-node RabbitMQ cluster of the
// package's own (internal/rabbitnode, joined with rabbitmqctl join_cluster):
// nodes spread over the broker nodes (amqp.urls), events of exchange-mass
// reach every node, calls are answered by the example echo backend, and a
// broker node that stops under traffic is failed over from, without a call
// lost or answered twice. It never touches the shared broker on 5672. Build
// tag "cluster"; the Makefile runs it after the fault tests with -p 1.
package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"testing"

	"github.com/piped-dev/piped/internal/rabbitnode"
	"github.com/piped-dev/piped/test/harness"
)

// The cluster of this package, started by TestMain: brokers[0] is the node
// the others joined, and the one the harness and the echo backend use; the
// tests never stop it.
var (
	brokers     []*rabbitnode.Node
	echoBackend string // the echo-backend binary, built with make
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	start := time.Now()
	nodes, err := startCluster(3)
	defer func() {
		for _, n := range nodes {
			n.Remove()
		}
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: could not start a three-node RabbitMQ cluster of the package's own (needs root and rabbitmq-server; scripts/ensure-rabbitmq.sh installs it):\n%v\n", err)
		return 1
	}
	brokers = nodes
	for i, n := range nodes {
		fmt.Fprintf(os.Stderr, "cluster: broker %d is %s on 127.0.0.1:%d\n", i, n.Name, n.Port)
	}
	fmt.Fprintf(os.Stderr, "cluster: started and joined in %v\n", time.Since(start).Round(100*time.Millisecond))

	dir, err := os.MkdirTemp("", "piped-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("make", "--no-print-directory", "build-echo-backend", "BIN="+dir)
	build.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster: make build-echo-backend failed:", err)
		return 1
	}
	echoBackend = filepath.Join(dir, "echo-backend")

	// The harness checks, uses for its clean-up and passes to the nodes as
	// PIPED_AMQP_URL (which amqp.urls overrides) the broker that never stops.
	if err := os.Setenv("PIPED_TEST_AMQP_URL", nodes[0].URL()); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	return harness.Main(m)
}

// startCluster starts n broker nodes at once and joins the others to the
// first. The nodes started are returned also on error, for Remove.
func startCluster(n int) ([]*rabbitnode.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	nodes := make([]*rabbitnode.Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			nodes[i], errs[i] = rabbitnode.Start(ctx, rabbitnode.Options{Name: fmt.Sprintf("piped-cluster%d-%d", i, os.Getpid())})
		})
	}
	wg.Wait()
	var started []*rabbitnode.Node
	for _, nd := range nodes {
		if nd != nil {
			started = append(started, nd)
		}
	}
	for _, err := range errs {
		if err != nil {
			return started, err
		}
	}
	for _, nd := range nodes[1:] {
		if err := nd.JoinCluster(ctx, nodes[0]); err != nil {
			return started, err
		}
	}
	return started, nil
}

// brokerURLs is amqp.urls for the cluster, comma-separated.
func brokerURLs() string {
	urls := make([]string, len(brokers))
	for i, b := range brokers {
		urls[i] = b.URL()
	}
	return strings.Join(urls, ",")
}
