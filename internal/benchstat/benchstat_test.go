package benchstat

import (
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // reversed: Summarize must sort
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := Summarize(ds)
	want := Latency{N: 100, MeanMS: 50.5, P50MS: 50, P95MS: 95, P99MS: 99, MaxMS: 100}
	if l != want {
		t.Fatalf("Summarize = %+v, want %+v", l, want)
	}
	if got := Summarize(nil); got != (Latency{}) {
		t.Fatalf("Summarize(nil) = %+v", got)
	}
	one := Summarize([]time.Duration{1500 * time.Microsecond})
	if one.P50MS != 1.5 || one.P99MS != 1.5 || one.MaxMS != 1.5 {
		t.Fatalf("one value: %+v", one)
	}
}

func TestPercentileNearestRank(t *testing.T) {
	t.Parallel()
	s := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{1, 1}, {10, 1}, {11, 2}, {50, 5}, {90, 9}, {99, 10}, {100, 10}, {0, 1}} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
}

func TestSpreadOf(t *testing.T) {
	t.Parallel()
	xs := []float64{3, 1, math.NaN(), 2}
	s := SpreadOf(xs)
	if s != (Spread{N: 3, Median: 2, Min: 1, Max: 3}) {
		t.Fatalf("odd: %+v", s)
	}
	if xs[0] != 3 {
		t.Fatal("SpreadOf modified its input")
	}
	if s := SpreadOf([]float64{4, 1, 2, 3}); s.Median != 2.5 || s.Min != 1 || s.Max != 4 {
		t.Fatalf("even: %+v", s)
	}
	if s := SpreadOf(nil); !math.IsNaN(s.Median) || s.N != 0 {
		t.Fatalf("empty: %+v", s)
	}
}

func TestRecorder(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	r := NewRecorder(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.WriteHeader(status)
	}))
	clock := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return clock }
	send := func(id string) {
		req := httptest.NewRequest(http.MethodPost, "/hook", nil)
		if id != "" {
			req.Header.Set("webhook-id", id)
		}
		r.ServeHTTP(httptest.NewRecorder(), req)
	}

	status = http.StatusInternalServerError
	send("a") // refused: not a delivery yet
	if _, ok := r.Received("a"); ok {
		t.Fatal("a 500 answer was recorded")
	}
	status = http.StatusOK
	clock = clock.Add(time.Second)
	send("a")
	first := clock
	clock = clock.Add(time.Second)
	send("a") // duplicate keeps the first time
	send("")  // no id: not recorded
	if at, ok := r.Received("a"); !ok || !at.Equal(first) {
		t.Fatalf("Received(a) = %v %v, want %v", at, ok, first)
	}
	if r.Len() != 1 || r.Duplicates() != 1 {
		t.Fatalf("Len %d Duplicates %d, want 1 1", r.Len(), r.Duplicates())
	}
}
