package telemetry

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// testMetrics is Spool's registry with every metric type in use, label
// values that need escaping, special values and a timestamped sample.
func testMetrics(t *testing.T) *Metrics {
	t.Helper()
	m := NewMetrics("v1.2.3", "abc\"def")
	m.Enqueued.WithLabelValues("plain").Add(3)
	m.Enqueued.WithLabelValues("quote\" back\\slash new\nline ünï").Inc()
	m.DeliveryDuration.WithLabelValues("q").Observe(0.3)
	m.DeliveryDuration.WithLabelValues("q").Observe(1e6)
	m.QueueWait.WithLabelValues("q").Observe(0)
	m.OldestDue.WithLabelValues("nan").Set(math.NaN())
	m.OldestDue.WithLabelValues("inf").Set(math.Inf(-1))
	m.OldestDue.WithLabelValues("small").Set(1.5e-9)
	m.OldestDue.WithLabelValues("minus one").Set(-1)
	m.WorkersMax.Set(100)
	summary := prometheus.NewSummaryVec(prometheus.SummaryOpts{
		Name: "test_summary_seconds", Help: "A summary\\with a\nnewline in its help.",
		Objectives: map[float64]float64{0.5: 0.05, 0.99: 0.001},
	}, []string{"kind"})
	summary.WithLabelValues("a").Observe(2)
	untyped := prometheus.NewUntypedFunc(prometheus.UntypedOpts{Name: "test_untyped", Help: "An untyped value."}, func() float64 { return 42 })
	stamped := prometheus.NewMetricWithTimestamp(time.Unix(1700000000, 123e6),
		prometheus.MustNewConstMetric(prometheus.NewDesc("test_stamped", "A timestamped gauge.", nil, nil), prometheus.GaugeValue, 7))
	constHist := prometheus.MustNewConstHistogram(prometheus.NewDesc("test_const_hist", "Buckets without +Inf.", []string{"x"}, nil),
		5, 12.5, map[float64]uint64{1: 2, 10: 4}, "y")
	m.Registry.MustRegister(summary, untyped, constCollector{stamped, constHist})
	m.RegisterPool(func() PoolStats { return PoolStats{Max: 10, InUse: 2, Idle: 3, WaitTime: 1500 * time.Millisecond} })
	return m
}

type constCollector []prometheus.Metric

func (c constCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c {
		ch <- m.Desc()
	}
}

func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c {
		ch <- m
	}
}

// uncheckedCollector describes nothing, so the registry checks what it
// collects only at Gather; it collects only while on.
type uncheckedCollector struct {
	on      atomic.Bool
	metrics []prometheus.Metric
}

func (*uncheckedCollector) Describe(chan<- *prometheus.Desc) {}

func (c *uncheckedCollector) Collect(ch chan<- prometheus.Metric) {
	if c.on.Load() {
		for _, m := range c.metrics {
			ch <- m
		}
	}
}

// TestExpositionMatchesExpfmt: what /metrics writes is byte for byte
// what promhttp's text encoder (expfmt) writes for the same gathered
// families, for every family of Spool's registry.
func TestExpositionMatchesExpfmt(t *testing.T) {
	t.Parallel()
	families, err := testMetrics(t).Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]bool{}
	for _, mf := range families {
		var want, got bytes.Buffer
		if _, err := expfmt.MetricFamilyToText(&want, mf); err != nil {
			t.Fatal(err)
		}
		bw := bufio.NewWriter(&got)
		writeFamily(bw, mf)
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%s:\n got %q\nwant %q", mf.GetName(), got.String(), want.String())
		}
		types[mf.GetType().String()] = true
		if !model.LegacyValidation.IsValidMetricName(mf.GetName()) {
			t.Errorf("%s is not a legacy metric name, which writeFamily assumes", mf.GetName())
		}
	}
	for _, typ := range []string{"COUNTER", "GAUGE", "HISTOGRAM", "SUMMARY", "UNTYPED"} {
		if !types[typ] {
			t.Errorf("no %s family was compared", typ)
		}
	}
}

// TestMetricsHandler: a scrape gets the text format, gzipped when asked,
// that Prometheus's own parser reads back; a registry that cannot gather
// answers 500 and is counted.
func TestMetricsHandler(t *testing.T) {
	t.Parallel()
	m := testMetrics(t)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	for _, enc := range []string{"", "gzip", "deflate, gzip;q=0.5", "gzip;q=0"} {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("Accept-Encoding", enc) // set explicitly: no transparent decoding
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		gz := resp.Header.Get("Content-Encoding") == "gzip"
		if want := enc == "gzip" || enc == "deflate, gzip;q=0.5"; gz != want {
			t.Errorf("Accept-Encoding %q: gzip %v, want %v", enc, gz, want)
		}
		if gz {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4; charset=utf-8; escaping=underscores" {
			t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		parsed, err := parser.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("Accept-Encoding %q: the text parser rejects the answer: %v\n%s", enc, err, body)
		}
		for _, name := range []string{"spool_tasks_enqueued_total", "spool_delivery_duration_seconds", "go_gc_duration_seconds",
			"process_cpu_seconds_total", "spool_build_info", "spool_db_pool_connections", "promhttp_metric_handler_errors_total"} {
			if parsed[name] == nil {
				t.Errorf("Accept-Encoding %q: %s missing", enc, name)
			}
		}
	}

	// A collector sending the same series twice makes Gather fail.
	dup := prometheus.MustNewConstMetric(prometheus.NewDesc("test_dup", "Twice.", nil, nil), prometheus.GaugeValue, 1)
	bad := &uncheckedCollector{metrics: []prometheus.Metric{dup, dup}}
	bad.on.Store(true)
	m.Registry.MustRegister(bad)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "An error has occurred while serving metrics") {
		t.Errorf("gather failure: %d %s", rec.Code, rec.Body)
	}
	bad.on.Store(false)
	rec = httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `promhttp_metric_handler_errors_total{cause="gathering"} 1`) {
		t.Errorf("the gathering error was not counted:\n%s", rec.Body)
	}
}
