// Package metrics is the one place where pop3proxy meets Prometheus: it
// implements the observer interfaces of the POP3 server framework, the
// filter chain and the relay with Prometheus metrics, checks readiness
// (the listeners and every scanner's ping), and serves /metrics, /healthz
// and /readyz. The framework packages know nothing of Prometheus.
//
// No label ever carries a user name, a host or an address: labels come
// from small closed sets (session results, login mechanisms, verdicts,
// failure reasons) or from the configuration (filter names). Every
// counter's label values are resolved once, when the metric or the filter
// is set up, so an event costs an atomic add and no allocation.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

const namespace = "pop3proxy"

// scanBuckets cover a header filter's microseconds to a scanner's default
// 30s timeout; downloadBuckets a small message on loopback to a large one
// from a slow server.
var (
	scanBuckets     = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	downloadBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
)

// Metrics holds the proxy's metrics in a registry of its own, with the Go
// runtime's and the process's.
type Metrics struct {
	reg *prometheus.Registry

	sessions      []prometheus.Counter   // by pop3server.SessionResult
	sessionsAlive prometheus.Gauge       // started, not yet ended
	logins        [][]prometheus.Counter // by LoginMechanism, LoginResult

	retrieved [2]prometheus.Counter // RETR, TOP
	sentBytes prometheus.Counter
	download  prometheus.Histogram
	tempfail  prometheus.Counter
	replayed  prometheus.Counter
	ahead     prometheus.Counter
	oversize  *prometheus.CounterVec // by limit: max_size or a filter's name
	overMax   prometheus.Counter     // oversize{limit="max_size"}
	upstream  [][]prometheus.Counter // by UpstreamStage, UpstreamReason

	verdicts     *prometheus.CounterVec   // filter, action
	filterErrors *prometheus.CounterVec   // filter, on_error, kind
	scanSeconds  *prometheus.HistogramVec // filter
	scannerUp    *prometheus.GaugeVec     // filter
	ready        prometheus.Gauge
}

// New registers the metrics, every label value of the closed sets at 0.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{reg}
	m := &Metrics{reg: reg}

	sessions := f.counterVec("sessions_total", "Client connections by how they ended.", "result")
	for _, r := range pop3server.SessionResults() {
		m.sessions = append(m.sessions, sessions.WithLabelValues(r.String()))
	}
	m.sessionsAlive = f.gauge("sessions_active", "Client connections open now.")
	logins := f.counterVec("logins_total", "Login attempts the backend decided, by mechanism and result.", "mechanism", "result")
	for _, mech := range pop3server.LoginMechanisms() {
		var row []prometheus.Counter
		for _, r := range pop3server.LoginResults() {
			row = append(row, logins.WithLabelValues(mech.String(), r.String()))
		}
		m.logins = append(m.logins, row)
	}

	retrieved := f.counterVec("messages_retrieved_total", "Messages sent whole to clients, by command.", "command")
	m.retrieved = [2]prometheus.Counter{retrieved.WithLabelValues("retr"), retrieved.WithLabelValues("top")}
	m.sentBytes = f.counter("messages_sent_bytes_total", "Message octets sent to clients by RETR and TOP, before dot-stuffing.")
	m.download = f.histogram("upstream_download_duration_seconds",
		"Time to receive a message the filters check whole from the upstream.", downloadBuckets)
	m.tempfail = f.counter("messages_tempfailed_total", "RETR and TOP answered -ERR [SYS/TEMP] because the message could not be checked now.")
	m.replayed = f.counter("messages_replayed_total",
		"RETR and TOP answers decided by a decision made before (verdict cache, scan-ahead, a scan of the same message in another session), without a scan.")
	m.ahead = f.counter("messages_scanned_ahead_total", "Messages downloaded with TOP and checked ahead of the client (scan-ahead).")
	m.oversize = f.counterVec("messages_oversize_total",
		`Messages too large to be checked: over max_size (limit="max_size") or refused as too large by a filter's scanner (limit=<filter>).`, "limit")
	m.overMax = m.oversize.WithLabelValues("max_size")
	upstreamFailures := f.counterVec("upstream_failures_total", "Failures to reach or log in to an upstream server, by stage and reason.", "stage", "reason")
	for _, st := range proxy.UpstreamStages() {
		var row []prometheus.Counter
		for _, r := range proxy.UpstreamReasons() {
			row = append(row, upstreamFailures.WithLabelValues(st.String(), r.String()))
		}
		m.upstream = append(m.upstream, row)
	}

	m.verdicts = f.counterVec("filter_verdicts_total", "Verdicts of each filter: continue, accept, replace or reject.", "filter", "action")
	m.filterErrors = f.counterVec("filter_errors_total",
		"Filter calls that failed (kind=error) or timed out (kind=timeout), by filter and its on_error policy.", "filter", "on_error", "kind")
	m.scanSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "filter_scan_duration_seconds",
		Help:    "Time of each filter call, the wait for a max_concurrent slot included.",
		Buckets: scanBuckets,
	}, []string{"filter"})
	reg.MustRegister(m.scanSeconds)
	m.scannerUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "scanner_up",
		Help: "Whether the filter's scanner daemon answered its last ping (1) or not (0).",
	}, []string{"filter"})
	reg.MustRegister(m.scannerUp)
	m.ready = f.gauge("ready", "Whether /readyz answers 200: listeners up and every scanner answering.")
	return m
}

