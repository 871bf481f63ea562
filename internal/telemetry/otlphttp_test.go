package telemetry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// envOf is an env lookup over a map, as NewTracing takes it.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestOTLPHTTPConfigFromEnv: the endpoint, headers, timeout, compression
// and TLS files come from the standard variables, the TRACES_ forms
// winning, and bad values fail naming the variable.
func TestOTLPHTTPConfigFromEnv(t *testing.T) {
	t.Parallel()
	type want struct {
		endpoint string
		headers  []otlpHeader
		timeout  time.Duration
		gzip     bool
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    want
		wantErr string // a substring of the error; "" = no error
	}{
		{"defaults", nil, want{endpoint: "http://localhost:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"base endpoint gets /v1/traces",
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			want{endpoint: "http://collector:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"base endpoint with a path and a trailing slash",
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw.example.com/otlp/"},
			want{endpoint: "https://gw.example.com/otlp/v1/traces", timeout: 10 * time.Second}, ""},
		{"traces endpoint used as is",
			map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/custom/spans"},
			want{endpoint: "http://collector:4318/custom/spans", timeout: 10 * time.Second}, ""},
		{"traces endpoint without a path gets /",
			map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318"},
			want{endpoint: "http://collector:4318/", timeout: 10 * time.Second}, ""},
		{"traces endpoint wins",
			map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/v1/traces"},
			want{endpoint: "http://b:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"headers, URL-decoded and trimmed",
			map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic%20dXNlcjpwdw%3D%3D, x-tenant = acme ,"},
			want{endpoint: "http://localhost:4318/v1/traces", timeout: 10 * time.Second,
				headers: []otlpHeader{{"Authorization", "Basic dXNlcjpwdw=="}, {"x-tenant", "acme"}}}, ""},
		{"traces headers win",
			map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2"},
			want{endpoint: "http://localhost:4318/v1/traces", timeout: 10 * time.Second, headers: []otlpHeader{{"b", "2"}}}, ""},
		{"timeout",
			map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"},
			want{endpoint: "http://localhost:4318/v1/traces", timeout: 2500 * time.Millisecond}, ""},
		{"traces timeout wins",
			map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "300"},
			want{endpoint: "http://localhost:4318/v1/traces", timeout: 300 * time.Millisecond}, ""},
		{"gzip",
			map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
			want{endpoint: "http://localhost:4318/v1/traces", timeout: 10 * time.Second, gzip: true}, ""},
		{"traces compression wins",
			map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"},
			want{endpoint: "http://localhost:4318/v1/traces", timeout: 10 * time.Second}, ""},

		{"endpoint without a scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, want{}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"grpc-style scheme", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "dns:///collector:4317"}, want{}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{"header without =", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1,secretvalue"}, want{}, "OTEL_EXPORTER_OTLP_HEADERS: entry 2"},
		{"header bad escape", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "k=bad%zzsecret"}, want{}, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"},
		{"timeout not a number", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, want{}, "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{"timeout zero", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"}, want{}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"},
		{"compression unknown", map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, want{}, "OTEL_EXPORTER_OTLP_COMPRESSION"},
		{"certificate missing", map[string]string{"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, want{}, "OTEL_EXPORTER_OTLP_CERTIFICATE"},
		{"client cert without key", map[string]string{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/x/cert.pem"}, want{}, "OTEL_EXPORTER_OTLP_CLIENT_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := otlpHTTPConfigFromEnv(envOf(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error quotes a header value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.endpoint.String(); got != tc.want.endpoint {
				t.Errorf("endpoint %s, want %s", got, tc.want.endpoint)
			}
			if len(cfg.headers) != len(tc.want.headers) {
				t.Errorf("headers %q, want %q", cfg.headers, tc.want.headers)
			} else {
				for i := range cfg.headers {
					if cfg.headers[i] != tc.want.headers[i] {
						t.Errorf("header %d %q, want %q", i, cfg.headers[i], tc.want.headers[i])
					}
				}
			}
			if cfg.timeout != tc.want.timeout || cfg.gzip != tc.want.gzip {
				t.Errorf("timeout %s gzip %v, want %s %v", cfg.timeout, cfg.gzip, tc.want.timeout, tc.want.gzip)
			}
			if cfg.tls != nil {
				t.Errorf("TLS config set with no TLS variables")
			}
		})
	}
}

// TestOTLPHTTPConfigTLSFiles: a CA file and a client certificate pair are
// loaded into the TLS configuration.
func TestOTLPHTTPConfigTLSFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := otlpHTTPConfigFromEnv(envOf(map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE":        certFile,
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": certFile,
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY":         keyFile,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.tls == nil || cfg.tls.RootCAs == nil || len(cfg.tls.Certificates) != 1 {
		t.Fatalf("TLS config %+v, want the CA pool and one client certificate", cfg.tls)
	}
}

// newTestExporter builds an exporter from env pointed at r.
func newTestExporter(t *testing.T, r *OTLPReceiver, env map[string]string) *otlpHTTPExporter {
	t.Helper()
	m := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": r.URL}
	for k, v := range env {
		m[k] = v
	}
	cfg, err := otlpHTTPConfigFromEnv(envOf(m))
	if err != nil {
		t.Fatal(err)
	}
	e := newOTLPHTTPExporter(cfg, "test")
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e
}

// oneSpan is a minimal finished span.
func oneSpan() []*spanData {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	})
	now := time.Now()
	return fromSDK(tracetest.SpanStubs{{Name: "one", SpanContext: sc, StartTime: now, EndTime: now,
		Resource: resource.NewSchemaless(attribute.String("service.name", "t"))}}.Snapshots())
}

func mustID[T any](t *testing.T, f func(string) (T, error), s string) T {
	t.Helper()
	v, err := f(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOTLPJSONEncoding: spans of every shape, exported to a real receiver,
// decode with the official OTLP types into exactly what they were: ids,
// parents, trace state, flags, kinds, times, attributes of every type,
// events, links, status, dropped counts, and grouping by resource and
// scope.
func TestOTLPJSONEncoding(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t, nil)
	e := newTestExporter(t, r, nil)

	traceA := mustID(t, trace.TraceIDFromHex, "4bf92f3577b34da6a3ce929d0e0e4736")
	traceB := mustID(t, trace.TraceIDFromHex, "0af7651916cd43dd8448eb211c80319c")
	ts := mustID(t, trace.ParseTraceState, "vendor=x,other=y")
	sc := func(tid trace.TraceID, sid string, remote bool) trace.SpanContext {
		return trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: tid, SpanID: mustID(t, trace.SpanIDFromHex, sid), TraceFlags: trace.FlagsSampled, Remote: remote,
		})
	}
	resA := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
		attribute.String("service.name", "spool"), attribute.String("service.version", "9.9.9"))
	resB := resource.NewSchemaless(attribute.String("service.name", "other"))
	scope1 := instrumentation.Scope{Name: "spool/dispatch", Version: "1.0", SchemaURL: "https://example.com/s",
		Attributes: attribute.NewSet(attribute.String("scope.attr", "v"))}
	scope2 := instrumentation.Scope{Name: "otelhttp"}
	start := time.Unix(1_700_000_000, 123_456_789)
	end := start.Add(1500 * time.Millisecond)

	allTypes := []attribute.KeyValue{
		attribute.String("s", "text with \"quotes\" <&> and ünïcode"),
		attribute.String("empty", ""),
		attribute.Bool("b", true),
		attribute.Bool("f", false),
		attribute.Int64("i", math.MaxInt64), // beyond a JSON number's exact range
		attribute.Int64("neg", -42),
		attribute.Float64("d", 1.5),
		attribute.Float64("inf", math.Inf(1)),
		attribute.Float64("nan", math.NaN()),
		attribute.StringSlice("ss", []string{"a", "b"}),
		attribute.Int64Slice("is", []int64{1, -2}),
		attribute.BoolSlice("bs", []bool{true, false}),
		attribute.Float64Slice("ds", []float64{0.25}),
		attribute.StringSlice("none", []string{}),
		attribute.ByteSlice("bytes", []byte{0, 1, 0xfe, 0xff}),
		attribute.Slice("mixed", attribute.StringValue("x"), attribute.Int64Value(7)),
		attribute.Map("map", attribute.String("k", "v"), attribute.Int("n", 3)),
		{Key: "nothing"}, // an empty value
	}
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	i64 := func(i int64) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: i}}
	}
	boo := func(b bool) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: b}}
	}
	dbl := func(d float64) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: d}}
	}
	arr := func(vs ...*commonpb.AnyValue) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}
	}
	wantTypes := map[string]*commonpb.AnyValue{
		"s":     str("text with \"quotes\" <&> and ünïcode"),
		"empty": str(""),
		"b":     boo(true),
		"f":     boo(false),
		"i":     i64(math.MaxInt64),
		"neg":   i64(-42),
		"d":     dbl(1.5),
		"inf":   dbl(math.Inf(1)),
		"ss":    arr(str("a"), str("b")),
		"is":    arr(i64(1), i64(-2)),
		"bs":    arr(boo(true), boo(false)),
		"ds":    arr(dbl(0.25)),
		"none":  arr(),
		"bytes": {Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0, 1, 0xfe, 0xff}}},
		"mixed": arr(str("x"), i64(7)),
		"map": {Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{
			{Key: "k", Value: str("v")}, {Key: "n", Value: i64(3)},
		}}}},
		"nothing": {},
	}

	callerSpan := sc(traceA, "00f067aa0ba902b7", true)
	server := tracetest.SpanStub{
		Name: "POST /v1/queues/{queue}/tasks", SpanContext: sc(traceA, "1111111111111111", false).WithTraceState(ts),
		Parent: callerSpan, SpanKind: trace.SpanKindServer, StartTime: start, EndTime: end,
		Attributes: allTypes,
		Events: []sdktrace.Event{{Name: "exception", Time: start.Add(time.Millisecond),
			Attributes: []attribute.KeyValue{attribute.String("exception.message", "boom")}, DroppedAttributeCount: 1}},
		Links: []sdktrace.Link{{SpanContext: sc(traceB, "2222222222222222", true),
			Attributes: []attribute.KeyValue{attribute.String("link.k", "lv")}, DroppedAttributeCount: 2}},
		Status:            sdktrace.Status{Code: codes.Error, Description: "it failed"},
		DroppedAttributes: 3, DroppedEvents: 4, DroppedLinks: 5,
		Resource: resA, InstrumentationScope: scope1,
	}
	client := tracetest.SpanStub{Name: "POST", SpanContext: sc(traceA, "3333333333333333", false),
		Parent: server.SpanContext, SpanKind: trace.SpanKindClient, StartTime: start, EndTime: end,
		Status: sdktrace.Status{Code: codes.Ok}, Resource: resA, InstrumentationScope: scope2}
	producer := tracetest.SpanStub{Name: "spool.enqueue", SpanContext: sc(traceA, "4444444444444444", false),
		Parent: server.SpanContext, SpanKind: trace.SpanKindProducer, StartTime: start, EndTime: end,
		Resource: resA, InstrumentationScope: scope1}
	consumer := tracetest.SpanStub{Name: "spool.deliver", SpanContext: sc(traceB, "5555555555555555", false),
		SpanKind: trace.SpanKindConsumer, StartTime: start, EndTime: end, Resource: resB, InstrumentationScope: scope1}
	internal := tracetest.SpanStub{Name: "spool.lease", SpanContext: sc(traceB, "6666666666666666", false),
		SpanKind: trace.SpanKindInternal, StartTime: start, EndTime: end, Resource: resB}
	stubs := tracetest.SpanStubs{server, client, producer, consumer, internal}

	if err := e.ExportSpans(context.Background(), fromSDK(stubs.Snapshots())); err != nil {
		t.Fatal(err)
	}
	got := r.Received()
	if len(got) != 1 {
		t.Fatalf("%d requests, want 1", len(got))
	}
	if got[0].Err != nil {
		t.Fatalf("receiver could not decode the request: %v\n%s", got[0].Err, got[0].Body)
	}
	if got[0].Path != "/v1/traces" {
		t.Errorf("path %s, want /v1/traces", got[0].Path)
	}
	req := got[0].Req

	// Grouping: resource A holds scope1 (server, producer) and scope2
	// (client); resource B holds scope1 (consumer) and no scope (internal).
	type group struct {
		service, scope string
		spans          []string
	}
	var groups []group
	for _, rs := range req.ResourceSpans {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			g := group{service: service, scope: ss.GetScope().GetName()}
			for _, sp := range ss.Spans {
				g.spans = append(g.spans, sp.Name)
			}
			groups = append(groups, g)
		}
	}
	wantGroups := []group{
		{"spool", "spool/dispatch", []string{server.Name, producer.Name}},
		{"spool", "otelhttp", []string{client.Name}},
		{"other", "spool/dispatch", []string{consumer.Name}},
		{"other", "", []string{internal.Name}},
	}
	if len(groups) != len(wantGroups) {
		t.Fatalf("groups %v, want %v", groups, wantGroups)
	}
	for i := range groups {
		if groups[i].service != wantGroups[i].service || groups[i].scope != wantGroups[i].scope ||
			strings.Join(groups[i].spans, "|") != strings.Join(wantGroups[i].spans, "|") {
			t.Errorf("group %d %v, want %v", i, groups[i], wantGroups[i])
		}
	}
	rsA := req.ResourceSpans[0]
	if rsA.SchemaUrl != resA.SchemaURL() {
		t.Errorf("resource schema %q, want %q", rsA.SchemaUrl, resA.SchemaURL())
	}
	ss1 := rsA.ScopeSpans[0]
	if s := ss1.GetScope(); s.GetVersion() != "1.0" || ss1.SchemaUrl != scope1.SchemaURL ||
		len(s.GetAttributes()) != 1 || s.GetAttributes()[0].Key != "scope.attr" || s.GetAttributes()[0].Value.GetStringValue() != "v" {
		t.Errorf("scope %v schema %q, want version 1.0, scope.attr=v, schema %s", s, ss1.SchemaUrl, scope1.SchemaURL)
	}
	if req.ResourceSpans[1].ScopeSpans[1].Scope != nil {
		t.Errorf("zero scope encoded as %v, want none", req.ResourceSpans[1].ScopeSpans[1].Scope)
	}

	// Each span, field by field.
	bySpanID := map[trace.SpanID]*tracepb.Span{}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				bySpanID[trace.SpanID(sp.SpanId)] = sp
			}
		}
	}
	wantKind := map[trace.SpanKind]tracepb.Span_SpanKind{
		trace.SpanKindServer: tracepb.Span_SPAN_KIND_SERVER, trace.SpanKindClient: tracepb.Span_SPAN_KIND_CLIENT,
		trace.SpanKindProducer: tracepb.Span_SPAN_KIND_PRODUCER, trace.SpanKindConsumer: tracepb.Span_SPAN_KIND_CONSUMER,
		trace.SpanKindInternal: tracepb.Span_SPAN_KIND_INTERNAL,
	}
	wantStatus := map[codes.Code]tracepb.Status_StatusCode{
		codes.Unset: tracepb.Status_STATUS_CODE_UNSET, codes.Ok: tracepb.Status_STATUS_CODE_OK, codes.Error: tracepb.Status_STATUS_CODE_ERROR,
	}
	for _, st := range stubs {
		sp := bySpanID[st.SpanContext.SpanID()]
		if sp == nil {
			t.Errorf("span %s (%s) not received", st.Name, st.SpanContext.SpanID())
			continue
		}
		tid := st.SpanContext.TraceID()
		if string(sp.TraceId) != string(tid[:]) {
			t.Errorf("%s: trace id %x, want %s", st.Name, sp.TraceId, tid)
		}
		var wantParent []byte
		if p := st.Parent.SpanID(); p.IsValid() {
			wantParent = p[:]
		}
		if string(sp.ParentSpanId) != string(wantParent) {
			t.Errorf("%s: parent %x, want %x", st.Name, sp.ParentSpanId, wantParent)
		}
		if sp.Name != st.Name || sp.Kind != wantKind[st.SpanKind] {
			t.Errorf("%s: name %q kind %v, want %v", st.Name, sp.Name, sp.Kind, wantKind[st.SpanKind])
		}
		if sp.StartTimeUnixNano != uint64(start.UnixNano()) || sp.EndTimeUnixNano != uint64(end.UnixNano()) {
			t.Errorf("%s: times %d–%d, want %d–%d", st.Name, sp.StartTimeUnixNano, sp.EndTimeUnixNano, start.UnixNano(), end.UnixNano())
		}
		if sp.Status.GetCode() != wantStatus[st.Status.Code] {
			t.Errorf("%s: status %v, want %v", st.Name, sp.Status.GetCode(), wantStatus[st.Status.Code])
		}
		// Sampled, "is-remote known", and "parent is remote" for the
		// server span only.
		wantFlags := uint32(0x101)
		if st.Parent.IsRemote() {
			wantFlags |= 0x200
		}
		if sp.Flags != wantFlags {
			t.Errorf("%s: flags %#x, want %#x", st.Name, sp.Flags, wantFlags)
		}
	}

	sp := bySpanID[server.SpanContext.SpanID()]
	if sp == nil {
		t.FailNow()
	}
	if sp.TraceState != "vendor=x,other=y" {
		t.Errorf("trace state %q", sp.TraceState)
	}
	if sp.Status.GetMessage() != "it failed" {
		t.Errorf("status message %q", sp.Status.GetMessage())
	}
	if sp.DroppedAttributesCount != 3 || sp.DroppedEventsCount != 4 || sp.DroppedLinksCount != 5 {
		t.Errorf("dropped %d/%d/%d, want 3/4/5", sp.DroppedAttributesCount, sp.DroppedEventsCount, sp.DroppedLinksCount)
	}
	if len(sp.Attributes) != len(allTypes) {
		t.Errorf("%d attributes, want %d", len(sp.Attributes), len(allTypes))
	}
	for _, kv := range sp.Attributes {
		if kv.Key == "nan" {
			if !math.IsNaN(kv.Value.GetDoubleValue()) {
				t.Errorf("attribute nan = %v", kv.Value)
			}
			continue
		}
		want, ok := wantTypes[kv.Key]
		if !ok {
			t.Errorf("unexpected attribute %q", kv.Key)
		} else if !proto.Equal(kv.Value, want) {
			t.Errorf("attribute %q = %v, want %v", kv.Key, kv.Value, want)
		}
	}
	if len(sp.Events) != 1 || sp.Events[0].Name != "exception" ||
		sp.Events[0].TimeUnixNano != uint64(start.Add(time.Millisecond).UnixNano()) ||
		sp.Events[0].DroppedAttributesCount != 1 || len(sp.Events[0].Attributes) != 1 ||
		sp.Events[0].Attributes[0].Value.GetStringValue() != "boom" {
		t.Errorf("events %v", sp.Events)
	}
	wantLink := server.Links[0].SpanContext
	lt, ls := wantLink.TraceID(), wantLink.SpanID()
	if len(sp.Links) != 1 {
		t.Fatalf("links %v, want 1", sp.Links)
	}
	l := sp.Links[0]
	if string(l.TraceId) != string(lt[:]) || string(l.SpanId) != string(ls[:]) || l.Flags != 0x301 ||
		l.DroppedAttributesCount != 2 || len(l.Attributes) != 1 || l.Attributes[0].Key != "link.k" || l.Attributes[0].Value.GetStringValue() != "lv" {
		t.Errorf("link %v, want trace %s span %s flags 0x301 link.k=lv dropped 2", l, lt, ls)
	}
}

