package telemetry

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every Spool collector, registered on its own registry (never
// the global default one, so tests can build two).
type Metrics struct {
	Registry *prometheus.Registry

	Enqueued         *prometheus.CounterVec   // queue
	Finished         *prometheus.CounterVec   // queue, outcome
	DeliveryDuration *prometheus.HistogramVec // queue
	QueueWait        *prometheus.HistogramVec // queue
	WorkersBusy      prometheus.Gauge
	WorkersMax       prometheus.Gauge
	Rescued          prometheus.Counter
	LeasesLost       prometheus.Counter
	EnqueueLeased    prometheus.Counter
	IsLeader         prometheus.Gauge
	// QueueDepth and OldestDue are set by the leader only (see SetQueueDepths).
	QueueDepth *prometheus.GaugeVec // queue, state
	OldestDue  *prometheus.GaugeVec // queue
	Paused     *prometheus.GaugeVec // queue
	LogDropped prometheus.Counter
	// Per destination (scheme://host:port), set by each dispatcher for at
	// most 100 destinations at a time; the rest share destination="other".
	DestinationLimit       *prometheus.GaugeVec   // destination
	DestinationInFlight    *prometheus.GaugeVec   // destination
	DestinationBreakerOpen *prometheus.GaugeVec   // destination
	DestinationRequests    *prometheus.CounterVec // destination, outcome
	DestinationDeferred    *prometheus.CounterVec // destination, reason

	// Schedules, counted by the leader that enqueues their runs.
	ScheduleRuns *prometheus.CounterVec // schedule, outcome
	ScheduleLag  prometheus.Histogram

	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	httpInflight  prometheus.Gauge
	handlerErrors *prometheus.CounterVec // cause: gathering, encoding
}

// NewMetrics builds and registers the collectors, with Go runtime and
// process collectors and a build-info gauge.
func NewMetrics(version, commit string) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_tasks_enqueued_total", Help: "Tasks accepted by the API (idempotent replays excluded).",
		}, []string{"queue"}),
		Finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_tasks_finished_total", Help: "Delivery attempts that ended, by outcome: succeeded, failed, retried, cancelled.",
		}, []string{"queue", "outcome"}),
		DeliveryDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spool_delivery_duration_seconds", Help: "Duration of one delivery attempt (the HTTP request to the target).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"queue"}),
		QueueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spool_queue_wait_seconds", Help: "Time from a task being due to its attempt starting.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"queue"}),
		WorkersBusy: prometheus.NewGauge(prometheus.GaugeOpts{Name: "spool_workers_busy", Help: "Deliveries in flight in this process."}),
		WorkersMax:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "spool_workers_max", Help: "Deliveries this process may run at once."}),
		Rescued:     prometheus.NewCounter(prometheus.CounterOpts{Name: "spool_leases_rescued_total", Help: "Running tasks whose lease expired and were rescued by the leader."}),
		LeasesLost:  prometheus.NewCounter(prometheus.CounterOpts{Name: "spool_leases_lost_total", Help: "Leases this process held that were taken away (rescued or cancelled) before completion."}),
		EnqueueLeased: prometheus.NewCounter(prometheus.CounterOpts{Name: "spool_enqueue_leased_total",
			Help: "Tasks this process leased in the transaction of an enqueue (SPOOL_ENQUEUE_LEASE) rather than in a lease of the dispatcher's own."}),
		IsLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "spool_leader", Help: "1 while this process is the maintenance leader."}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spool_queue_depth", Help: "Tasks by queue and state, counted in the store by the leader (only the leader exports it).",
		}, []string{"queue", "state"}),
		OldestDue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spool_queue_oldest_due_age_seconds", Help: "Age of the oldest task that is due but not started, by queue (leader only; 0 when none is waiting).",
		}, []string{"queue"}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spool_queue_paused", Help: "1 when the queue is paused (leader only), so stall alerts can ignore paused queues.",
		}, []string{"queue"}),
		LogDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "spool_log_lines_dropped_total", Help: "Log lines dropped because stdout could not keep up."}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_http_requests_total", Help: "API requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spool_http_request_duration_seconds", Help: "API request duration by route template.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		DestinationLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spool_destination_limit", Help: "Requests this process may have in flight to the destination now: its share of the adaptive limit.",
		}, []string{"destination"}),
		DestinationInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spool_destination_in_flight", Help: "Requests in flight from this process to the destination.",
		}, []string{"destination"}),
		DestinationBreakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spool_destination_breaker_open", Help: "1 while the destination's circuit breaker is open or half open (tasks wait without spending attempts).",
		}, []string{"destination"}),
		DestinationRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_destination_requests_total", Help: "Requests sent to the destination, by outcome: answered, refused (429, 503), failed (other 5xx, timeouts, connection errors).",
		}, []string{"destination", "outcome"}),
		DestinationDeferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_destination_deferred_total", Help: "Tasks deferred without spending an attempt, by reason: busy (limit reached), open (circuit breaker), hold (Retry-After).",
		}, []string{"destination", "reason"}),
		ScheduleRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_schedule_runs_total", Help: "Scheduled runs by schedule and outcome: enqueued, existing (its task was there already), skipped (missed and dropped by the missed policy). Past 100 schedules per process, the others share the label \"other\".",
		}, []string{"schedule", "outcome"}),
		ScheduleLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "spool_schedule_lag_seconds", Help: "Time from a run's scheduled time to its task being enqueued (jitter excluded).",
			Buckets: []float64{.1, .25, .5, 1, 2, 5, 10, 30, 60, 300, 3600},
		}),
		httpInflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "spool_http_requests_in_flight", Help: "API requests being served."}),
		// The name and help promhttp gave it, which served /metrics before
		// expose.go did, so dashboards and alerts keep working.
		handlerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "promhttp_metric_handler_errors_total", Help: "Total number of internal errors encountered by the promhttp metric handler.",
		}, []string{"cause"}),
	}
	m.handlerErrors.WithLabelValues("encoding")
	m.handlerErrors.WithLabelValues("gathering")
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spool_build_info", Help: "Build information; always 1.",
	}, []string{"version", "commit"})
	build.WithLabelValues(version, commit).Set(1)
	r.MustRegister(m.Enqueued, m.Finished, m.DeliveryDuration, m.QueueWait, m.WorkersBusy, m.WorkersMax,
		m.Rescued, m.LeasesLost, m.EnqueueLeased, m.IsLeader, m.QueueDepth, m.OldestDue, m.Paused, m.LogDropped,
		m.DestinationLimit, m.DestinationInFlight, m.DestinationBreakerOpen, m.DestinationRequests, m.DestinationDeferred,
		m.ScheduleRuns, m.ScheduleLag,
		m.httpRequests, m.httpDuration, m.httpInflight, m.handlerErrors, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text exposition format
// (expose.go).
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(m.serveMetrics)
}