// factory makes metrics in the namespace and registers them.
type factory struct{ reg *prometheus.Registry }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Server is what the POP3 server reports to.
func (m *Metrics) Server() pop3server.Observer { return serverObserver{m} }

// Filters is what filter chains report to.
func (m *Metrics) Filters() filter.Observer { return filterObserver{m} }

// Relay is what the relay reports to.
func (m *Metrics) Relay() proxy.Observer { return relayObserver{m} }

// setScanner records a filter's last ping.
func (m *Metrics) setScanner(name string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.scannerUp.WithLabelValues(name).Set(v)
}

func (m *Metrics) setReady(ready bool) {
	v := 0.0
	if ready {
		v = 1
	}
	m.ready.Set(v)
}

type serverObserver struct{ m *Metrics }

func (o serverObserver) SessionStarted() { o.m.sessionsAlive.Inc() }

func (o serverObserver) SessionEnded(r pop3server.SessionResult) {
	o.m.sessionsAlive.Dec()
	if int(r) < len(o.m.sessions) {
		o.m.sessions[r].Inc()
	}
}

func (o serverObserver) Login(mech pop3server.LoginMechanism, r pop3server.LoginResult) {
	if int(mech) < len(o.m.logins) && int(r) < len(o.m.logins[mech]) {
		o.m.logins[mech][r].Inc()
	}
}

type relayObserver struct{ m *Metrics }

func (o relayObserver) MessageSent(top bool, octets int64, complete bool) {
	o.m.sentBytes.Add(float64(octets))
	if !complete {
		return
	}
	if top {
		o.m.retrieved[1].Inc()
	} else {
		o.m.retrieved[0].Inc()
	}
}

func (o relayObserver) Downloaded(d time.Duration) { o.m.download.Observe(d.Seconds()) }
func (o relayObserver) Oversize()                  { o.m.overMax.Inc() }
func (o relayObserver) TempFailed()                { o.m.tempfail.Inc() }
func (o relayObserver) Replayed()                  { o.m.replayed.Inc() }
func (o relayObserver) ScannedAhead()              { o.m.ahead.Inc() }

func (o relayObserver) UpstreamFailed(stage proxy.UpstreamStage, reason proxy.UpstreamReason) {
	if int(stage) < len(o.m.upstream) && int(reason) < len(o.m.upstream[stage]) {
		o.m.upstream[stage][reason].Inc()
	}
}

type filterObserver struct{ m *Metrics }

// actions are the verdict label values, in filter.Action order.
var actions = []filter.Action{filter.Continue, filter.Accept, filter.Replace, filter.Reject}

// Filter resolves one filter's series. A reload that builds the same
// filter again gets the same series, so counts carry on.
func (o filterObserver) Filter(name, _ string, onError filter.OnError) filter.FilterObserver {
	m := o.m
	f := &filterMetrics{
		invalid:  m.verdicts.WithLabelValues(name, "invalid"),
		errors:   m.filterErrors.WithLabelValues(name, onError.String(), "error"),
		timeouts: m.filterErrors.WithLabelValues(name, onError.String(), "timeout"),
		tooLarge: m.oversize.WithLabelValues(name),
		scan:     m.scanSeconds.WithLabelValues(name),
	}
	for _, a := range actions {
		f.verdicts = append(f.verdicts, m.verdicts.WithLabelValues(name, a.String()))
	}
	return f
}

type filterMetrics struct {
	verdicts []prometheus.Counter // by filter.Action
	invalid  prometheus.Counter   // an action no plugin should return
	errors   prometheus.Counter
	timeouts prometheus.Counter
	tooLarge prometheus.Counter
	scan     prometheus.Observer
}

func (f *filterMetrics) Verdict(a filter.Action, took time.Duration) {
	f.scan.Observe(took.Seconds())
	if a >= 0 && int(a) < len(f.verdicts) {
		f.verdicts[a].Inc()
	} else {
		f.invalid.Inc()
	}
}

func (f *filterMetrics) Failed(timedOut bool, took time.Duration) {
	f.scan.Observe(took.Seconds())
	if timedOut {
		f.timeouts.Inc()
	} else {
		f.errors.Inc()
	}
}

func (f *filterMetrics) TooLarge(took time.Duration) {
	f.scan.Observe(took.Seconds())
	f.tooLarge.Inc()
}