// TestOTLPHeadersAndGzip: the configured headers reach the receiver, and
// with compression on the body is gzip and says so.
func TestOTLPHeadersAndGzip(t *testing.T) {
	t.Parallel()
	for _, gz := range []bool{false, true} {
		r := StartOTLPReceiver(t, nil)
		env := map[string]string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Bearer%20tok3n,X-Scope-OrgID=acme"}
		if gz {
			env["OTEL_EXPORTER_OTLP_COMPRESSION"] = "gzip"
		}
		e := newTestExporter(t, r, env)
		if err := e.ExportSpans(context.Background(), oneSpan()); err != nil {
			t.Fatal(err)
		}
		got := r.Received()
		if len(got) != 1 || got[0].Err != nil {
			t.Fatalf("gzip %v: received %v", gz, got)
		}
		h := got[0].Header
		if h.Get("Authorization") != "Bearer tok3n" || h.Get("X-Scope-OrgID") != "acme" {
			t.Errorf("gzip %v: headers %v", gz, h)
		}
		if enc := h.Get("Content-Encoding"); (enc == "gzip") != gz {
			t.Errorf("gzip %v: Content-Encoding %q", gz, enc)
		}
		if !strings.HasPrefix(h.Get("User-Agent"), "spool/test") {
			t.Errorf("User-Agent %q", h.Get("User-Agent"))
		}
		if n := len(got[0].Req.ResourceSpans); n != 1 {
			t.Errorf("gzip %v: %d resource spans", gz, n)
		}
	}
}

