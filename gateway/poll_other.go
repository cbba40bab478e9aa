//go:build !linux

package gateway

// poller is Linux-only (epoll); elsewhere every connection keeps a read
// goroutine.
type poller struct{}

type pollRun struct{}

func newPoller() *poller { return nil }

func (p *poller) add(c *Conn) error { return errNoFD }
func (p *poller) arm(c *Conn) error { return errNoFD }
func (p *poller) remove(c *Conn)    {}
