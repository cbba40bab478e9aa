// Command loadgen measures a running Piped node: the resident memory each
// idle WebSocket connection costs, and the call rate through the node
// compared side by side with the same round trip made directly on the
// broker (the same echo backend answering both).
//
//	loadgen idle  --url ws://127.0.0.1:8080 --metrics http://127.0.0.1:8080/metrics --conns 10000
//	loadgen calls --url ws://127.0.0.1:8080 --conns 50 --inflight 20 --duration 10s
//	loadgen raw   --amqp-url amqp://guest:guest@127.0.0.1:5672/ --node raw-1 --conns 50 --inflight 20 --duration 10s
//	loadgen connect --url ws://127.0.0.1:8080 --workers 8 --duration 5s --src 0
//	loadgen cleanup --node ID   (deletes the node's queues and exchanges)
//
// idle reads the node's RSS from /proc/PID/status when --pid is given (else
// from its metrics) and its goroutines from the metrics. connect dials and
// closes connections as fast as --workers goroutines can; run several loadgen
// processes side by side, each with its own --src, so that their source
// addresses (and TIME_WAIT ports) do not collide.
//
// Numbers from one machine are comparable only with numbers from the same
// run: compare ratios, not absolute values.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen idle|calls|raw|cleanup [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	url := fs.String("url", "ws://127.0.0.1:8080", "node base URL")
	metrics := fs.String("metrics", "http://127.0.0.1:8080/metrics", "node metrics URL")
	amqpURL := fs.String("amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL (raw)")
	node := fs.String("node", "raw-bench", "node id whose topology raw mode uses (no piped node must run with it)")
	conns := fs.Int("conns", 100, "connections")
	inflight := fs.Int("inflight", 10, "calls in flight per connection")
	duration := fs.Duration("duration", 10*time.Second, "how long to make calls")
	settle := fs.Duration("settle", 5*time.Second, "idle: wait before measuring")
	pid := fs.Int("pid", 0, "idle: the node's process id, to read VmRSS from /proc (0: from the metrics)")
	hold := fs.Duration("hold", 0, "idle: keep the connections open this long after measuring (for profiles)")
	workers := fs.Int("workers", 8, "connect: goroutines dialing")
	src := fs.Int("src", 0, "source address block: loadgen processes running side by side need different ones (0-9)")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "idle":
		err = idle(*url, *metrics, *pid, *conns, *settle, *hold, *src)
	case "connect":
		err = connect(*url, *workers, *duration, *src)
	case "calls":
		err = calls(*url, *conns, *inflight, *duration)
	case "raw":
		err = raw(*amqpURL, *node, *conns, *inflight, *duration)
	case "cleanup":
		err = cleanup(*amqpURL, *node)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// metric reads the value of an unlabelled metric from the node's metrics.
func metric(metricsURL, name string) (float64, error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", name, metricsURL)
}

