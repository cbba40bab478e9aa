//go:build linux

package gateway

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// poller watches idle connections for readability with one epoll instance,
// so that an idle connection parks no goroutine: a connection is registered
// EPOLLONESHOT, and when its socket becomes readable the poller starts a
// goroutine that reads what has arrived (Conn.readReady) and re-arms the
// registration once nothing is buffered any more. The poller's goroutine
// runs only while at least one connection is registered: the first add
// starts it, the last remove stops it (it closes its epoll instance as it
// exits), so no goroutine outlives the connections.
type poller struct {
	mu  sync.Mutex
	run *pollRun // guarded by mu; nil while no connection is registered
}

// pollRun is one epoll instance and the goroutine waiting on it.
type pollRun struct {
	mu     *sync.Mutex // the poller's
	epfd   int
	wakefd int // eventfd: written once to stop the goroutine

	// Guarded by poller.mu.
	conns map[uint64]*Conn
	next  uint64
}

// wakeID is the epoll data of the wake eventfd; connection ids start at 1.
const wakeID = 0

// newPoller returns a poller, or nil when this system cannot make one (the
// connections then keep a goroutine each).
func newPoller() *poller { return &poller{} }

// add registers c armed (see arm), so the caller must not touch the
// socket's read side afterwards; it fails when c's socket has no file
// descriptor or epoll refuses it: then c keeps a read goroutine.
func (p *poller) add(c *Conn) error {
	if c.fd < 0 {
		return errNoFD
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run == nil {
		r, err := startPollRun(&p.mu)
		if err != nil {
			return err
		}
		p.run = r
	}
	r := p.run
	r.next++
	id := r.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventID(&ev, id)
	c.pollID = id
	c.run = r
	c.armed.Store(true) // before the event can come
	// Under mu: loop cannot find c before it is in conns, below.
	if ctlErr := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, int(c.fd), &ev); ctlErr != nil {
		c.armed.Store(false)
		c.run = nil
		if len(r.conns) == 0 {
			r.stop()
			p.run = nil
		}
		return fmt.Errorf("gateway: epoll add: %w", ctlErr)
	}
	r.conns[id] = c
	return nil
}

// arm asks for one readiness event of c: when its socket is readable (or
// already is), the poller starts c.readReady. The caller must be c's reader
// and must not touch the socket's read side after arm.
func (p *poller) arm(c *Conn) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventID(&ev, c.pollID)
	c.armed.Store(true) // before the event can come
	if err := unix.EpollCtl(c.run.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &ev); err != nil {
		c.armed.Store(false)
		return fmt.Errorf("gateway: epoll arm: %w", err)
	}
	return nil
}

// remove unregisters c (it must have been added) before its socket is
// closed: closing the socket takes it out of the epoll set (no EPOLL_CTL_DEL
// needed, Go holds no duplicate of the fd), and an event harvested before
// that finds no connection under its id. The last remove stops the
// poller's goroutine.
func (p *poller) remove(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := c.run
	delete(r.conns, c.pollID)
	if len(r.conns) == 0 && p.run == r {
		r.stop()
		p.run = nil
	}
}

func startPollRun(mu *sync.Mutex) (*pollRun, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("gateway: epoll: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("gateway: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventID(&ev, wakeID)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, fmt.Errorf("gateway: epoll add eventfd: %w", err)
	}
	r := &pollRun{mu: mu, epfd: epfd, wakefd: wakefd, conns: make(map[uint64]*Conn)}
	go r.loop()
	return r, nil
}

// stop makes loop return; called under poller.mu once no connection is
// registered.
func (r *pollRun) stop() {
	var one = [8]byte{1}
	_, _ = unix.Write(r.wakefd, one[:])
}

// loop waits for readiness and starts a reader for each connection that is
// armed; it returns, closing the epoll instance, when stop is called.
func (r *pollRun) loop() {
	defer func() {
		_ = unix.Close(r.epfd)
		_ = unix.Close(r.wakefd)
	}()
	events := make([]unix.EpollEvent, 128)
	ready := make([]*Conn, 0, 128)
	for {
		n, err := unix.EpollWait(r.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return // only a bad epfd: nothing to wait on
		}
		ready = ready[:0]
		stop := false
		r.mu.Lock()
		for _, ev := range events[:n] {
			id := eventID(&ev)
			if id == wakeID {
				stop = true
				continue
			}
			if c := r.conns[id]; c != nil {
				ready = append(ready, c)
			}
		}
		r.mu.Unlock()
		for _, c := range ready {
			if c.armed.CompareAndSwap(true, false) {
				go c.readReady()
			}
		}
		clear(ready)
		if stop {
			return
		}
	}
}

func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(id)
	ev.Pad = int32(id >> 32)
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
