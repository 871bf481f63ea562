package telemetry_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/spoolhq/spool/internal/telemetry"
)

// spanRecorder is a Tracing over an SDK provider that exports synchronously
// to memory, so a span is readable as soon as the request returns.
func spanRecorder(t *testing.T) (*telemetry.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return telemetry.NewTracingWith(tp), exp
}

// onlySpan returns the single span exp holds.
func onlySpan(t *testing.T, exp *tracetest.InMemoryExporter) tracetest.SpanStub {
	t.Helper()
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans exported, want 1: %v", len(spans), spans)
	}
	return spans[0]
}

// TestInstrumentServerSpan: a request over a real loopback connection gets
// one server span named by the route template, continuing the caller's
// traceparent, with the HTTP semantic-convention attributes, never the
// query string, and the span in the handler's context.
func TestInstrumentServerSpan(t *testing.T) {
	t.Parallel()
	tr, exp := spanRecorder(t)
	var inHandler trace.SpanContext
	srv := httptest.NewServer(tr.Instrument(enqueueRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inHandler = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusCreated)
	})))
	t.Cleanup(srv.Close)

	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, err := http.NewRequest("POST", srv.URL+"/v1/queues/emails/tasks?token=s3cret", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	req.Header.Set("User-Agent", "spool-test/1.0")
	req.Header.Set("X-Forwarded-For", " 203.0.113.7 , 10.0.0.1")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d", resp.StatusCode)
	}

	s := onlySpan(t, exp)
	if s.Name != enqueueRoute || s.SpanKind != trace.SpanKindServer {
		t.Errorf("span %q kind %v, want %q server", s.Name, s.SpanKind, enqueueRoute)
	}
	if s.SpanContext.TraceID().String() != callerTrace || s.Parent.SpanID().String() != callerSpan || !s.Parent.IsRemote() {
		t.Errorf("span trace %s parent %s (remote %v), want the caller's %s %s", s.SpanContext.TraceID(), s.Parent.SpanID(), s.Parent.IsRemote(), callerTrace, callerSpan)
	}
	if !inHandler.Equal(s.SpanContext) {
		t.Errorf("handler's context holds span %s, want the server span %s", inHandler.SpanID(), s.SpanContext.SpanID())
	}
	if s.Status.Code != codes.Unset {
		t.Errorf("status %v, want Unset for a 201", s.Status)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	wantPort, _ := strconv.Atoi(port)
	for key, want := range map[string]any{
		"http.request.method":       "POST",
		"http.route":                "/v1/queues/{queue}/tasks",
		"url.path":                  "/v1/queues/emails/tasks",
		"url.scheme":                "http",
		"server.address":            "127.0.0.1",
		"server.port":               int64(wantPort),
		"network.protocol.version":  "1.1",
		"network.peer.address":      "127.0.0.1",
		"client.address":            "203.0.113.7",
		"user_agent.original":       "spool-test/1.0",
		"http.response.status_code": int64(http.StatusCreated),
	} {
		if got := attr(s, key).AsInterface(); got != want {
			t.Errorf("%s = %v (%T), want %v (%T)", key, got, got, want, want)
		}
	}
	for _, key := range []string{"error.type", "http.request.method_original"} {
		if v := attr(s, key); v.Type() != 0 {
			t.Errorf("%s = %v, want it absent", key, v.String())
		}
	}
	for _, kv := range s.Attributes {
		if strings.Contains(kv.Value.String(), "s3cret") {
			t.Errorf("attribute %s carries the query string: %q", kv.Key, kv.Value.String())
		}
	}
}

// TestInstrumentStatus: 5xx answers (and a handler that panics before
// writing) mark the span as an error with error.type; 4xx, 2xx and a
// handler that writes nothing (an implicit 200) do not; an informational
// 1xx is not taken for the final status.
func TestInstrumentStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		handler   func(http.ResponseWriter)
		panics    bool
		wantCode  int64
		wantError string // error.type; "" = absent, status Unset
	}{
		{"503", func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }, false, 503, "503"},
		{"500 after 103", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusInternalServerError)
		}, false, 500, "500"},
		{"404", func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }, false, 404, ""},
		{"body only", func(w http.ResponseWriter) { _, _ = io.WriteString(w, "ok") }, false, 200, ""},
		{"nothing written", func(http.ResponseWriter) {}, false, 200, ""},
		{"panic before writing", func(http.ResponseWriter) { panic("boom") }, true, 500, "500"},
		{"panic after 200", func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK); panic("boom") }, true, 200, "panic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr, exp := spanRecorder(t)
			h := tr.Instrument("GET /v1/tasks/{id}", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { tc.handler(w) }))
			func() {
				defer func() {
					if p := recover(); (p != nil) != tc.panics {
						t.Errorf("recovered %v, want a panic: %v", p, tc.panics)
					}
				}()
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/tasks/0192", nil))
			}()
			s := onlySpan(t, exp)
			if got := attr(s, "http.response.status_code").AsInt64(); got != tc.wantCode {
				t.Errorf("http.response.status_code %d, want %d", got, tc.wantCode)
			}
			if got := attr(s, "error.type").AsString(); got != tc.wantError {
				t.Errorf("error.type %q, want %q", got, tc.wantError)
			}
			wantStatus := codes.Unset
			if tc.wantError != "" {
				wantStatus = codes.Error
			}
			if s.Status.Code != wantStatus {
				t.Errorf("span status %v, want %v", s.Status, wantStatus)
			}
		})
	}
}

