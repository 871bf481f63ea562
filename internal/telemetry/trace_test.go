package telemetry_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/spoolhq/spool/internal/api"
	"github.com/spoolhq/spool/internal/dispatch"
	"github.com/spoolhq/spool/internal/otlptest"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/telemetry"
)

// These tests run the real API handler and the real dispatcher in-process on
// the real embedded store, with a real receiver on loopback, and read the
// spans from an in-memory exporter.

const enqueueRoute = "POST /v1/queues/{queue}/tasks"

// traceRig is an API handler and a running dispatcher sharing one store and
// one Tracing, and a receiver that reports the traceparent of each request.
type traceRig struct {
	t        *testing.T
	api      http.Handler
	received chan string // traceparent header of each delivered request
	target   string
}

func newTraceRig(t *testing.T, tr *telemetry.Tracing) *traceRig {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	rig := &traceRig{t: t, received: make(chan string, 16)}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.received <- r.Header.Get("Traceparent")
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	rig.target = receiver.URL + "/hook"

	rig.api, err = api.New(api.Config{Store: st, Instrument: tr.Instrument, TracerProvider: tr.TracerProvider()})
	if err != nil {
		t.Fatal(err)
	}
	d := dispatch.New(dispatch.Config{
		Store:          st,
		Client:         dispatch.NewHTTPClient(dispatch.Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
		Workers:        4,
		LeaseDuration:  5 * time.Second,
		PollInterval:   20 * time.Millisecond,
		TracerProvider: tr.TracerProvider(),
	})
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		d.Stop(sctx)
	})
	return rig
}

// enqueue posts one task through the API handler, with the caller's
// traceparent when tp is not empty, and returns the task id.
func (rig *traceRig) enqueue(tp string) string {
	rig.t.Helper()
	body := `{"target":{"url":"` + rig.target + `"},"payload":{"n":1}}`
	req := httptest.NewRequest("POST", "/v1/queues/traced/tasks", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tp != "" {
		req.Header.Set("Traceparent", tp)
	}
	rec := httptest.NewRecorder()
	rig.api.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		rig.t.Fatalf("enqueue: %d %s", rec.Code, rec.Body)
	}
	var out struct{ ID string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.ID == "" {
		rig.t.Fatalf("enqueue reply %s: %v", rec.Body, err)
	}
	return out.ID
}

// delivered waits for the receiver's next request and returns its traceparent.
func (rig *traceRig) delivered() string {
	rig.t.Helper()
	select {
	case tp := <-rig.received:
		return tp
	case <-time.After(10 * time.Second):
		rig.t.Fatal("no delivery within 10s")
		return ""
	}
}

// parseTraceparent splits a version-00 W3C traceparent.
func parseTraceparent(t *testing.T, tp string) (traceID, spanID string) {
	t.Helper()
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		t.Fatalf("malformed traceparent %q", tp)
	}
	return parts[1], parts[2]
}

// spanSource is where a test reads the spans ended so far (the SDK's
// in-memory exporter).
type spanSource interface{ GetSpans() tracetest.SpanStubs }

