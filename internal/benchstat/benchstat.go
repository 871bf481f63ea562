// Package benchstat summarises benchmark measurements for `spool bench` and
// the comparison program in bench/river: latency percentiles, the median
// and range of repeated runs, and a Recorder that notes when each
// webhook-id first reached a receiver, so enqueue→delivery latency can be
// computed per task.
package benchstat

import (
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/spoolhq/spool/webhook"
)

// Latency summarises a set of durations, in milliseconds so the JSON reads
// without unit conversions.
type Latency struct {
	N      int     `json:"n"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P95MS  float64 `json:"p95_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Summarize returns the nearest-rank percentiles of ds. It sorts ds in
// place. An empty ds gives the zero Latency.
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Latency{
		N:      len(ds),
		MeanMS: ms(sum / time.Duration(len(ds))),
		P50MS:  ms(Percentile(ds, 50)),
		P95MS:  ms(Percentile(ds, 95)),
		P99MS:  ms(Percentile(ds, 99)),
		MaxMS:  ms(ds[len(ds)-1]),
	}
}

func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest value at or below which p% of the values lie. Unlike
// interpolation it always returns a value that was measured.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Spread is the median and range of one figure over repeated runs.
type Spread struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// SpreadOf returns the median (the mean of the middle two for an even
// count), minimum and maximum of xs, ignoring NaNs. xs is not modified.
func SpreadOf(xs []float64) Spread {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Spread{N: n, Median: med, Min: v[0], Max: v[n-1]}
}

// Recorder wraps a receiver (typically a sink.Sink) and notes, per
// webhook-id, the time the first request that was answered 2xx arrived.
// The time is taken before the body is read, so it is the moment the
// delivery reached the receiver. It is safe for concurrent use.
type Recorder struct {
	next http.Handler
	now  func() time.Time

	mu    sync.Mutex
	first map[string]time.Time
	dups  int64
}

// NewRecorder returns a Recorder in front of next.
func NewRecorder(next http.Handler) *Recorder {
	return &Recorder{next: next, now: time.Now, first: make(map[string]time.Time)}
}

// ServeHTTP passes the request on and records its arrival if it was a 2xx
// delivery with a webhook-id.
func (r *Recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := r.now()
	id := req.Header.Get(webhook.HeaderID)
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	r.next.ServeHTTP(sw, req)
	if id == "" || sw.status < 200 || sw.status > 299 {
		return
	}
	r.mu.Lock()
	if _, ok := r.first[id]; ok {
		r.dups++
	} else {
		r.first[id] = at
	}
	r.mu.Unlock()
}

// Received returns when id first arrived with a 2xx answer.
func (r *Recorder) Received(id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.first[id]
	return t, ok
}

// Len returns how many distinct webhook-ids were received.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.first)
}

// Duplicates returns how many 2xx deliveries repeated an id already seen.
func (r *Recorder) Duplicates() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dups
}

// statusWriter remembers the status the wrapped handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