// TestOTLPRetryAfter: a 503 with Retry-After is retried after the wait it
// asks for, with the same body, and the export then succeeds.
func TestOTLPRetryAfter(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t, func(n int, w http.ResponseWriter) bool {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "collector busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	e := newTestExporter(t, r, map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "5000"})
	e.backoff = time.Millisecond // so only Retry-After can explain the wait
	if err := e.ExportSpans(context.Background(), oneSpan()); err != nil {
		t.Fatalf("export: %v", err)
	}
	got := r.Received()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	if gap := got[1].At.Sub(got[0].At); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, want ≥ 1s (Retry-After)", gap)
	}
	if string(got[0].Body) != string(got[1].Body) {
		t.Error("retry sent a different body")
	}
}

// TestOTLPRetryAfterBeyondTimeout: when the receiver asks to wait longer
// than the export timeout leaves, the export fails at once.
func TestOTLPRetryAfterBeyondTimeout(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t, func(_ int, w http.ResponseWriter) bool {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	})
	e := newTestExporter(t, r, map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "2000"})
	began := time.Now()
	err := e.ExportSpans(context.Background(), oneSpan())
	if err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("err %v, want one with 429", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("took %s, want an immediate failure", took)
	}
	if n := len(r.Received()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// TestOTLPBackoffWithinTimeout: a receiver that keeps answering 502/504
// is retried with backoff, and the export gives up within its timeout.
func TestOTLPBackoffWithinTimeout(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t, func(n int, w http.ResponseWriter) bool {
		w.WriteHeader([]int{http.StatusBadGateway, http.StatusGatewayTimeout}[n%2])
		return true
	})
	e := newTestExporter(t, r, map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "600"})
	e.backoff, e.maxBackoff = 20*time.Millisecond, 100*time.Millisecond
	began := time.Now()
	err := e.ExportSpans(context.Background(), oneSpan())
	took := time.Since(began)
	if err == nil || !(strings.Contains(err.Error(), "502") || strings.Contains(err.Error(), "504")) {
		t.Fatalf("err %v, want the receiver's 502/504", err)
	}
	if took > 900*time.Millisecond {
		t.Errorf("took %s, beyond the 600ms timeout", took)
	}
	if n := len(r.Received()); n < 3 {
		t.Errorf("%d attempts, want several", n)
	}
}