// spansOf waits until exp holds, for trace id, every span named in names
// (and the lease span linking to it), then returns the trace's spans by
// name, and the lease span.
func spansOf(t *testing.T, exp spanSource, traceID trace.TraceID, names ...string) (map[string]tracetest.SpanStub, tracetest.SpanStub) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		byName := map[string]tracetest.SpanStub{}
		var lease tracetest.SpanStub
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == traceID {
				byName[s.Name] = s
			}
			if s.Name == "spool.lease" {
				for _, l := range s.Links {
					if l.SpanContext.TraceID() == traceID {
						lease = s
					}
				}
			}
		}
		missing := []string{}
		for _, n := range names {
			if _, ok := byName[n]; !ok {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 && lease.Name != "" {
			return byName, lease
		}
		if time.Now().After(deadline) {
			var all []string
			for _, s := range exp.GetSpans() {
				all = append(all, s.Name+" "+s.SpanContext.TraceID().String())
			}
			t.Fatalf("trace %s: missing spans %v (or the lease span linking to it); have %v", traceID, missing, all)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestTraceEnqueueToDelivery: with tracing on, one trace runs from the API
// request through the enqueue span to the delivery span and its HTTP client
// span; the lease span links to the task's trace; the receiver's
// traceparent is the client span's, in the caller's trace when the caller
// sent one and in the API request's trace otherwise. Over the SDK's
// provider with an in-memory exporter; TestOTLPExport and the end-to-end
// test in cmd/spool take spans through the OTLP exporters.
func TestTraceEnqueueToDelivery(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	testTraceEnqueueToDelivery(t, telemetry.NewTracingWith(tp), exp)
}

func testTraceEnqueueToDelivery(t *testing.T, tr *telemetry.Tracing, exp spanSource) {
	rig := newTraceRig(t, tr)

	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	const callerSpan = "00f067aa0ba902b7"
	for _, tc := range []struct {
		name   string
		header string
	}{
		{"no caller context", ""},
		{"caller traceparent", "00-" + callerTrace + "-" + callerSpan + "-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			taskID := rig.enqueue(tc.header)
			got := rig.delivered()
			gotTrace, gotSpan := parseTraceparent(t, got)
			if tc.header != "" && gotTrace != callerTrace {
				t.Errorf("receiver's trace id %s, want the caller's %s", gotTrace, callerTrace)
			}
			traceID, err := trace.TraceIDFromHex(gotTrace)
			if err != nil {
				t.Fatal(err)
			}
			spans, lease := spansOf(t, exp, traceID, enqueueRoute, "spool.enqueue", "spool.deliver", "POST")
			server, enq, del, client := spans[enqueueRoute], spans["spool.enqueue"], spans["spool.deliver"], spans["POST"]

			// The parent chain: caller → API request → enqueue → delivery → client.
			if tc.header != "" {
				if server.Parent.SpanID().String() != callerSpan || !server.Parent.IsRemote() {
					t.Errorf("server span's parent %s, want the caller's remote span %s", server.Parent.SpanID(), callerSpan)
				}
			} else if server.Parent.IsValid() {
				t.Errorf("server span has parent %s, want a root", server.Parent.SpanID())
			}
			for _, link := range []struct {
				what          string
				child, parent tracetest.SpanStub
			}{
				{"enqueue ← API request", enq, server},
				{"delivery ← enqueue", del, enq},
				{"client ← delivery", client, del},
			} {
				if link.child.Parent.SpanID() != link.parent.SpanContext.SpanID() {
					t.Errorf("%s: parent span %s, want %s", link.what, link.child.Parent.SpanID(), link.parent.SpanContext.SpanID())
				}
			}
			if gotSpan != client.SpanContext.SpanID().String() {
				t.Errorf("receiver's parent span %s, want the client span %s", gotSpan, client.SpanContext.SpanID())
			}

			if server.SpanKind != trace.SpanKindServer || enq.SpanKind != trace.SpanKindProducer ||
				del.SpanKind != trace.SpanKindConsumer || client.SpanKind != trace.SpanKindClient {
				t.Errorf("span kinds: server %v enqueue %v deliver %v client %v", server.SpanKind, enq.SpanKind, del.SpanKind, client.SpanKind)
			}
			if v := attr(enq, "spool.task.id").AsString(); v != taskID {
				t.Errorf("enqueue span spool.task.id %q, want %s", v, taskID)
			}
			if v := attr(del, "spool.task.id").AsString(); v != taskID {
				t.Errorf("delivery span spool.task.id %q, want %s", v, taskID)
			}
			if v := attr(del, "spool.outcome").AsString(); v != "succeeded" {
				t.Errorf("delivery span spool.outcome %q, want succeeded", v)
			}
			if v := attr(client, "http.response.status_code").AsInt64(); v != http.StatusNoContent {
				t.Errorf("client span status code %d, want 204", v)
			}
			for _, kv := range client.Attributes {
				if strings.Contains(kv.Value.String(), "/hook") {
					t.Errorf("client span attribute %s carries the target path: %q", kv.Key, kv.Value.String())
				}
			}

			// The lease span links to the enqueue span, and the delivery
			// links back to it.
			linked := false
			for _, l := range lease.Links {
				linked = linked || l.SpanContext.SpanID() == enq.SpanContext.SpanID()
			}
			if !linked {
				t.Errorf("lease span does not link to the enqueue span %s", enq.SpanContext.SpanID())
			}
			if n := attr(lease, "spool.lease.count").AsInt64(); n < 1 {
				t.Errorf("lease span spool.lease.count %d", n)
			}
			if len(del.Links) != 1 || del.Links[0].SpanContext.SpanID() != lease.SpanContext.SpanID() {
				t.Errorf("delivery span links %v, want the lease span %s", del.Links, lease.SpanContext.SpanID())
			}
		})
	}
}

// TestTraceOffCarriesCallerTraceparent: with no OTEL_* variables tracing is
// off, yet a caller's traceparent is stored and delivered as it was sent;
// with no context at all the delivery falls back to a traceparent derived
// from the task id.
func TestTraceOffCarriesCallerTraceparent(t *testing.T) {
	t.Parallel()
	tr, err := telemetry.NewTracing(context.Background(), func(string) (string, bool) { return "", false }, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Fatal("tracing on with no OTEL_* variables")
	}
	rig := newTraceRig(t, tr)

	caller := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	rig.enqueue(caller)
	if got := rig.delivered(); got != caller {
		t.Errorf("receiver got traceparent %q, want the caller's %q", got, caller)
	}

	id := rig.enqueue("")
	traceID, _ := parseTraceparent(t, rig.delivered())
	if want := strings.ReplaceAll(id, "-", ""); traceID != want {
		t.Errorf("fallback traceparent trace id %s, want the task id %s", traceID, want)
	}
}

// TestNewTracingEnv: which OTEL_* settings turn tracing on, off, or fail,
// and which exporter runs.
func TestNewTracingEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		env      map[string]string
		exporter string // a part of Exporter(); "" = tracing off
		wantErr  string
		warn     string // a part of a warning logged
	}{
		{"nothing set", nil, "", "", ""},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, "otlp (http/protobuf) http://127.0.0.1:1/v1/traces", "", ""},
		{"endpoint with a path", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example:443/otel/"}, "otlp (http/protobuf) https://otlp.example:443/otel/v1/traces", "", ""},
		{"traces endpoint as is", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/custom"}, "otlp (http/protobuf) http://127.0.0.1:1/custom", "", ""},
		{"exporter otlp alone: the default endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, "otlp (http/protobuf) http://localhost:4318/v1/traces", "", ""},
		{"credentials not shown", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:pw@otlp.example?key=k"}, "otlp (http/protobuf) https://otlp.example/v1/traces?REDACTED", "", ""},
		{"http/protobuf", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "(http/protobuf)", "", ""},
		{"http/json", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "otlp (http/json) http://localhost:4318/v1/traces", "", ""},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317/ignored", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp (grpc) http://127.0.0.1:4317", "", ""},
		{"grpc alone: the default endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp (grpc) http://localhost:4317", "", ""},
		{"traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "(http/protobuf)", "", ""},
		{"protocol alone leaves it off", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "", "", ""},
		{"exporter none wins", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, "", "", ""},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, "", "", ""},
		{"unsupported exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "", "OTEL_TRACES_EXPORTER", ""},
		{"unsupported protocol", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"}, "", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""},
		{"endpoint without a scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}, "", "OTEL_EXPORTER_OTLP_ENDPOINT", ""},
		{"traces endpoint without a scheme", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "otel:4318/v1/traces"}, "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""},
		{"header without a value", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret,authorization"}, "", "OTEL_EXPORTER_OTLP_HEADERS: entry 2", ""},
		{"port mismatch warned", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "(grpc)", "", "port 4318"},
		{"header badly escaped", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "authorization=Bearer%zzs3cret"}, "", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logged := &lockedBuffer{}
			log := slog.New(slog.NewTextHandler(logged, nil))
			env := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			tr, err := telemetry.NewTracing(context.Background(), env, "test", log)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("the error quotes a header value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = tr.Shutdown(ctx)
			}()
			if tr.Enabled() != (tc.exporter != "") || !strings.Contains(tr.Exporter(), tc.exporter) {
				t.Errorf("Enabled() = %v, exporter %q; want %q", tr.Enabled(), tr.Exporter(), tc.exporter)
			}
			if got := logged.String(); tc.warn != "" && !strings.Contains(got, tc.warn) {
				t.Errorf("no warning with %q; log: %s", tc.warn, got)
			}
		})
	}
}

// TestOTLPExport: with OTEL_* pointing at a real OTLP receiver on loopback
// (otlptest: the Collector's protocol, decoded with the official OTLP
// protobuf types), spans made through the Tracing (the API's server span
// and spans started from its provider) reach it at shutdown, through the
// SDK's batch span processor, over OTLP/HTTP as binary protobuf or over
// gRPC: names, kinds, ids, parents, attributes, status, links, the
// resource (service.name, service.version, OTEL_RESOURCE_ATTRIBUTES) and
// the OTEL_EXPORTER_OTLP_HEADERS. The official exporters read the
// process environment, so this test sets it (and cannot run in parallel).
func TestOTLPExport(t *testing.T) {
	for _, tc := range []struct {
		protocol string // OTEL_EXPORTER_OTLP_PROTOCOL; "" = unset
		service  string // OTEL_SERVICE_NAME; "" = unset
		gzip     bool   // OTEL_EXPORTER_OTLP_COMPRESSION=gzip
	}{
		{"", "", false},
		{"http/protobuf", "spool-worker", true},
		{"http/json", "", false},
		{"grpc", "spool-worker", false},
		{"grpc", "", true},
	} {
		t.Run(fmt.Sprintf("protocol=%s,gzip=%v", tc.protocol, tc.gzip), func(t *testing.T) {
			var recv *otlptest.Receiver
			wantProtocol := "http/protobuf"
			if tc.protocol == "http/json" {
				wantProtocol = tc.protocol
			}
			if tc.protocol == "grpc" {
				recv, wantProtocol = otlptest.NewGRPC(t), "grpc"
			} else {
				recv = otlptest.NewHTTP(t)
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			t.Setenv("OTEL_SERVICE_NAME", tc.service)
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,k8s.pod.name=spool%2D0")
			t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=Bearer%20t0ken")
			compression := "none"
			if tc.gzip {
				compression = "gzip"
			}
			t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)

			logged := &lockedBuffer{}
			tr, err := telemetry.NewTracing(context.Background(), os.LookupEnv, "1.2.3", slog.New(slog.NewTextHandler(logged, nil)))
			if err != nil {
				t.Fatal(err)
			}
			wantExporter := "otlp (" + wantProtocol + ") " + recv.URL
			if wantProtocol != "grpc" {
				wantExporter += "/v1/traces"
			}
			if !tr.Enabled() || tr.Exporter() != wantExporter {
				t.Fatalf("Enabled %v, exporter %q; want %q", tr.Enabled(), tr.Exporter(), wantExporter)
			}

			// A server span continuing a caller's trace, a producer child
			// with attributes and an error status, and a root span linking
			// to the child.
			const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
			var server, enq, lease trace.SpanContext
			tracer := tr.TracerProvider().Tracer("spool/test")
			h := tr.Instrument(enqueueRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				server = trace.SpanContextFromContext(r.Context())
				_, span := tracer.Start(r.Context(), "spool.enqueue", trace.WithSpanKind(trace.SpanKindProducer),
					trace.WithAttributes(attribute.String("spool.task.id", "0192-abc"), attribute.Int("spool.task.count", 1),
						attribute.Bool("spool.task.existing", false)))
				enq = span.SpanContext()
				span.SetStatus(codes.Error, "store unavailable")
				span.End()
				w.WriteHeader(http.StatusCreated)
			}))
			req := httptest.NewRequest("POST", "/v1/queues/q/tasks", nil)
			req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
			h.ServeHTTP(httptest.NewRecorder(), req)
			_, span := tracer.Start(context.Background(), "spool.lease",
				trace.WithLinks(trace.Link{SpanContext: enq, Attributes: []attribute.KeyValue{attribute.String("spool.task.id", "0192-abc")}}))
			lease = span.SpanContext()
			span.End()

			if n := len(recv.Requests()); n != 0 {
				t.Errorf("%d exports before shutdown; the batch processor should hold the spans (OTEL_BSP_SCHEDULE_DELAY 5 s)", n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tr.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}

			for _, rq := range recv.Requests() {
				if rq.Err != nil {
					t.Fatalf("receiver refused an export (%s %s): %v", rq.Protocol, rq.Path, rq.Err)
				}
				if rq.Protocol != wantProtocol {
					t.Errorf("export over %s, want %s", rq.Protocol, wantProtocol)
				}
				if got := rq.Header.Get("X-Api-Key"); got != "Bearer t0ken" {
					t.Errorf("x-api-key header %q, want the decoded OTEL_EXPORTER_OTLP_HEADERS value", got)
				}
				if wantProtocol == "grpc" {
					continue
				}
				if rq.Path != "/v1/traces" {
					t.Errorf("export to %s, want /v1/traces", rq.Path)
				}
				if got := rq.Header.Get("Content-Encoding") == "gzip"; got != tc.gzip {
					t.Errorf("gzip %v, want %v", got, tc.gzip)
				}
			}
			spans := map[string]otlptest.Span{}
			for _, s := range recv.Spans() {
				spans[s.Name] = s
			}
			if len(spans) != 3 {
				t.Fatalf("exported spans %v, want %s, spool.enqueue, spool.lease; log: %s", spans, enqueueRoute, logged.String())
			}
			wantService := tc.service
			if wantService == "" {
				wantService = telemetry.DefaultServiceName
			}
			for _, w := range []struct {
				name      string
				sc        trace.SpanContext
				parent    string
				kind      tracepb.Span_SpanKind
				status    tracepb.Status_StatusCode
				statusMsg string
			}{
				{enqueueRoute, server, callerSpan, tracepb.Span_SPAN_KIND_SERVER, tracepb.Status_STATUS_CODE_UNSET, ""},
				{"spool.enqueue", enq, server.SpanID().String(), tracepb.Span_SPAN_KIND_PRODUCER, tracepb.Status_STATUS_CODE_ERROR, "store unavailable"},
				{"spool.lease", lease, "", tracepb.Span_SPAN_KIND_INTERNAL, tracepb.Status_STATUS_CODE_UNSET, ""},
			} {
				sp, ok := spans[w.name]
				if !ok {
					t.Errorf("span %q not exported", w.name)
					continue
				}
				for k, v := range map[string]string{
					"service.name": wantService, "service.version": "1.2.3",
					"deployment.environment.name": "test", "k8s.pod.name": "spool-0",
					"telemetry.sdk.name": "opentelemetry", "telemetry.sdk.language": "go",
				} {
					if sp.Resource[k] != v {
						t.Errorf("%s: resource %s = %q, want %q", w.name, k, sp.Resource[k], v)
					}
				}
				if sp.TraceID() != w.sc.TraceID().String() || sp.SpanID() != w.sc.SpanID().String() || sp.ParentSpanID() != w.parent {
					t.Errorf("%s: trace %s span %s parent %s, want %s %s %s", w.name, sp.TraceID(), sp.SpanID(), sp.ParentSpanID(), w.sc.TraceID(), w.sc.SpanID(), w.parent)
				}
				if sp.Kind != w.kind || sp.Status.GetCode() != w.status || sp.Status.GetMessage() != w.statusMsg {
					t.Errorf("%s: kind %v status %v %q, want %v %v %q", w.name, sp.Kind, sp.Status.GetCode(), sp.Status.GetMessage(), w.kind, w.status, w.statusMsg)
				}
				if sp.StartTimeUnixNano == 0 || sp.EndTimeUnixNano < sp.StartTimeUnixNano {
					t.Errorf("%s: times %d–%d", w.name, sp.StartTimeUnixNano, sp.EndTimeUnixNano)
				}
			}
			if spans[enqueueRoute].TraceID() != callerTrace {
				t.Errorf("server span not in the caller's trace")
			}
			if spans[enqueueRoute].Scope != "github.com/spoolhq/spool/internal/telemetry" || spans["spool.enqueue"].Scope != "spool/test" {
				t.Errorf("scopes %q and %q", spans[enqueueRoute].Scope, spans["spool.enqueue"].Scope)
			}
			attrs := map[string]*commonpb.AnyValue{}
			for _, kv := range spans["spool.enqueue"].Attributes {
				attrs[kv.Key] = kv.Value
			}
			if v := attrs["spool.task.id"]; v.GetStringValue() != "0192-abc" {
				t.Errorf("spool.enqueue spool.task.id = %v, want the string 0192-abc", v)
			}
			if v, ok := attrs["spool.task.count"].GetValue().(*commonpb.AnyValue_IntValue); !ok || v.IntValue != 1 {
				t.Errorf("spool.enqueue spool.task.count = %v, want the int 1", attrs["spool.task.count"])
			}
			if v, ok := attrs["spool.task.existing"].GetValue().(*commonpb.AnyValue_BoolValue); !ok || v.BoolValue {
				t.Errorf("spool.enqueue spool.task.existing = %v, want the bool false", attrs["spool.task.existing"])
			}
			if m := spans[enqueueRoute].Attr("http.request.method"); m != "POST" {
				t.Errorf("server span http.request.method %q, want POST", m)
			}
			links := spans["spool.lease"].Links
			if len(links) != 1 || hex.EncodeToString(links[0].SpanId) != enq.SpanID().String() || hex.EncodeToString(links[0].TraceId) != enq.TraceID().String() ||
				len(links[0].Attributes) != 1 || links[0].Attributes[0].Value.GetStringValue() != "0192-abc" {
				t.Errorf("lease links %v, want one to the enqueue span %s with spool.task.id", links, enq.SpanID())
			}
		})
	}
}

// TestExportFailureLogged: an export the receiver refuses is logged at
// warn with the message "opentelemetry" (the SDK's error handler, pointed
// at Spool's log), without the header values; the service goes on.
func TestExportFailureLogged(t *testing.T) {
	var hits atomic.Int32
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "no such tenant", http.StatusBadRequest) // not retried
	}))
	t.Cleanup(refuse.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", refuse.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret-token")

	logged := &lockedBuffer{}
	tr, err := telemetry.NewTracing(context.Background(), os.LookupEnv, "test", slog.New(slog.NewJSONHandler(logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.TracerProvider().Tracer("spool/test").Start(context.Background(), "spool.lease")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = tr.Shutdown(ctx)

	if hits.Load() != 1 {
		t.Errorf("%d export requests, want 1 (a 400 is not retried)", hits.Load())
	}
	var found bool
	for line := range strings.Lines(logged.String()) {
		var l struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		found = found || (l.Level == "WARN" && l.Msg == "opentelemetry" && strings.Contains(line, "400"))
	}
	if !found {
		t.Errorf("no warn line \"opentelemetry\" with the 400; log: %s", logged.String())
	}
	if strings.Contains(logged.String(), "s3cret") {
		t.Errorf("the log holds a header value: %s", logged.String())
	}
}

// TestNewTracingWarnsOnPortMismatch: an endpoint on the port conventional
// for the other protocol (4317 for gRPC, 4318 for HTTP) starts (the
// receiver may listen there after all) but logs a warning; the matching
// port does not.
func TestNewTracingWarnsOnPortMismatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		port, protocol string
		warn           bool
	}{
		{"4317", "", true},
		{"4317", "http/protobuf", true},
		{"4318", "", false},
		{"4318", "grpc", true},
		{"4317", "grpc", false},
	} {
		buf := &lockedBuffer{}
		log := slog.New(slog.NewTextHandler(buf, nil))
		env := func(k string) (string, bool) {
			switch k {
			case "OTEL_EXPORTER_OTLP_ENDPOINT":
				return "http://127.0.0.1:" + tc.port, true
			case "OTEL_EXPORTER_OTLP_PROTOCOL":
				return tc.protocol, tc.protocol != ""
			}
			return "", false
		}
		tr, err := telemetry.NewTracing(context.Background(), env, "test", log)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = tr.Shutdown(ctx)
		cancel()
		if got := strings.Contains(buf.String(), "by convention"); got != tc.warn {
			t.Errorf("port %s protocol %q: warning logged %v, want %v; log: %s", tc.port, tc.protocol, got, tc.warn, buf.String())
		}
	}
}
