//go:build federation

package federation

import (
	"errors"
	"io"
	"net"
	"sync"
)

// proxy is the network between two regions, for one direction: a TCP
// forwarder on 127.0.0.1 to one broker, which a federation upstream's URI
// names instead of the broker. Cut closes its listener and every connection
// through it, as a network cut would (the other side sees connections reset
// and refused); Heal listens again on the same port. It owns its goroutines:
// Cut and Close wait for them.
type proxy struct {
	target string // host:port of the broker

	mu    sync.Mutex
	addr  string // host:port it listens on, fixed by the first listen
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // the accept loop and the copiers
}

// newProxy starts a proxy to target on a free port.
func newProxy(target string) (*proxy, error) {
	p := &proxy{target: target, conns: map[net.Conn]struct{}{}}
	if err := p.listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return p, nil
}

// Addr is the host:port to connect to instead of the target.
func (p *proxy) Addr() string { return p.addr }

func (p *proxy) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(ln)
	return nil
}

func (p *proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Cut
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln { // cut meanwhile
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

// pipe copies from src to dst until either ends, then closes both.
func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut stops listening and closes every connection through the proxy.
func (p *proxy) Cut() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Heal listens again on the proxy's port.
func (p *proxy) Heal() error {
	p.mu.Lock()
	listening := p.ln != nil
	p.mu.Unlock()
	if listening {
		return errors.New("proxy: not cut")
	}
	return p.listen(p.addr)
}

// Close cuts the proxy for good.
func (p *proxy) Close() { p.Cut() }
