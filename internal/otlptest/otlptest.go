// Package otlptest is a real OTLP trace receiver for tests: the protocol an
// OpenTelemetry Collector's otlp receiver speaks, over HTTP (binary
// protobuf or OTLP/JSON posted to /v1/traces) or gRPC (the TraceService
// Export call),
// decoded with the official generated types of go.opentelemetry.io/proto/otlp.
// Nothing is mocked: what it accepts is what the OTLP schema accepts. Only
// tests import it, so none of it reaches the spool binary.
package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Receiver records every export request it gets.
type Receiver struct {
	// URL is the endpoint to give an exporter: the OTLP/HTTP base URL
	// (the exporter appends /v1/traces) or, for gRPC, http://host:port.
	URL string

	mu   sync.Mutex
	reqs []Request
}

// Request is one export as the receiver saw it.
type Request struct {
	Protocol string      // "http/protobuf", "http/json" or "grpc"
	Path     string      // the HTTP path, or the gRPC method
	Header   http.Header // the HTTP headers, or the gRPC metadata
	Export   *collectortrace.ExportTraceServiceRequest
	Err      error // why the request was refused (Export is nil then)
}

// Span is one exported span with the resource and scope it came under.
type Span struct {
	*tracepb.Span
	Resource map[string]string // the resource's string attributes
	Scope    string            // the instrumentation scope's name
}

// TraceID and SpanID are the span's ids in hex, as a traceparent has them.
func (s Span) TraceID() string { return hex.EncodeToString(s.Span.TraceId) }

func (s Span) SpanID() string { return hex.EncodeToString(s.Span.SpanId) }

// ParentSpanID is "" for a root span.
func (s Span) ParentSpanID() string { return hex.EncodeToString(s.Span.ParentSpanId) }

// Attr is the span's attribute key formatted as a string ("" when absent).
func (s Span) Attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return anyString(kv)
		}
	}
	return ""
}

// anyString formats an attribute's value: strings as they are, ints,
// doubles and bools with fmt, anything else as its protobuf text.
func anyString(kv *commonpb.KeyValue) string {
	switch v := kv.GetValue().GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return v.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(v.IntValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(v.DoubleValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(v.BoolValue)
	case nil:
		return ""
	}
	return kv.GetValue().String()
}

// NewHTTP starts an OTLP/HTTP receiver on loopback that lives until the
// test ends. Like the Collector's, it takes POST /v1/traces with
// Content-Type application/x-protobuf or application/json (gzip or not),
// answers an ExportTraceServiceResponse in the same encoding, and refuses
// anything else: 404 for another path, 415 for another content type, 400
// for a body that is not an ExportTraceServiceRequest.
func NewHTTP(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serveHTTP))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, hr *http.Request) {
	got := Request{Protocol: "http/protobuf", Path: hr.URL.Path, Header: hr.Header.Clone()}
	status := http.StatusOK
	switch {
	case hr.URL.Path != "/v1/traces":
		got.Err, status = fmt.Errorf("path %s", hr.URL.Path), http.StatusNotFound
	case hr.Method != http.MethodPost:
		got.Err, status = fmt.Errorf("method %s", hr.Method), http.StatusMethodNotAllowed
	case hr.Header.Get("Content-Type") != "application/x-protobuf" && hr.Header.Get("Content-Type") != "application/json":
		got.Err, status = fmt.Errorf("content type %q", hr.Header.Get("Content-Type")), http.StatusUnsupportedMediaType
	default:
		json := hr.Header.Get("Content-Type") == "application/json"
		if json {
			got.Protocol = "http/json"
		}
		var body io.Reader = hr.Body
		if hr.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(hr.Body)
			if err != nil {
				got.Err = fmt.Errorf("gzip: %w", err)
				break
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			got.Err = fmt.Errorf("read body: %w", err)
			break
		}
		if json {
			got.Export, got.Err = decodeJSON(b)
		} else {
			got.Export, got.Err = decode(b)
		}
	}
	if got.Err != nil && status == http.StatusOK {
		status = http.StatusBadRequest
	}
	r.record(got)
	if got.Err != nil {
		http.Error(w, got.Err.Error(), status)
		return
	}
	// The answer in the request's encoding, as the Collector's.
	if got.Protocol == "http/json" {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
		return
	}
	out, err := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// decode unmarshals an export request; unknown fields are kept by
// protobuf, so it also rejects a body that carries any.
func decode(b []byte) (*collectortrace.ExportTraceServiceRequest, error) {
	req := &collectortrace.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("not an OTLP ExportTraceServiceRequest: %w", err)
	}
	if len(req.ProtoReflect().GetUnknown()) > 0 {
		return nil, fmt.Errorf("ExportTraceServiceRequest with unknown fields")
	}
	return req, nil
}

// decodeJSON decodes an OTLP/JSON export request strictly (unknown fields
// are errors). OTLP/JSON differs from the proto3 JSON mapping in one way:
// trace and span ids are hex, not base64. So ids are checked to be hex of
// the right length and rewritten as base64 first, after which protojson
// must accept the document as is.
func decodeJSON(body []byte) (*collectortrace.ExportTraceServiceRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep numbers exactly as sent
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if err := hexIDsToBase64(doc); err != nil {
		return nil, err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	req := &collectortrace.ExportTraceServiceRequest{}
	if err := protojson.Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("not an OTLP/JSON ExportTraceServiceRequest: %w", err)
	}
	return req, nil
}

func hexIDsToBase64(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			size := map[string]int{"traceId": 16, "spanId": 8, "parentSpanId": 8}[k]
			if size == 0 {
				if err := hexIDsToBase64(e); err != nil {
					return err
				}
				continue
			}
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("%s is %T, want a hex string", k, e)
			}
			b, err := hex.DecodeString(s)
			if err != nil || len(b) != size {
				return fmt.Errorf("%s %q is not %d bytes of hex", k, s, size)
			}
			v[k] = base64.StdEncoding.EncodeToString(b)
		}
	case []any:
		for _, e := range v {
			if err := hexIDsToBase64(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// NewGRPC starts an OTLP/gRPC receiver (without TLS) on loopback that
// lives until the test ends.
func NewGRPC(t testing.TB) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{URL: "http://" + ln.Addr().String()}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, grpcService{r: r})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return r
}

type grpcService struct {
	collectortrace.UnimplementedTraceServiceServer
	r *Receiver
}

func (g grpcService) Export(ctx context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h := http.Header{}
	for k, v := range md {
		h[http.CanonicalHeaderKey(k)] = v // metadata keys are lower case
	}
	method, _ := grpc.Method(ctx)
	g.r.record(Request{Protocol: "grpc", Path: method, Header: h, Export: req})
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) record(got Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, got)
}

// Requests returns the requests so far.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// Spans returns every span of the accepted requests so far.
func (r *Receiver) Spans() []Span {
	var out []Span
	for _, req := range r.Requests() {
		if req.Export == nil {
			continue
		}
		for _, rs := range req.Export.ResourceSpans {
			res := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				res[kv.Key] = anyString(kv)
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					out = append(out, Span{Span: s, Resource: res, Scope: ss.GetScope().GetName()})
				}
			}
		}
	}
	return out
}

// WaitSpans polls Spans until done accepts them or timeout passes, and
// returns the last ones seen either way.
func (r *Receiver) WaitSpans(timeout time.Duration, done func([]Span) bool) ([]Span, bool) {
	deadline := time.Now().Add(timeout)
	for {
		spans := r.Spans()
		if done(spans) {
			return spans, true
		}
		if time.Now().After(deadline) {
			return spans, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
