package telemetry

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every metric a node exports. It is created once in main and
// passed to the packages that record into it; its zero value is not usable.
// Label values are drawn from small fixed sets (codes and reasons), never
// from tokens or method names chosen by clients.
type Metrics struct {
	reg     *prometheus.Registry
	pending atomic.Pointer[func() int] // what piped_calls_pending reports

	// Connections is the number of open WebSocket connections.
	Connections prometheus.Gauge
	// ConnectionsTotal counts accepted upgrades.
	ConnectionsTotal prometheus.Counter
	// UpgradesRefused counts refused upgrades by reason (bad_token, auth, origin, max_connections, draining,
	// unauthorized, authorize_timeout, event_binding).
	UpgradesRefused *prometheus.CounterVec
	// Disconnects counts closed connections by reason (the close reason set in gateway).
	Disconnects *prometheus.CounterVec
	// Calls counts client frames accepted as calls and published.
	Calls prometheus.Counter
	// CallsByExchange counts published calls by the exchange of their route
	// (configured names, "(default)" for the default exchange).
	CallsByExchange *prometheus.CounterVec
	// CallErrors counts error frames sent to clients, by code.
	CallErrors *prometheus.CounterVec
	// CallsAbandoned counts calls dropped unanswered because their
	// connection ended before the answer came.
	CallsAbandoned prometheus.Counter
	// Results counts in-queue results delivered, by how they were routed
	// (correlation, match, broadcast).
	Results *prometheus.CounterVec
	// Events counts in-queue events ("type":"event") dispatched.
	Events prometheus.Counter
	// Control counts backend control messages carried out, by type
	// (disconnect, broadcast) and outcome (ok; bad_code: a disconnect whose
	// code was not 4000–4999, carried out with the default code).
	Control *prometheus.CounterVec
	// Dropped counts in-queue messages dropped, by reason (not_json,
	// not_object, no_token, unknown_type, bad_control, bad_connection, late,
	// redelivered, no_connection).
	Dropped *prometheus.CounterVec
	// CallDuration observes call→answer latency in seconds, by outcome
	// (result or an error code).
	CallDuration *prometheus.HistogramVec
	// ConfirmDuration observes publish→broker confirm latency in seconds.
	ConfirmDuration prometheus.Histogram
	// BrokerReconnects counts successful (re)connections to the broker.
	BrokerReconnects prometheus.Counter
	// Ready is 1 while the node is ready to take calls, else 0.
	Ready prometheus.Gauge
	// BrokerBlocked is 1 while the broker blocks publishing (resource alarm).
	BrokerBlocked prometheus.Gauge
	// Notices counts lifecycle notices by method ($connect, $disconnect,
	// $presence) and result (confirmed, nack, unavailable).
	Notices *prometheus.CounterVec
	// EventBindings is the number of token keys the node's in-queue is
	// bound with to amqp.events_exchange (targeted events), as far as the
	// node knows: held tokens and those within amqp.events_unbind_delay.
	EventBindings prometheus.Gauge
	// EventBindingOps counts queue.bind and queue.unbind operations on
	// amqp.events_exchange that the broker completed, by op (bind, unbind).
	EventBindingOps *prometheus.CounterVec
}

// NewMetrics creates the metrics on a registry of their own, together with
// the Go runtime and process collectors, without a region label.
func NewMetrics() *Metrics { return NewMetricsForRegion("") }

// NewMetricsForRegion is NewMetrics with the constant label region="region"
// on every metric it exports, the Go runtime and process metrics included,
// so that one Prometheus can tell the regions apart (node.region, which
// defaults to FLY_REGION). An empty region adds no label at all, rather than
// region="".
func NewMetricsForRegion(region string) *Metrics {
	reg := prometheus.NewRegistry()
	var into prometheus.Registerer = reg
	if region != "" {
		into = prometheus.WrapRegistererWith(prometheus.Labels{"region": region}, reg)
	}
	f := func(c prometheus.Collector) { into.MustRegister(c) }
	m := &Metrics{
		reg: reg,
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "piped_connections", Help: "Open WebSocket connections."}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "piped_connections_total", Help: "WebSocket connections accepted."}),
		UpgradesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_upgrades_refused_total", Help: "WebSocket upgrades refused, by reason."}, []string{"reason"}),
		Disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_disconnects_total", Help: "WebSocket connections closed, by reason."}, []string{"reason"}),
		Calls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "piped_calls_total", Help: "Client calls accepted and handed to the broker."}),
		CallsByExchange: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_calls_by_exchange_total", Help: "Client calls handed to the broker, by the exchange of their route."}, []string{"exchange"}),
		CallErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_call_errors_total", Help: "Error frames sent to clients, by error code."}, []string{"code"}),
		CallsAbandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "piped_calls_abandoned_total", Help: "Calls dropped unanswered because their connection closed first."}),
		Results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_results_total", Help: "Results from the in-queue delivered, by routing (correlation, match, broadcast)."}, []string{"routed_by"}),
		Events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "piped_events_total", Help: "Events from the in-queue dispatched."}),
		Control: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_control_messages_total", Help: "Backend control messages carried out, by type and outcome (ok, bad_code)."}, []string{"type", "outcome"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_backend_messages_dropped_total", Help: "In-queue messages dropped, by reason (too_big, not_json, not_object, not_utf8, no_token, unknown_type, bad_control, bad_connection, late, mismatch, redelivered, no_connection)."}, []string{"reason"}),
		CallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "piped_call_duration_seconds", Help: "Time from a call's publish to its answer, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)}, []string{"outcome"}),
		ConfirmDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "piped_publish_confirm_seconds", Help: "Time from publishing a call to the broker's confirm.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}),
		BrokerReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "piped_broker_connects_total", Help: "Successful connections (first and re-) to the broker."}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "piped_ready", Help: "1 while the node is connected, has its topology and consumes its in-queue."}),
		BrokerBlocked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "piped_broker_blocked", Help: "1 while the broker blocks publishing (memory or disk alarm)."}),
		Notices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_notices_total", Help: "Lifecycle notices, by method and result (confirmed, nack, unavailable)."}, []string{"method", "result"}),
		EventBindings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "piped_event_bindings", Help: "Token bindings of the in-queue to amqp.events_exchange (targeted events)."}),
		EventBindingOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "piped_event_binding_ops_total", Help: "Binding operations on amqp.events_exchange completed by the broker, by op (bind, unbind)."}, []string{"op"}),
	}
	f(m.Connections)
	f(m.ConnectionsTotal)
	f(m.UpgradesRefused)
	f(m.Disconnects)
	f(m.Calls)
	f(m.CallsByExchange)
	f(m.CallErrors)
	f(m.CallsAbandoned)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "piped_calls_pending", Help: "Calls published and awaiting their result, timeout or error."}, m.callsPending))
	f(m.Results)
	f(m.Events)
	f(m.Control)
	f(m.Dropped)
	f(m.CallDuration)
	f(m.ConfirmDuration)
	f(m.BrokerReconnects)
	f(m.Ready)
	f(m.BrokerBlocked)
	f(m.Notices)
	f(m.EventBindings)
	f(m.EventBindingOps)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetPendingFunc makes piped_calls_pending report what f returns (the
// router's pending table); until it is called the gauge is 0.
func (m *Metrics) SetPendingFunc(f func() int) { m.pending.Store(&f) }

func (m *Metrics) callsPending() float64 {
	if f := m.pending.Load(); f != nil {
		return float64((*f)())
	}
	return 0
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
