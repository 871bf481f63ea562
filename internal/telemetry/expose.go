package telemetry

import (
	"bufio"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"

	dto "github.com/prometheus/client_model/go"
)

// This file serves /metrics. promhttp, with the exposition-format package
// it needs (expfmt, the protobuf delimited and text encoders), cost 0.3 MB
// of the binary to offer, beyond the text format, the protobuf format,
// which Prometheus asks for only to scrape native histograms, and
// OpenMetrics, which promhttp keeps off by default. Spool has neither, so
// it writes the Prometheus text format (version 0.0.4) of the registry's
// Gather itself, byte for byte as promhttp does (TestExpositionMatchesExpfmt).

// textContentType is what promhttp answers to a scraper asking for text.
const textContentType = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"

var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// serveMetrics answers a scrape: 500 with the error when the registry
// cannot gather (as promhttp's default HTTPErrorOnError), else every
// metric family, gzipped when the scraper accepts it. Failures are counted
// in promhttp_metric_handler_errors_total, as promhttp counted them.
func (m *Metrics) serveMetrics(w http.ResponseWriter, r *http.Request) {
	families, err := m.Registry.Gather()
	if err != nil {
		m.handlerErrors.WithLabelValues("gathering").Inc()
		http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", textContentType)
	h.Add("Vary", "Accept-Encoding")
	var out io.Writer = w
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(w)
		defer func() {
			if zw.Close() != nil {
				m.handlerErrors.WithLabelValues("encoding").Inc()
			}
			gzipWriters.Put(zw)
		}()
		out = zw
	}
	bw := bufio.NewWriter(out)
	for _, mf := range families {
		writeFamily(bw, mf)
	}
	if bw.Flush() != nil {
		// The scraper went away; nothing to answer.
		m.handlerErrors.WithLabelValues("encoding").Inc()
	}
}

// acceptsGzip reports whether an Accept-Encoding header lists gzip with a
// non-zero quality.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				return false
			}
		}
		return true
	}
	return false
}

// writeFamily writes one metric family in the text format, as
// expfmt.MetricFamilyToText does: HELP, TYPE, then one line per sample.
// Spool's metric and label names are all valid legacy names, written as
// they are. Errors stick in w, which the caller checks once.
func writeFamily(w *bufio.Writer, mf *dto.MetricFamily) {
	name := mf.GetName()
	if name == "" || len(mf.Metric) == 0 {
		return
	}
	if mf.Help != nil {
		w.WriteString("# HELP ")
		w.WriteString(name)
		w.WriteByte(' ')
		helpEscaper.WriteString(w, mf.GetHelp())
		w.WriteByte('\n')
	}
	typ := mf.GetType()
	w.WriteString("# TYPE ")
	w.WriteString(name)
	switch typ {
	case dto.MetricType_COUNTER:
		w.WriteString(" counter\n")
	case dto.MetricType_GAUGE:
		w.WriteString(" gauge\n")
	case dto.MetricType_SUMMARY:
		w.WriteString(" summary\n")
	case dto.MetricType_UNTYPED:
		w.WriteString(" untyped\n")
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		// The text format has no gauge histogram: written as a histogram.
		w.WriteString(" histogram\n")
	}
	for _, m := range mf.Metric {
		switch typ {
		case dto.MetricType_COUNTER:
			writeSample(w, name, "", m, "", 0, m.GetCounter().GetValue())
		case dto.MetricType_GAUGE:
			writeSample(w, name, "", m, "", 0, m.GetGauge().GetValue())
		case dto.MetricType_UNTYPED:
			writeSample(w, name, "", m, "", 0, m.GetUntyped().GetValue())
		case dto.MetricType_SUMMARY:
			s := m.GetSummary()
			for _, q := range s.GetQuantile() {
				writeSample(w, name, "", m, "quantile", q.GetQuantile(), q.GetValue())
			}
			writeSample(w, name, "_sum", m, "", 0, s.GetSampleSum())
			writeSample(w, name, "_count", m, "", 0, float64(s.GetSampleCount()))
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := m.GetHistogram()
			inf := false
			for _, b := range h.GetBucket() {
				v := b.GetCumulativeCountFloat()
				if v == 0 {
					v = float64(b.GetCumulativeCount())
				}
				writeSample(w, name, "_bucket", m, "le", b.GetUpperBound(), v)
				inf = inf || math.IsInf(b.GetUpperBound(), +1)
			}
			count := h.GetSampleCountFloat()
			if count == 0 {
				count = float64(h.GetSampleCount())
			}
			if !inf {
				writeSample(w, name, "_bucket", m, "le", math.Inf(+1), count)
			}
			writeSample(w, name, "_sum", m, "", 0, h.GetSampleSum())
			writeSample(w, name, "_count", m, "", 0, count)
		}
	}
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// writeSample writes `name+suffix{labels,extra="extraValue"} value [ts]`.
func writeSample(w *bufio.Writer, name, suffix string, m *dto.Metric, extra string, extraValue, value float64) {
	w.WriteString(name)
	w.WriteString(suffix)
	sep := byte('{')
	for _, lp := range m.GetLabel() {
		w.WriteByte(sep)
		w.WriteString(lp.GetName())
		w.WriteString(`="`)
		labelEscaper.WriteString(w, lp.GetValue())
		w.WriteByte('"')
		sep = ','
	}
	if extra != "" {
		w.WriteByte(sep)
		w.WriteString(extra)
		w.WriteString(`="`)
		writeFloat(w, extraValue)
		w.WriteByte('"')
		sep = ','
	}
	if sep == ',' {
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	writeFloat(w, value)
	if m.TimestampMs != nil {
		w.WriteByte(' ')
		w.Write(strconv.AppendInt(w.AvailableBuffer(), m.GetTimestampMs(), 10))
	}
	w.WriteByte('\n')
}

// writeFloat writes a value as the text format spells it.
func writeFloat(w *bufio.Writer, f float64) {
	switch {
	case f == 1:
		w.WriteByte('1')
	case f == 0:
		w.WriteByte('0')
	case f == -1:
		w.WriteString("-1")
	case math.IsNaN(f):
		w.WriteString("NaN")
	case math.IsInf(f, +1):
		w.WriteString("+Inf")
	case math.IsInf(f, -1):
		w.WriteString("-Inf")
	default:
		w.Write(strconv.AppendFloat(w.AvailableBuffer(), f, 'g', -1, 64))
	}
}
