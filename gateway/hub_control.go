package gateway

import (
	"strings"
	"unicode/utf8"

	"github.com/piped-dev/piped/protocol"
)

// This file holds what the hub does for backend control messages (see
// routing.Hub): deliveries to one connection or to all, and disconnects.
// Like Broadcast, none of it blocks on a connection: sending and closing
// only queue, and the connection's writer does the rest.

// maxCloseText is the most bytes of text a close frame carries: a control
// frame's payload is at most 125 bytes, two of which are the code.
const maxCloseText = 123

// SendTo queues msg on the connection of token whose ID is connection and
// returns 1 when it accepted it, else 0 (no such connection of that token
// here, or it is closing). It never blocks; msg must not be modified
// afterwards.
func (h *Hub) SendTo(token, connection string, msg []byte) int {
	s := h.shard(token)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.conns[token] {
		if c.id == connection {
			if c.Send(msg) {
				return 1
			}
			return 0
		}
	}
	return 0
}

// BroadcastAll queues msg on every connection of the node and returns how
// many accepted it. It holds one shard's read lock at a time, never blocks
// on a connection, and msg must not be modified afterwards. A connection
// registered while it runs may or may not get msg.
func (h *Hub) BroadcastAll(msg []byte) int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, cs := range s.conns {
			for _, c := range cs {
				if c.Send(msg) {
					n++
				}
			}
		}
		s.mu.RUnlock()
	}
	return n
}

// DisconnectToken closes every connection of token (only the one whose ID
// is connection, when that is not "") after what is already queued for it
// is written, and returns how many it closed (not counting those that were
// closing already: they keep their first reason). The close code is code when
// it is within 4000–4999, else DisconnectBackend's; the close frame's text
// is reason cut to 123 bytes at a character boundary (invalid UTF-8
// replaced), or "disconnected" when reason is "". The metric label and the
// logged reason are always "disconnected", whatever the text. It never
// blocks; a connection already closing keeps its first reason.
func (h *Hub) DisconnectToken(token, connection string, code int, reason string) int {
	d := DisconnectBackend
	if protocol.ValidCloseCode(code) {
		d.Code = code
	}
	text := closeText(reason)
	s := h.shard(token)
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, c := range s.conns[token] {
		if (connection == "" || c.id == connection) && c.closeWithText(d, text) {
			n++
		}
	}
	return n
}

// closeText is reason made fit for a close frame: valid UTF-8, at most
// maxCloseText bytes, cut at a character boundary; "" becomes
// DisconnectBackend.Reason.
func closeText(reason string) string {
	if reason == "" {
		return DisconnectBackend.Reason
	}
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) <= maxCloseText {
		return reason
	}
	n := maxCloseText
	for n > 0 && !utf8.RuneStart(reason[n]) {
		n--
	}
	return reason[:n]
}
