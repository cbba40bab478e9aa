package routing

import (
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/propagation"
)

// AMQPHeaders carries trace context in AMQP message headers
// (propagation.TextMapCarrier over amqp.Table): the router injects the
// call's context into what it publishes and extracts a backend's from what
// it consumes. Values that are neither strings nor byte arrays (some clients
// send strings as byte arrays) are ignored on Get.
type AMQPHeaders amqp.Table

var _ propagation.TextMapCarrier = AMQPHeaders(nil)

// Get returns the header's value when it is a string or byte array.
func (h AMQPHeaders) Get(key string) string {
	switch v := h[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// Set sets a header; h must not be nil.
func (h AMQPHeaders) Set(key, value string) { h[key] = value }

// Keys lists the header names.
func (h AMQPHeaders) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
