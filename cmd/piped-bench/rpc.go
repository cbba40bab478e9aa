package main

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// drainTimeout bounds the wait for the answers still due when a window
// ends; what has not come by then counts as lost.
const drainTimeout = 5 * time.Second

// dialer spreads client source addresses over 127.0.0.2, 127.0.0.3, …
// (perIP connections each), so that more connections than one address has
// ephemeral ports can be open. The port is chosen at connect, not at bind
// (IP_BIND_ADDRESS_NO_PORT): a port reserved by bind would be taken from
// the ephemeral range that every other connection on the host shares.
func dialer(i, perIP int) *websocket.Dialer {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+(i/perIP)%250))}
	return &websocket.Dialer{
		NetDial:          (&net.Dialer{LocalAddr: src, Timeout: 30 * time.Second, Control: bindNoPort}).Dial,
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
	}
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h), which the
// syscall package does not name.
const ipBindAddressNoPort = 24

func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// closeAbort closes c with SO_LINGER 0: a reset rather than a FIN, so that
// the thousands of connections a scenario closes leave no TIME_WAIT behind
// to hold ports the next scenario (or the broker connection) needs.
func closeAbort(c *websocket.Conn) {
	if tc, ok := c.NetConn().(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// rpcLoad is n WebSocket connections each keeping w calls in flight.
type rpcLoad struct {
	counters
	lost, dup, errs atomic.Int64
	wg              sync.WaitGroup
	conns           []*websocket.Conn
}

// runRPC measures calls through node n: n connections × w calls in flight.
func runRPC(n *node, m cpuMeter, run string, conns, w, rep int, warmup, d time.Duration) (loadResult, error) {
	l := &rpcLoad{}
	for i := range conns {
		c, _, err := dialer(i, 5000).Dial(n.wsURL(fmt.Sprintf("bench-%s-%d", run, i)), nil)
		if err != nil {
			l.closeAll()
			return loadResult{}, fmt.Errorf("rpc: connection %d: %w", i, err)
		}
		l.conns = append(l.conns, c)
	}
	for _, c := range l.conns {
		l.wg.Go(func() { l.client(c, w) })
	}
	win := measureWindow(&l.counters, m, warmup, d)
	l.stopping.Store(true)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainTimeout):
	}
	l.closeAll()
	<-done
	return win.result("rpc", conns, w, rep, l.latencies, l.lost.Load(), l.dup.Load(), l.errs.Load()), nil
}

func (l *rpcLoad) closeAll() {
	for _, c := range l.conns {
		closeAbort(c)
	}
}

// client is the only goroutine that reads or writes c once started: it
// sends w calls, then one more for each answer until the load stops.
func (l *rpcLoad) client(c *websocket.Conn, w int) {
	sent := make(map[int64]time.Time, w)
	var next int64
	var lat []time.Duration
	defer func() {
		l.lost.Add(int64(len(sent)))
		l.addLatencies(lat)
	}()
	buf := make([]byte, 0, 64)
	send := func() error {
		buf = append(buf[:0], `{"id":`...)
		buf = strconv.AppendInt(buf, next, 10)
		buf = append(buf, `,"method":"bench","payload":{"n":1}}`...)
		sent[next] = time.Now()
		next++
		return c.WriteMessage(websocket.TextMessage, buf)
	}
	for range w {
		if send() != nil {
			return
		}
	}
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			return
		}
		id, ok := frameID(b)
		t0, pending := sent[id]
		if !ok || !pending {
			l.dup.Add(1) // an answer to no call in flight: a second answer
			continue
		}
		delete(sent, id)
		if bytes.Contains(b, []byte(`"type":"result"`)) {
			if l.measuring.Load() {
				lat = append(lat, time.Since(t0))
			}
			l.answered.Add(1)
		} else {
			l.errs.Add(1)
		}
		if l.stopping.Load() {
			if len(sent) == 0 {
				return
			}
			continue
		}
		if send() != nil {
			return
		}
	}
}

// frameID returns the numeric "id" of a frame, without decoding the rest.
func frameID(b []byte) (int64, bool) {
	i := bytes.Index(b, []byte(`"id":`))
	if i < 0 {
		return 0, false
	}
	b = b[i+5:]
	var n int64
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	return n, j > 0
}
