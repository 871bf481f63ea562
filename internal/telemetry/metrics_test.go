package telemetry

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestInstrumentCountsByRouteTemplate(t *testing.T) {
	m := NewMetrics("v", "c")
	h := m.Instrument("GET /v1/tasks/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
	}))
	for _, id := range []string{"a", "b", "c"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/tasks/"+id, nil))
	}
	if got := testutil.ToFloat64(m.httpRequests.WithLabelValues("GET /v1/tasks/{id}", "GET", "404")); got != 3 {
		t.Errorf("404s counted %v, want 3 under the route template", got)
	}
	if n := testutil.CollectAndCount(m.httpRequests); n != 1 {
		t.Errorf("%d series: raw paths leaked into labels", n)
	}
}

func TestInstrumentCountsPanicsAs500(t *testing.T) {
	m := NewMetrics("v", "c")
	h := m.Instrument("POST /x", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic was swallowed; the recover middleware outside must still see it")
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/x", nil))
	}()
	if got := testutil.ToFloat64(m.httpRequests.WithLabelValues("POST /x", "POST", "500")); got != 1 {
		t.Errorf("panicking request counted %v times as 500, want 1", got)
	}
}
