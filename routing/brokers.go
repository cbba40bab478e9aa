package routing

import "hash/fnv"

// StartIndex returns the index, in a list of n broker addresses
// (amqp.urls), of the address a node with id nodeID connects to first: the
// 32-bit FNV-1a hash of the id modulo n. The nodes of a deployment spread
// over the brokers, and a node starts at the same one every time. It is 0
// when n is below 2.
func StartIndex(nodeID string, n int) int {
	if n < 2 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(nodeID)) // a hash.Hash never fails
	return int(h.Sum32() % uint32(n))
}

// brokers walks the broker addresses of a router, one step per attempt:
// the first attempt takes the address StartIndex gives, and every attempt
// after it (after a failed dial or an ended session) the next one, round
// the list. It is owned by Router.Run's goroutine.
type brokers struct {
	urls []string
	next int // index of the address the next attempt takes
}

// newBrokers returns the rotation over urls (at least one) of node nodeID.
func newBrokers(urls []string, nodeID string) *brokers {
	return &brokers{urls: urls, next: StartIndex(nodeID, len(urls))}
}

// take returns the address of the next attempt and its index, and moves on.
func (b *brokers) take() (url string, index int) {
	index = b.next
	b.next = (b.next + 1) % len(b.urls)
	return b.urls[index], index
}
