package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Stage names one part of a call, for dlm_stage_seconds.
type Stage int

// The stages of a call, in order.
const (
	// Decode is reading the request's message.
	Decode Stage = iota
	// Checks is the state machine's admission checks before a proposal:
	// session, seq, a repeat's recorded answer.
	Checks
	// RaftCommit is a proposal's wait: queueing, the log write and fsync,
	// replication and the leader's apply.
	RaftCommit
	// FSMApply is applying one committed entry (lock state and file
	// writes), on every member.
	FSMApply
	// Reply is encoding the response's message.
	Reply
	stages
)

var stageNames = [stages]string{"decode", "checks", "raft_commit", "fsm_apply", "reply"}

// Metrics is one node's metrics on a registry of its own, so that several
// nodes in one process (tests) do not collide. A nil *Metrics counts
// nothing.
type Metrics struct {
	reg *prometheus.Registry

	grants, releases, expiries, dedupHits prometheus.Counter
	lockDelays                            prometheus.Counter
	abortedRollbacks, expiredRollbacks    prometheus.Counter
	stage                                 [stages]prometheus.Observer
}

// New registers the counters, the stage histograms and the Go runtime's
// and the process's own collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	m := &Metrics{
		reg:        reg,
		grants:     counter("dlm_grants_total", "Lock grants applied by this member's state machine (the same on every member)."),
		releases:   counter("dlm_releases_total", "Critical sections committed by a release or by closing the session that held the lock, as applied by this member."),
		expiries:   counter("dlm_expiries_total", "Sessions ended by lease expiry, as applied by this member."),
		dedupHits:  counter("dlm_dedup_hits_total", "Repeated requests (same session and seq) answered by this leader from the recorded outcome, without a log entry."),
		lockDelays: counter("dlm_lock_delays_total", "Lock-delays started by a holder's lease expiry, as applied by this member."),
	}
	rollbacks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dlm_rollbacks_total",
		Help: "Critical sections rolled back, by cause: aborted (a release with abort, or of token 0) or expired (the holder's lease ran out).",
	}, []string{"cause"})
	reg.MustRegister(rollbacks)
	m.abortedRollbacks = rollbacks.WithLabelValues("aborted")
	m.expiredRollbacks = rollbacks.WithLabelValues("expired")
	hist := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dlm_stage_seconds",
		Help: "Time spent in each stage of a call: decode, checks, raft_commit (queue, log write and fsync, replication, apply), fsm_apply, reply (encoding).",
		// 10 µs to 1 s, a factor of about 3.2 apart.
		Buckets: prometheus.ExponentialBucketsRange(10e-6, 1, 11),
	}, []string{"stage"})
	reg.MustRegister(hist)
	for s := range stages {
		m.stage[s] = hist.WithLabelValues(stageNames[s])
	}
	return m
}

// Grants counts n grants.
func (m *Metrics) Grants(n int) {
	if m != nil && n > 0 {
		m.grants.Add(float64(n))
	}
}

// LockDelays counts n lock-delays started.
func (m *Metrics) LockDelays(n int) {
	if m != nil && n > 0 {
		m.lockDelays.Add(float64(n))
	}
}

// Released counts a committed section.
func (m *Metrics) Released() {
	if m != nil {
		m.releases.Inc()
	}
}

// Aborted counts a section rolled back by its holder.
func (m *Metrics) Aborted() {
	if m != nil {
		m.abortedRollbacks.Inc()
	}
}

// Expired counts a session's expiry and, when it held the lock, the
// section that expiry rolled back.
func (m *Metrics) Expired(held bool) {
	if m == nil {
		return
	}
	m.expiries.Inc()
	if held {
		m.expiredRollbacks.Inc()
	}
}

// DedupHit counts a repeat answered from the record.
func (m *Metrics) DedupHit() {
	if m != nil {
		m.dedupHits.Inc()
	}
}

// Since records the time from start to now in stage s.
func (m *Metrics) Since(s Stage, start time.Time) {
	if m != nil {
		m.stage[s].Observe(time.Since(start).Seconds())
	}
}

// Observe records d in stage s.
func (m *Metrics) Observe(s Stage, d time.Duration) {
	if m != nil {
		m.stage[s].Observe(d.Seconds())
	}
}

// Gauge registers a gauge read at scrape time: for values that need a
// lock or a call to read (sessions, waiters, Raft's indexes).
func (m *Metrics) Gauge(name, help string, read func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, read))
}

// StateGauge registers a gauge with one series per state, labelled
// state=..., 1 for the current one (read at scrape time) and 0 for the
// others.
func (m *Metrics) StateGauge(name, help string, states []string, current func() string) {
	m.reg.MustRegister(&stateCollector{
		desc: prometheus.NewDesc(name, help, []string{"state"}, nil), states: states, current: current,
	})
}

type stateCollector struct {
	desc    *prometheus.Desc
	states  []string
	current func() string
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	cur := c.current()
	for _, s := range c.states {
		v := 0.0
		if s == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, s)
	}
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
