// Package metrics holds the ledger's Prometheus metrics. It is the only
// package that imports the Prometheus client.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the ledger's metrics, in a registry of their own.
type Metrics struct {
	registry        *prometheus.Registry
	refreshes       *prometheus.CounterVec
	refreshLatency  *prometheus.HistogramVec
	httpDuration    *prometheus.HistogramVec
	appendConflicts prometheus.Counter
	appendRetries   prometheus.Counter
	// Deliveries to webhooks and SSF streams, by endpoint id and kind.
	deliveries       *prometheus.HistogramVec
	deliveryFailures *prometheus.CounterVec
	deliveryGiveUps  *prometheus.CounterVec
	deliveryLag      *prometheus.GaugeVec
}

// State reports what the gauges read when scraped.
type State struct {
	LiveSessions  func() int
	ProjectionLag func() (uint64, error) // events in the stream not yet applied
	// Refused counts the stream messages the projection refused: not the
	// ledger's (no valid tag, wrong subject) or out of place.
	Refused func() uint64
	// Superseded counts the ledger's events that changed nothing: writes
	// decided before a user event (revoke-all, deactivation) stored first.
	Superseded func() uint64
}

// New registers the metrics.
func New(state State) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		registry: r,
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sessionledger_refreshes_total",
			Help: "Refresh requests by outcome: rotated, tolerated (retry within the grace window), reused (family revoked), expired, invalid, error.",
		}, []string{"outcome"}),
		refreshLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sessionledger_refresh_duration_seconds",
			Help:    "Time to answer a refresh, by outcome.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"outcome"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sessionledger_http_request_duration_seconds",
			Help:    "HTTP requests by route pattern, method and status code.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method", "code"}),
		appendConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sessionledger_append_conflicts_total",
			Help: "Appends that lost to another writer of the same session, or for user events of the same user (expected-sequence check), and were decided again.",
		}),
		appendRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sessionledger_append_retries_total",
			Help: "Publishes sent again with the same Nats-Msg-Id (ack lost or timed out, stream momentarily unavailable).",
		}),
	}
	m.deliveries = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sessionledger_delivery_latency_seconds",
		Help:    "Events delivered to a webhook or SSF push stream, by endpoint id and kind: time from when the stream stored the event to the receiver's 2xx.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600},
	}, []string{"endpoint", "kind"})
	m.deliveryFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sessionledger_delivery_attempts_failed_total",
		Help: "Delivery attempts to a webhook or SSF push stream that failed (and were retried or given up), by endpoint id and kind.",
	}, []string{"endpoint", "kind"})
	m.deliveryGiveUps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sessionledger_delivery_failures_total",
		Help: "Events whose delivery was given up and recorded as a failure (GET /v1/deliveries/{id}/failures), by endpoint id and kind.",
	}, []string{"endpoint", "kind"})
	m.deliveryLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sessionledger_delivery_lag_events",
		Help: "Events stored and not yet delivered to a webhook or SSF push stream, as the instance that delivered last saw it, by endpoint id and kind.",
	}, []string{"endpoint", "kind"})
	r.MustRegister(m.refreshes, m.refreshLatency, m.httpDuration, m.appendConflicts, m.appendRetries,
		m.deliveries, m.deliveryFailures, m.deliveryGiveUps, m.deliveryLag,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if state.LiveSessions != nil {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sessionledger_live_sessions", Help: "Live sessions in this instance's projection.",
		}, func() float64 { return float64(state.LiveSessions()) }))
	}
	if state.ProjectionLag != nil {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sessionledger_projection_lag_events", Help: "Events in the stream that this instance's projection has not applied yet (-1: the stream did not answer).",
		}, func() float64 {
			lag, err := state.ProjectionLag()
			if err != nil {
				return -1
			}
			return float64(lag)
		}))
	}
	if state.Refused != nil {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sessionledger_refused_messages_total",
			Help: "Stream messages this instance's projection refused to apply since it started: not written by the ledger (no valid tag, a subject that does not match the event) or out of place (replayed: stored without the expectation it was written for, or not continuing the user's chain in events from before expectations; an impossible transition). Any is worth an alert.",
		}, func() float64 { return float64(state.Refused()) }))
	}
	if state.Superseded != nil {
		r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sessionledger_superseded_events_total",
			Help: "The ledger's events, applied by this instance since it started, that changed nothing: a session write decided before a revoke-all or deactivation of its user that the stream stored first (the command answered that the session had ended).",
		}, func() float64 { return float64(state.Superseded()) }))
	}
	// Every outcome appears from the start, at zero.
	for _, o := range []string{"rotated", "tolerated", "reused", "expired", "invalid", "error"} {
		m.refreshes.WithLabelValues(o)
	}
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Refresh records a refresh's outcome ("" counts as error) and duration.
func (m *Metrics) Refresh(outcome string, d time.Duration) {
	if outcome == "" {
		outcome = "error"
	}
	m.refreshes.WithLabelValues(outcome).Inc()
	m.refreshLatency.WithLabelValues(outcome).Observe(d.Seconds())
}

// HTTPRequest records one request.
func (m *Metrics) HTTPRequest(route, method string, code int, d time.Duration) {
	m.httpDuration.WithLabelValues(route, method, strconv.Itoa(code)).Observe(d.Seconds())
}

// AppendConflict counts an append that lost to another writer.
func (m *Metrics) AppendConflict() { m.appendConflicts.Inc() }

// AppendRetry counts a publish sent again.
func (m *Metrics) AppendRetry() { m.appendRetries.Inc() }

// Delivered records an event delivered to endpoint, latency after it was stored.
func (m *Metrics) Delivered(endpoint, kind string, latency time.Duration) {
	m.deliveries.WithLabelValues(endpoint, kind).Observe(latency.Seconds())
}

// AttemptFailed counts a failed delivery attempt.
func (m *Metrics) AttemptFailed(endpoint, kind string) {
	m.deliveryFailures.WithLabelValues(endpoint, kind).Inc()
}

// GaveUp counts a delivery given up and recorded.
func (m *Metrics) GaveUp(endpoint, kind string) {
	m.deliveryGiveUps.WithLabelValues(endpoint, kind).Inc()
}

// Lag sets the events waiting for endpoint.
func (m *Metrics) Lag(endpoint, kind string, pending uint64) {
	m.deliveryLag.WithLabelValues(endpoint, kind).Set(float64(pending))
}

// Forget removes a deleted endpoint's series.
func (m *Metrics) Forget(endpoint, _ string) {
	l := prometheus.Labels{"endpoint": endpoint}
	m.deliveries.DeletePartialMatch(l)
	m.deliveryFailures.DeletePartialMatch(l)
	m.deliveryGiveUps.DeletePartialMatch(l)
	m.deliveryLag.DeletePartialMatch(l)
}
