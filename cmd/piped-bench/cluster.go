package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/piped-dev/piped/internal/rabbitnode"
)

// clusterSize is how many RabbitMQ nodes cluster-rpc runs on.
const clusterSize = 3

// cluster is RabbitMQ nodes of the harness's own joined into one cluster
// (node 1 first, the others joined to it). remove takes them all down and
// deletes their data.
type cluster struct {
	nodes []*rabbitnode.Node
}

// startCluster starts size nodes at once (named piped-bench-cN-PID) and
// joins nodes 2… to node 1.
func startCluster(ctx context.Context, size int) (*cluster, error) {
	c := &cluster{nodes: make([]*rabbitnode.Node, size)}
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range size {
		wg.Go(func() {
			c.nodes[i], errs[i] = rabbitnode.Start(ctx, rabbitnode.Options{Name: fmt.Sprintf("piped-bench-c%d-%d", i+1, os.Getpid())})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.remove()
		return nil, err
	}
	for _, n := range c.nodes[1:] {
		if err := n.JoinCluster(ctx, c.nodes[0]); err != nil {
			c.remove()
			return nil, err
		}
	}
	out, err := c.nodes[0].Ctl(ctx, "eval", "length(rabbit_mnesia:cluster_nodes(running)).")
	if err != nil {
		c.remove()
		return nil, fmt.Errorf("%w\n%s", err, out)
	}
	if got := strings.TrimSpace(out); got != strconv.Itoa(size) {
		c.remove()
		return nil, fmt.Errorf("%s: %s nodes running in the cluster, want %d", c.nodes[0].Name, got, size)
	}
	return c, nil
}

// remove stops every node that started and deletes its directory.
func (c *cluster) remove() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n != nil {
			wg.Go(n.Remove)
		}
	}
	wg.Wait()
}

// meter returns the OS processes of the nodes as roles broker1, broker2, …
// (rabbitmqctl eval 'os:getpid().'; the beam.smp listening on the node's
// port when that fails).
func (c *cluster) meter(ctx context.Context) cpuMeter {
	m := cpuMeter{}
	for i, n := range c.nodes {
		role := "broker" + strconv.Itoa(i+1)
		out, err := n.Ctl(ctx, "eval", "os:getpid().")
		pid, perr := erlangPid(out)
		if err != nil || perr != nil {
			logf("%s: no OS pid from rabbitmqctl eval (%v %v): looking for the beam.smp on port %d", n.Name, err, perr, n.Port)
			pid = brokerPID(n.Port)
		}
		m[role] = pid
	}
	return m
}

// erlangPid parses what rabbitmqctl eval prints for os:getpid(): an Erlang
// string holding the OS process id, "12345".
func erlangPid(out string) (int, error) {
	s := strings.TrimSpace(out)
	if len(s) < 3 || s[0] != '"' || s[len(s)-1] != '"' {
		return 0, fmt.Errorf("os:getpid(): %q is not a quoted number", s)
	}
	pid, err := strconv.Atoi(s[1 : len(s)-1])
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("os:getpid(): %q is not a process id", s)
	}
	return pid, nil
}

// queueHomes returns the lines of rabbitmqctl list_queues name pid that
// name a queue of ids: which broker node each queue lives on.
func (c *cluster) queueHomes(ctx context.Context, ids []string) string {
	out, err := c.nodes[0].Ctl(ctx, "list_queues", "-q", "name", "pid")
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, line := range strings.Split(out, "\n") {
		for _, id := range ids {
			if strings.Contains(line, id) {
				lines = append(lines, strings.Join(strings.Fields(line), " "))
				break
			}
		}
	}
	return strings.Join(lines, "; ")
}

// runCluster starts a cluster of clusterSize nodes and runs rpc and
// raw-reliable across it, the node (and the raw publisher and consumer) on
// broker node 1 and the echo backend on broker node 2; with churn also
// selected, churn on node 1 at the first standing level. The cluster is
// removed at the end.
func runCluster(ctx context.Context, o *options, rep *report, id func(string) string, self int) error {
	logf("cluster-rpc: starting a %d-node RabbitMQ cluster of our own", clusterSize)
	t0 := time.Now()
	c, err := startCluster(ctx, clusterSize)
	if err != nil {
		return fmt.Errorf("cluster-rpc: %w", err)
	}
	defer func() {
		t := time.Now()
		c.remove()
		logf("cluster-rpc: cluster removed in %.0f s", time.Since(t).Seconds())
	}()
	m := c.meter(ctx)
	logf("cluster-rpc: %d nodes running after %.0f s; broker processes %v", clusterSize, time.Since(t0).Seconds(), m)
	// The topology is deleted with the cluster.
	var ids, masses []string
	site := callSite{prefix: "cluster-", paths: []string{"rpc", "raw-reliable"},
		nodeURL: c.nodes[0].URL(), backendURL: c.nodes[1].URL(), brokers: m}
	res, err := runCalls(ctx, o, site, id, self, &ids, &masses)
	rep.Calls = append(rep.Calls, res...)
	if err != nil {
		return err
	}
	logf("cluster-rpc: queues (name, process on its node): %s", c.queueHomes(ctx, ids))
	if o.only["churn"] {
		cm := cpuMeter{"harness": self}
		maps.Copy(cm, m)
		res, err := runChurnLevels(c.nodes[0].URL(), "cluster", o, id("cluster-churn"), o.churnStanding[:1], cm)
		rep.Churn = append(rep.Churn, res...)
		if err != nil {
			return err
		}
	}
	return nil
}