// Instrument wraps h with RED metrics labelled by the route template (never
// the raw path, so ids cannot explode the label set).
func (m *Metrics) Instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.httpInflight.Inc()
		defer m.httpInflight.Dec()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		defer func() {
			// Recorded in a defer so a panicking handler counts as the 500
			// the recover middleware outside will answer.
			p := recover()
			code := sw.code
			if p != nil {
				code = http.StatusInternalServerError
			}
			m.httpRequests.WithLabelValues(route, r.Method, strconv.Itoa(code)).Inc()
			m.httpDuration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
			if p != nil {
				panic(p)
			}
		}()
		h.ServeHTTP(sw, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// PoolStats is a database connection pool's state, from either driver.
type PoolStats struct {
	Max, InUse, Idle int
	Acquires         int64         // connections handed out, ever
	Waits            int64         // acquires that had to wait for a free connection
	WaitTime         time.Duration // total time spent waiting
}

// RegisterPool exports a store's pool as spool_db_pool_* metrics, read at
// scrape time.
func (m *Metrics) RegisterPool(stats func() PoolStats) {
	m.Registry.MustRegister(poolCollector(stats))
}

type poolCollector func() PoolStats

var (
	poolMaxDesc   = prometheus.NewDesc("spool_db_pool_max_connections", "Largest number of connections the pool may open.", nil, nil)
	poolConnsDesc = prometheus.NewDesc("spool_db_pool_connections", "Open connections by state (in_use, idle).", []string{"state"}, nil)
	poolAcqDesc   = prometheus.NewDesc("spool_db_pool_acquires_total", "Connections acquired from the pool.", nil, nil)
	poolWaitsDesc = prometheus.NewDesc("spool_db_pool_waits_total", "Acquires that waited for a free connection.", nil, nil)
	poolWaitDesc  = prometheus.NewDesc("spool_db_pool_wait_seconds_total", "Time spent waiting for a free connection.", nil, nil)
)

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolMaxDesc
	ch <- poolConnsDesc
	ch <- poolAcqDesc
	ch <- poolWaitsDesc
	ch <- poolWaitDesc
}

func (f poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := f()
	ch <- prometheus.MustNewConstMetric(poolMaxDesc, prometheus.GaugeValue, float64(s.Max))
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(s.InUse), "in_use")
	ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(s.Idle), "idle")
	ch <- prometheus.MustNewConstMetric(poolAcqDesc, prometheus.CounterValue, float64(s.Acquires))
	ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(s.Waits))
	ch <- prometheus.MustNewConstMetric(poolWaitDesc, prometheus.CounterValue, s.WaitTime.Seconds())
}