// rss reads the node's resident memory: VmRSS of pid, or without a pid
// process_resident_memory_bytes from its metrics.
func rss(metricsURL string, pid int) (float64, error) {
	if pid == 0 {
		return metric(metricsURL, "process_resident_memory_bytes")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// portsPerSource is how many connections share one source address: well
// below the 28,000 ephemeral ports of a default ip_local_port_range.
const portsPerSource = 10000

// sourceAddr returns the source address of connection i of address block
// src: 127.<src+1>.x.y, a new address every portsPerSource connections
// (every 127/8 address is loopback on Linux).
func sourceAddr(src, i int) net.IP {
	a := i / portsPerSource
	return net.IPv4(127, byte(src+1), byte(a/250), byte(2+a%250))
}

// dialer spreads client ports over loopback source addresses (sourceAddr).
func dialer(i int) *websocket.Dialer { return dialerFrom(0, i) }

func dialerFrom(src, i int) *websocket.Dialer { return dialerAt(sourceAddr(src, i)) }

// dialerAt dials from ip with IP_BIND_ADDRESS_NO_PORT: the port is chosen
// at connect time, by the 4-tuple. A port bound before connect would be
// kept from every other connect() on the machine while it lingers in
// TIME_WAIT, starving other processes of ephemeral ports.
func dialerAt(ip net.IP) *websocket.Dialer {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return &websocket.Dialer{NetDial: d.Dial, HandshakeTimeout: 30 * time.Second}
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT.
const ipBindAddressNoPort = 24

func idle(base, metricsURL string, pid, n int, settle, hold time.Duration, src int) error {
	before, err := rss(metricsURL, pid)
	if err != nil {
		return err
	}
	gBefore, err := metric(metricsURL, "go_goroutines")
	if err != nil {
		return err
	}
	ws := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range ws {
			c.Close()
		}
	}()
	start := time.Now()
	for i := range n {
		c, _, err := dialerFrom(src, i).Dial(fmt.Sprintf("%s/api/idle-%d", base, i), nil)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		ws = append(ws, c)
		// Answer pings, discard everything: an idle, well-behaved client.
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	fmt.Printf("opened %d connections in %v\n", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(settle)
	after, err := rss(metricsURL, pid)
	if err != nil {
		return err
	}
	gAfter, err := metric(metricsURL, "go_goroutines")
	if err != nil {
		return err
	}
	fmt.Printf("node RSS before %.1f MiB, with %d idle connections %.1f MiB: %.0f bytes (%.2f KiB) per connection; goroutines %.0f -> %.0f (%.3f per connection)\n",
		before/(1<<20), n, after/(1<<20), (after-before)/float64(n), (after-before)/float64(n)/1024,
		gBefore, gAfter, (gAfter-gBefore)/float64(n))
	time.Sleep(hold)
	return nil
}

// connect dials new connections with workers goroutines for d, each closed
// right after its upgrade, and reports connections per second and the
// upgrade latency (TCP connect and handshake).
func connect(base string, workers int, d time.Duration, src int) error {
	var st stats
	var next atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1))
				t0 := time.Now()
				// A source address of its own per connection, cycling over
				// 62,500: the TIME_WAIT ports each leaves spread thin.
				dl := dialerAt(net.IPv4(127, byte(src+1), byte(i/250%250), byte(2+i%250)))
				c, _, err := dl.Dial(fmt.Sprintf("%s/api/connect-%d-%d", base, w, i), nil)
				if err != nil {
					st.errors.Add(1)
					continue
				}
				st.add(time.Since(t0))
				c.Close()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(st.latencies)
	q := func(p float64) time.Duration {
		if len(st.latencies) == 0 {
			return 0
		}
		return st.latencies[int(float64(len(st.latencies)-1)*p)]
	}
	fmt.Printf("connect: %d connections in %v = %.0f connections/s; errors %d; upgrade latency p50 %v p99 %v max %v\n",
		st.done.Load(), elapsed.Round(time.Millisecond), float64(st.done.Load())/elapsed.Seconds(),
		st.errors.Load(), q(0.5), q(0.99), q(1))
	return nil
}

type stats struct {
	mu        sync.Mutex
	latencies []time.Duration
	done      atomic.Int64
	errors    atomic.Int64
}

func (s *stats) add(d time.Duration) {
	s.mu.Lock()
	s.latencies = append(s.latencies, d)
	s.mu.Unlock()
	s.done.Add(1)
}

func (s *stats) report(mode string, elapsed time.Duration) {
	slices.Sort(s.latencies)
	q := func(p float64) time.Duration {
		if len(s.latencies) == 0 {
			return 0
		}
		return s.latencies[int(float64(len(s.latencies)-1)*p)]
	}
	fmt.Printf("%s: %d calls in %v = %.0f calls/s; errors %d; latency p50 %v p99 %v max %v\n",
		mode, s.done.Load(), elapsed.Round(time.Millisecond), float64(s.done.Load())/elapsed.Seconds(),
		s.errors.Load(), q(0.5), q(0.99), q(1))
}

// calls keeps inflight calls per connection going through the node.
func calls(base string, n, inflight int, d time.Duration) error {
	var st stats
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		c, _, err := dialer(i).Dial(fmt.Sprintf("%s/api/bench-%d", base, i), nil)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := make(map[int]time.Time, inflight)
			next := 0
			var wmu sync.Mutex
			send := func() error {
				wmu.Lock()
				defer wmu.Unlock()
				sent[next] = time.Now()
				next++
				return c.WriteMessage(websocket.TextMessage, []byte(`{"id":`+strconv.Itoa(next-1)+`,"method":"bench","payload":{"n":1}}`))
			}
			for range inflight {
				if send() != nil {
					return
				}
			}
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					return
				}
				var m struct {
					ID   int
					Type string
				}
				_ = json.Unmarshal(b, &m)
				wmu.Lock()
				t0 := sent[m.ID]
				delete(sent, m.ID)
				wmu.Unlock()
				if m.Type == "result" {
					st.add(time.Since(t0))
				} else {
					st.errors.Add(1)
				}
				if ctx.Err() != nil {
					wmu.Lock()
					left := len(sent)
					wmu.Unlock()
					if left == 0 {
						return
					}
					continue
				}
				if send() != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	st.report("through piped", time.Since(start))
	return nil
}

// raw makes the same round trip on the broker directly: publish the call to
// exchange-out-{node} (the echo backend consumes queue-out-{node} and answers
// to exchange-in-{node}), consume queue-in-{node}. Publisher confirms are
// used as piped uses them.
func raw(url, node string, n, inflight int, d time.Duration) error {
	pubConn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer pubConn.Close()
	consConn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer consConn.Close()
	ch, err := consConn.Channel()
	if err != nil {
		return err
	}
	for _, ex := range []string{"exchange-in-" + node, "exchange-out-" + node} {
		if err := ch.ExchangeDeclare(ex, "fanout", true, false, false, false, nil); err != nil {
			return err
		}
	}
	for _, q := range [][2]string{{"queue-in-" + node, "exchange-in-" + node}, {"queue-out-" + node, "exchange-out-" + node}} {
		if _, err := ch.QueueDeclare(q[0], true, false, false, false, nil); err != nil {
			return err
		}
		if err := ch.QueueBind(q[0], "", q[1], false, nil); err != nil {
			return err
		}
	}
	if err := ch.Qos(512, 0, false); err != nil {
		return err
	}
	deliveries, err := ch.Consume("queue-in-"+node, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	pub, err := pubConn.Channel()
	if err != nil {
		return err
	}
	if err := pub.Confirm(false); err != nil {
		return err
	}
	confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 4096))
	go func() {
		for range confirms {
		}
	}()
	var st stats
	var mu sync.Mutex
	sent := make(map[string]time.Time)
	seq := 0
	deadline := time.Now().Add(d)
	publish := func(token string) error {
		mu.Lock()
		seq++
		corr := strconv.Itoa(seq)
		sent[corr] = time.Now()
		mu.Unlock()
		body := []byte(`{"id":` + corr + `,"method":"bench","token":"` + token + `","payload":{"n":1}}`)
		return pub.Publish("exchange-out-"+node, "bench", true, false, amqp.Publishing{
			ContentType: "application/json", CorrelationId: corr, ReplyTo: "queue-in-" + node, Body: body})
	}
	start := time.Now()
	for i := range n {
		for range inflight {
			if err := publish("bench-" + strconv.Itoa(i)); err != nil {
				return err
			}
		}
	}
	for del := range deliveries {
		_ = del.Ack(false)
		var m struct{ Token string }
		_ = json.Unmarshal(del.Body, &m)
		mu.Lock()
		t0, ok := sent[del.CorrelationId]
		delete(sent, del.CorrelationId)
		left := len(sent)
		mu.Unlock()
		if ok {
			st.add(time.Since(t0))
		}
		if time.Now().Before(deadline) {
			if err := publish(m.Token); err != nil {
				return err
			}
		} else if left == 0 {
			break
		}
	}
	st.report("raw broker", time.Since(start))
	for _, q := range []string{"queue-in-" + node, "queue-out-" + node} {
		_, _ = ch.QueueDelete(q, false, false, false)
	}
	for _, ex := range []string{"exchange-in-" + node, "exchange-out-" + node} {
		_ = ch.ExchangeDelete(ex, false, false)
	}
	return nil
}

// cleanup deletes node's queues and exchanges (not the mass exchange).
func cleanup(url, node string) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for _, q := range []string{"queue-in-" + node, "queue-out-" + node} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("delete queue %s: %w", q, err)
		}
	}
	for _, ex := range []string{"exchange-in-" + node, "exchange-out-" + node} {
		if err := ch.ExchangeDelete(ex, false, false); err != nil {
			return fmt.Errorf("delete exchange %s: %w", ex, err)
		}
	}
	return nil
}