// TestOTLPNotRetried: other non-2xx answers are errors at once.
func TestOTLPNotRetried(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusBadRequest, http.StatusNotFound, http.StatusInternalServerError} {
		r := StartOTLPReceiver(t, func(_ int, w http.ResponseWriter) bool {
			http.Error(w, "nope", code)
			return true
		})
		e := newTestExporter(t, r, nil)
		err := e.ExportSpans(context.Background(), oneSpan())
		if err == nil || !strings.Contains(err.Error(), http.StatusText(code)) || !strings.Contains(err.Error(), "nope") {
			t.Errorf("%d: err %v, want the status and the receiver's message", code, err)
		}
		if n := len(r.Received()); n != 1 {
			t.Errorf("%d: %d requests, want 1", code, n)
		}
	}
}

// TestOTLPErrorsHoldNoCredentials: header values, the endpoint's password
// and its query never appear in an error, even when the receiver echoes
// them back.
func TestOTLPErrorsHoldNoCredentials(t *testing.T) {
	t.Parallel()
	const secret, apiKey, password, query = "s3cr3t-bearer", "k3y-1234", "pa55word", "token=q7u3ry"
	r := StartOTLPReceiver(t, func(_ int, w http.ResponseWriter) bool {
		http.Error(w, "denied: "+secret+" key "+apiKey+" pw "+password+" "+query, http.StatusUnauthorized)
		return true
	})
	check := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		for _, s := range []string{secret, apiKey, password, "q7u3ry"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q contains %q", what, err, s)
			}
		}
	}
	headers := "Authorization=Bearer%20" + secret + ",x-api-key=" + apiKey
	u := strings.Replace(r.URL, "http://", "http://user:"+password+"@", 1) + "/v1/traces?" + query

	e := newTestExporter(t, r, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": u, "OTEL_EXPORTER_OTLP_HEADERS": headers})
	err := e.ExportSpans(context.Background(), oneSpan())
	check("401", err)
	if !strings.Contains(err.Error(), "401") {
		t.Errorf("error %q does not give the status", err)
	}
	if got := r.Received(); len(got) != 1 || got[0].Header.Get("Authorization") != "Bearer "+secret {
		t.Errorf("the credentials were not sent: %v", got)
	}

	// A receiver that is not there: a connection error, retried until
	// the timeout, names the endpoint without its credentials.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://user:" + password + "@" + ln.Addr().String() + "/v1/traces?" + query
	ln.Close()
	e = newTestExporter(t, r, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": dead,
		"OTEL_EXPORTER_OTLP_HEADERS": headers, "OTEL_EXPORTER_OTLP_TIMEOUT": "300"})
	e.backoff = 20 * time.Millisecond
	err = e.ExportSpans(context.Background(), oneSpan())
	check("connection refused", err)
	if !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("error %q does not name the endpoint", err)
	}

	// Configuration errors do not quote header values either.
	_, err = otlpHTTPConfigFromEnv(envOf(map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=" + secret + "%zz"}))
	check("bad header", err)
}

// TestOTLPShutdown: after Shutdown an export fails at once without a
// request, and Shutdown abandons an export waiting to retry.
func TestOTLPShutdown(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t, func(_ int, w http.ResponseWriter) bool {
		w.Header().Set("Retry-After", "3")
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	e := newTestExporter(t, r, nil)
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- e.ExportSpans(context.Background(), oneSpan()) }()
	for len(r.Received()) == 0 && time.Since(began) < 5*time.Second {
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errOTLPShutdown) {
			t.Errorf("in-flight export: %v, want errOTLPShutdown", err)
		}
		if took := time.Since(began); took > 2*time.Second {
			t.Errorf("in-flight export ended after %s, want soon after Shutdown", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight export still running 5s after Shutdown")
	}

	before := len(r.Received())
	began = time.Now()
	if err := e.ExportSpans(context.Background(), oneSpan()); !errors.Is(err, errOTLPShutdown) {
		t.Errorf("export after Shutdown: %v, want errOTLPShutdown", err)
	}
	if time.Since(began) > 100*time.Millisecond || len(r.Received()) != before {
		t.Error("export after Shutdown was attempted")
	}
}

// TestOTLPPartialSuccess: spans the receiver accepted the request for but
// rejected are reported, not retried.
func TestOTLPPartialSuccess(t *testing.T) {
	t.Parallel()
	r := StartOTLPReceiver(t, func(_ int, w http.ResponseWriter) bool {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"partialSuccess":{"rejectedSpans":"1","errorMessage":"span too old"}}`))
		return true
	})
	e := newTestExporter(t, r, nil)
	err := e.ExportSpans(context.Background(), oneSpan())
	if err == nil || !strings.Contains(err.Error(), "rejected 1 spans: span too old") {
		t.Errorf("err %v, want the partial success reported", err)
	}
	if n := len(r.Received()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}