// TestInstrumentUnmatched: requests no route matched are named by the bare
// method and have no http.route; a nonstandard method becomes "_OTHER"
// (and the span "HTTP"), so clients cannot mint names or attribute values.
func TestInstrumentUnmatched(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ method, name, attrMethod, original string }{
		{"DELETE", "DELETE", "DELETE", ""},
		{"FROBNICATE", "HTTP", "_OTHER", "FROBNICATE"},
	} {
		tr, exp := spanRecorder(t)
		h := tr.Instrument("unmatched", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }))
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tc.method, "/nope", nil))
		s := onlySpan(t, exp)
		if s.Name != tc.name {
			t.Errorf("%s: span name %q, want %q", tc.method, s.Name, tc.name)
		}
		if v := attr(s, "http.route"); v.Type() != 0 {
			t.Errorf("%s: http.route %q, want it absent", tc.method, v.String())
		}
		if got := attr(s, "http.request.method").AsString(); got != tc.attrMethod {
			t.Errorf("%s: http.request.method %q, want %q", tc.method, got, tc.attrMethod)
		}
		if got := attr(s, "http.request.method_original").AsString(); got != tc.original {
			t.Errorf("%s: http.request.method_original %q, want %q", tc.method, got, tc.original)
		}
	}
}

// TestInstrumentStreams: through the middleware a handler can still flush
// (http.Flusher and http.ResponseController, which also reaches the
// connection's write deadline through Unwrap): the client reads the first
// chunk while the handler is still waiting to write the second.
func TestInstrumentStreams(t *testing.T) {
	t.Parallel()
	for _, viaController := range []bool{false, true} {
		tr, exp := spanRecorder(t)
		release := make(chan struct{})
		handlerErr := make(chan error, 1)
		srv := httptest.NewServer(tr.Instrument("GET /v1/stream", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			var err error
			_, _ = io.WriteString(w, "first\n")
			if viaController {
				rc := http.NewResponseController(w)
				err = errors.Join(rc.SetWriteDeadline(time.Now().Add(10*time.Second)), rc.Flush())
			} else if f, ok := w.(http.Flusher); ok {
				f.Flush()
			} else {
				err = errors.New("the writer is not an http.Flusher")
			}
			handlerErr <- err
			<-release
			_, _ = io.WriteString(w, "second\n")
		})))
		// Bounded: if the first chunk is not flushed, the response headers
		// never arrive while the handler waits.
		client := srv.Client()
		client.Timeout = 5 * time.Second
		var line string
		resp, err := client.Get(srv.URL + "/v1/stream")
		if err == nil {
			line, err = bufio.NewReader(resp.Body).ReadString('\n')
		}
		close(release)
		if err := <-handlerErr; err != nil {
			t.Errorf("controller %v: %v", viaController, err)
		}
		if err != nil || line != "first\n" {
			t.Errorf("controller %v: first chunk %q, %v (not flushed before the handler finished)", viaController, line, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
		srv.Close() // waits for the handler, so the span has ended
		if got := attr(onlySpan(t, exp), "http.response.status_code").AsInt64(); got != http.StatusOK {
			t.Errorf("controller %v: status code %d, want 200", viaController, got)
		}
	}
}

// TestInstrumentOffPassesTraceparent: with tracing off the handler's
// context still holds the caller's trace context, so an enqueue stores it.
func TestInstrumentOffPassesTraceparent(t *testing.T) {
	t.Parallel()
	tr := telemetry.NewTracingWith(nil)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	var got trace.SpanContext
	h := tr.Instrument(enqueueRoute, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		got = trace.SpanContextFromContext(r.Context())
	}))
	req := httptest.NewRequest("POST", "/v1/queues/q/tasks", nil)
	req.Header.Set("Traceparent", tp)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if got.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || got.SpanID().String() != "b7ad6b7169203331" || !got.IsSampled() {
		t.Errorf("handler's span context %v, want the caller's %s", got, tp)
	}
}
