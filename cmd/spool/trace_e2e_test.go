package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/otlptest"
)

// TestTracesReachOTLPReceiver: the real `spool serve`, with the standard
// OTEL_* variables pointing at a real OTLP receiver in this test process
// (otlptest: the Collector's protocol, decoded with the official OTLP
// protobuf types), over OTLP/HTTP (binary protobuf) and over gRPC. A task
// enqueued with a caller's traceparent is delivered to a receiver here; the
// delivered request's traceparent is in the caller's trace, and the spans
// that crossed the process boundary make one trace from the API request to
// the delivery: the server span (child of the caller's span) → spool.enqueue
// → spool.deliver → the HTTP client span whose id the receiver got as its
// parent, with spool.lease linked both ways. Resource and headers come
// from the environment, as an operator sets them.
func TestTracesReachOTLPReceiver(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(strings.ReplaceAll(protocol, "/", "-"), func(t *testing.T) {
			t.Parallel()
			var recv *otlptest.Receiver
			if protocol == "grpc" {
				recv = otlptest.NewGRPC(t)
			} else {
				recv = otlptest.NewHTTP(t)
			}
			delivered := make(chan string, 4)
			target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				delivered <- r.Header.Get("Traceparent")
				w.WriteHeader(http.StatusNoContent)
			}))
			t.Cleanup(target.Close)

			in := startServe(t, "serve", serveOpts{dataDir: t.TempDir(), env: []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.URL,
				"OTEL_EXPORTER_OTLP_PROTOCOL=" + protocol,
				"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20collector-token",
				"OTEL_SERVICE_NAME=spool-e2e",
				"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e",
				"OTEL_BSP_SCHEDULE_DELAY=100", // export within 0.1 s, not 5 s
			}}, newKey(t))
			base := "http://" + in.api

			// The caller: its own trace, sampled.
			const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
			body, _ := json.Marshal(map[string]any{"target": map[string]any{"url": target.URL + "/hook"}, "payload": map[string]int{"n": 1}})
			req, _ := http.NewRequest("POST", base+"/v1/queues/traced/tasks", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testAPIKey)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
			resp, err := httpc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var tk apiTask
			_ = json.NewDecoder(resp.Body).Decode(&tk)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated || tk.ID == "" {
				t.Fatalf("enqueue: %d %+v", resp.StatusCode, tk)
			}

			var tp string
			select {
			case tp = <-delivered:
			case <-time.After(15 * time.Second):
				t.Fatal("no delivery within 15s")
			}
			parts := strings.Split(tp, "-")
			if len(parts) != 4 || parts[1] != callerTrace {
				t.Fatalf("delivered traceparent %q, want one in the caller's trace %s", tp, callerTrace)
			}
			clientSpanID := parts[2]

			// Every span of the chain, and the lease span, reach the receiver.
			byName := func(spans []otlptest.Span) map[string]otlptest.Span {
				m := map[string]otlptest.Span{}
				for _, s := range spans {
					if s.TraceID() == callerTrace || s.Name == "spool.lease" {
						m[s.Name] = s
					}
				}
				return m
			}
			names := []string{"POST /v1/queues/{queue}/tasks", "spool.enqueue", "spool.deliver", "POST", "spool.lease"}
			spans, ok := recv.WaitSpans(15*time.Second, func(spans []otlptest.Span) bool {
				m := byName(spans)
				for _, n := range names {
					if _, ok := m[n]; !ok {
						return false
					}
				}
				return true
			})
			got := byName(spans)
			if !ok {
				var have []string
				for _, s := range spans {
					have = append(have, s.Name+" "+s.TraceID())
				}
				t.Fatalf("spans received %v, want %v in trace %s", have, names, callerTrace)
			}
			server, enq, del, client, lease := got[names[0]], got["spool.enqueue"], got["spool.deliver"], got["POST"], got["spool.lease"]

			// The parent chain: caller → API request → enqueue → delivery → client.
			for _, c := range []struct {
				what   string
				span   otlptest.Span
				parent string
			}{
				{"server span", server, callerSpan},
				{"spool.enqueue", enq, server.SpanID()},
				{"spool.deliver", del, enq.SpanID()},
				{"client span", client, del.SpanID()},
			} {
				if c.span.TraceID() != callerTrace || c.span.ParentSpanID() != c.parent {
					t.Errorf("%s: trace %s parent %s, want %s %s", c.what, c.span.TraceID(), c.span.ParentSpanID(), callerTrace, c.parent)
				}
			}
			if client.SpanID() != clientSpanID {
				t.Errorf("the receiver's parent span %s is not the exported client span %s", clientSpanID, client.SpanID())
			}
			if enq.Attr("spool.task.id") != tk.ID || del.Attr("spool.task.id") != tk.ID || del.Attr("spool.outcome") != "succeeded" {
				t.Errorf("enqueue task %q, deliver task %q outcome %q; want %s succeeded",
					enq.Attr("spool.task.id"), del.Attr("spool.task.id"), del.Attr("spool.outcome"), tk.ID)
			}
			if client.Attr("http.response.status_code") != "204" {
				t.Errorf("client span status code %q, want 204", client.Attr("http.response.status_code"))
			}
			leaseLinksEnqueue := false
			for _, l := range lease.Links {
				leaseLinksEnqueue = leaseLinksEnqueue || (hex.EncodeToString(l.TraceId) == callerTrace && hex.EncodeToString(l.SpanId) == enq.SpanID())
			}
			if !leaseLinksEnqueue || lease.TraceID() == callerTrace {
				t.Errorf("lease span (trace %s) links %v, want a root of its own linking to the enqueue span %s", lease.TraceID(), lease.Links, enq.SpanID())
			}
			if len(del.Links) != 1 || hex.EncodeToString(del.Links[0].SpanId) != lease.SpanID() {
				t.Errorf("deliver span links %v, want the lease span %s", del.Links, lease.SpanID())
			}
			for _, s := range []otlptest.Span{server, enq, del, client, lease} {
				if s.Resource["service.name"] != "spool-e2e" || s.Resource["deployment.environment.name"] != "e2e" || s.Resource["service.version"] == "" {
					t.Errorf("%s: resource %v", s.Name, s.Resource)
				}
			}
			for _, r := range recv.Requests() {
				if r.Err != nil {
					t.Errorf("the receiver refused an export over %s: %v", r.Protocol, r.Err)
				}
				if r.Protocol != protocol {
					t.Errorf("an export over %s, want %s", r.Protocol, protocol)
				}
				if r.Header.Get("Authorization") != "Bearer collector-token" {
					t.Errorf("export without the OTEL_EXPORTER_OTLP_HEADERS authorization")
				}
			}

			in.signal(syscall.SIGTERM)
			if err := in.wait(15 * time.Second); err != nil {
				t.Errorf("exit after SIGTERM: %v", err)
			}
			if out := in.out.String(); strings.Contains(out, "opentelemetry") || strings.Contains(out, "collector-token") {
				t.Errorf("serve logged an export problem or the header value:\n%s", out)
			}
		})
	}
}
