package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// These tests hold Spool's SDK (sdk.go, batch.go) to the official Go SDK:
// the same calls through both must record the same spans.

// recordWithSDKs runs scenario on the official SDK and on Spool's, both
// with limits and both exporting synchronously, and returns what each
// recorded.
func recordWithSDKs(t *testing.T, limits spanLimits, scenario func(trace.TracerProvider)) (official, spool tracetest.SpanStubs) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	otp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithRawSpanLimits(sdktrace.SpanLimits{
		AttributeCountLimit: limits.attrs, AttributeValueLengthLimit: limits.valueLength,
		EventCountLimit: limits.events, LinkCountLimit: limits.links,
		AttributePerEventCountLimit: limits.attrsPerEvent, AttributePerLinkCountLimit: limits.attrsPerLink,
		AttributeValueDepthLimit: -1,
	}))
	scenario(otp)
	official = exp.GetSpans() // before Shutdown, which empties the exporter
	if err := otp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	tr, rec := NewRecordedTracing()
	tr.provider.(*tracerProvider).limits = limits
	scenario(tr.provider)
	return official, rec.GetSpans()
}

// comparable renders a span without what differs between two runs: ids
// become the names of the spans they belong to (or stay as given when
// they come from outside), times are kept only when the scenario fixed
// them, and stack traces become "<stack>".
func comparable(spans tracetest.SpanStubs, fixed time.Time) []string {
	names := map[trace.SpanID]string{}
	for _, s := range spans {
		names[s.SpanContext.SpanID()] = s.Name
	}
	ctx := func(sc trace.SpanContext) string {
		if !sc.IsValid() {
			return "-"
		}
		id := sc.SpanID().String()
		if n, ok := names[sc.SpanID()]; ok {
			id = n
		}
		return fmt.Sprintf("%s/%s/remote=%v/ts=%s", id, sc.TraceFlags(), sc.IsRemote(), sc.TraceState())
	}
	when := func(at time.Time) string {
		if at.Equal(fixed) || at.Equal(fixed.Add(time.Second)) {
			return at.UTC().Format(time.RFC3339Nano)
		}
		return "now"
	}
	attrs := func(kvs []attribute.KeyValue) string {
		var b strings.Builder
		for _, kv := range kvs {
			v := kv.Value.String()
			if strings.HasPrefix(v, "goroutine ") {
				v = "<stack>"
			}
			fmt.Fprintf(&b, "%s=%s(%s) ", kv.Key, v, kv.Value.Type())
		}
		return b.String()
	}
	var out []string
	for _, s := range spans {
		line := fmt.Sprintf("%s kind=%v ctx=%s parent=%s start=%s end=%s status=%v %q attrs=[%s] dropped=%d/%d/%d",
			s.Name, s.SpanKind, ctx(s.SpanContext), ctx(s.Parent), when(s.StartTime), when(s.EndTime),
			s.Status.Code, s.Status.Description, attrs(s.Attributes), s.DroppedAttributes, s.DroppedEvents, s.DroppedLinks)
		for _, e := range s.Events {
			line += fmt.Sprintf("\n  event %s at=%s attrs=[%s] dropped=%d", e.Name, when(e.Time), attrs(e.Attributes), e.DroppedAttributeCount)
		}
		for _, l := range s.Links {
			line += fmt.Sprintf("\n  link %s attrs=[%s] dropped=%d", ctx(l.SpanContext), attrs(l.Attributes), l.DroppedAttributeCount)
		}
		out = append(out, line)
	}
	return out
}

type testError struct{}

func (testError) Error() string { return "test error" }

// TestSDKMatchesOfficial: every call Spool's code makes on spans (and the
// rest of the API), including limits, duplicates, invalid input, status
// precedence, remote and unsampled parents, links, events, errors,
// explicit times, calls after End and a panic through a deferred End,
// records the same spans in both SDKs.
func TestSDKMatchesOfficial(t *testing.T) {
	t.Parallel()
	fixed := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 1}, SpanID: trace.SpanID{0, 0xf0, 0x67}, TraceFlags: trace.FlagsSampled,
		TraceState: mustState(t, "vendor=x"), Remote: true,
	})
	unsampled := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{9, 9}, SpanID: trace.SpanID{8, 8}, Remote: true,
	})
	scenario := func(tp trace.TracerProvider) {
		tr := tp.Tracer("spool/test", trace.WithInstrumentationVersion("1.0"))

		// A server span continuing a remote caller, with duplicate,
		// invalid and over-limit attributes, a long value, and every
		// status transition.
		ctx, server := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "server",
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("a", "1"), attribute.String("b", "long value here"), attribute.String("a", "2"),
				attribute.KeyValue{Key: "", Value: attribute.StringValue("no key")}))
		server.SetAttributes(attribute.Int("c", 3), attribute.StringSlice("d", []string{"abcdefgh", "x"}), attribute.Bool("e", true),
			attribute.Int("a", 4), attribute.Float64("f", math.Pi))
		server.SetStatus(codes.Error, "first")
		server.SetStatus(codes.Unset, "ignored")
		server.SetStatus(codes.Error, "second")
		server.SetName("server renamed")

		// A child with events (over the limit, with duplicate and
		// over-limit attributes), errors, links (one invalid, one over
		// the limit), Ok winning over Error.
		_, child := tr.Start(ctx, "child", trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithLinks(trace.Link{SpanContext: remote, Attributes: []attribute.KeyValue{attribute.String("l", "1"), attribute.String("l", "2"), attribute.Int("m", 1), attribute.Int("n", 2)}},
				trace.Link{}))
		child.AddEvent("e1", trace.WithTimestamp(fixed), trace.WithAttributes(attribute.String("x", "1"), attribute.String("y", "2"), attribute.String("z", "3"), attribute.String("x", "4")))
		child.AddEvent("e2", trace.WithTimestamp(fixed))
		child.RecordError(fmt.Errorf("wrapped: %w", testError{}), trace.WithTimestamp(fixed))
		child.RecordError(testError{}, trace.WithTimestamp(fixed), trace.WithStackTrace(true))
		child.RecordError(nil)
		child.AddLink(trace.Link{SpanContext: server.SpanContext()})
		child.AddLink(trace.Link{SpanContext: unsampled})
		child.SetStatus(codes.Ok, "dropped with Ok")
		child.SetStatus(codes.Error, "too late")
		child.End()
		child.SetAttributes(attribute.String("after", "end"))
		child.AddEvent("after end")
		child.End()
		server.End(trace.WithTimestamp(fixed.Add(time.Second)))

		// A new root despite a parent, with explicit times; an
		// unsampled remote parent's child (not recorded, but its
		// context carries on).
		_, root := tr.Start(ctx, "new root", trace.WithNewRoot(), trace.WithTimestamp(fixed), trace.WithSpanKind(trace.SpanKind(99)))
		root.End(trace.WithTimestamp(fixed.Add(time.Second)))
		uctx, dropped := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), unsampled), "unsampled")
		if dropped.IsRecording() || dropped.SpanContext().TraceID() != unsampled.TraceID() || dropped.SpanContext().IsSampled() {
			t.Errorf("unsampled parent's child: recording %v, context %v", dropped.IsRecording(), dropped.SpanContext())
		}
		_, grandchild := tr.Start(uctx, "unsampled child")
		grandchild.End()
		dropped.End()

		// A panic through a deferred End is recorded and goes on.
		func() {
			defer func() { _ = recover() }()
			_, s := tr.Start(context.Background(), "panicking")
			defer s.End()
			panic("boom")
		}()
	}
	limits := spanLimits{attrs: 5, valueLength: 6, events: 3, links: 2, attrsPerEvent: 2, attrsPerLink: 2}
	official, spool := recordWithSDKs(t, limits, scenario)
	want, got := comparable(official, fixed), comparable(spool, fixed)
	if len(want) != 4 {
		t.Fatalf("the official SDK recorded %d spans, want 4:\n%s", len(want), strings.Join(want, "\n"))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Spool's SDK recorded\n%s\n\nthe official SDK\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range spool {
		if explicit := s.StartTime.Equal(fixed) || s.EndTime.Equal(fixed.Add(time.Second)); !explicit &&
			(s.EndTime.Before(s.StartTime) || time.Since(s.StartTime) > time.Minute) {
			t.Errorf("%s: times %s–%s", s.Name, s.StartTime, s.EndTime)
		}
	}
}

func mustState(t *testing.T, s string) trace.TraceState {
	t.Helper()
	ts, err := trace.ParseTraceState(s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestSDKSamplers: each OTEL_TRACES_SAMPLER decides as the official
// sampler of that name, for roots, remote and local parents, sampled or
// not, and for trace-id ratios over the same trace ids.
func TestSDKSamplers(t *testing.T) {
	t.Parallel()
	ratio := func(r float64) sdktrace.Sampler { return sdktrace.TraceIDRatioBased(r) }
	for _, tc := range []struct {
		env      string
		arg      string
		official sdktrace.Sampler
	}{
		{"", "", sdktrace.ParentBased(sdktrace.AlwaysSample())},
		{"always_on", "", sdktrace.AlwaysSample()},
		{"always_off", "", sdktrace.NeverSample()},
		{"traceidratio", "0.25", ratio(0.25)},
		{"traceidratio", "", ratio(1)},
		{"parentbased_always_on", "", sdktrace.ParentBased(sdktrace.AlwaysSample())},
		{"parentbased_always_off", "", sdktrace.ParentBased(sdktrace.NeverSample())},
		{"parentbased_traceidratio", "0.5", sdktrace.ParentBased(ratio(0.5))},
		{"PARENTBASED_TRACEIDRATIO", "0", sdktrace.ParentBased(ratio(0))},
	} {
		st, err := sdkSettingsFromEnv(envOf(map[string]string{"OTEL_TRACES_SAMPLER": tc.env, "OTEL_TRACES_SAMPLER_ARG": tc.arg}))
		if err != nil {
			t.Fatalf("%s %s: %v", tc.env, tc.arg, err)
		}
		parents := []trace.SpanContext{{}}
		for _, remote := range []bool{false, true} {
			for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled} {
				parents = append(parents, trace.NewSpanContext(trace.SpanContextConfig{
					TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: flags, Remote: remote}))
			}
		}
		sampledRoots := 0
		for i := range 2000 {
			id := newTraceID()
			parent := parents[i%len(parents)]
			want := tc.official.ShouldSample(sdktrace.SamplingParameters{
				ParentContext: trace.ContextWithSpanContext(context.Background(), parent), TraceID: id,
			}).Decision == sdktrace.RecordAndSample
			if got := st.sampler.sample(parent, id); got != want {
				t.Errorf("%s %s: parent %v trace %s: sampled %v, the official sampler %v", tc.env, tc.arg, parent, id, got, want)
				break
			}
			if !parent.IsValid() && want {
				sampledRoots++
			}
		}
		if tc.arg == "0.25" && (sampledRoots < 60 || sampledRoots > 140) {
			t.Errorf("traceidratio 0.25 kept %d of ~400 roots", sampledRoots)
		}
	}
}

// TestSDKSettingsFromEnv: limits and batch settings are read, the SPAN_
// forms winning, and malformed values fail naming the variable.
func TestSDKSettingsFromEnv(t *testing.T) {
	t.Parallel()
	st, err := sdkSettingsFromEnv(envOf(nil))
	if err != nil || st.limits != defaultSpanLimits || st.batch != defaultBatchConfig {
		t.Fatalf("defaults: %+v %v", st, err)
	}
	st, err = sdkSettingsFromEnv(envOf(map[string]string{
		"OTEL_ATTRIBUTE_COUNT_LIMIT": "10", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "20", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "30",
		"OTEL_SPAN_EVENT_COUNT_LIMIT": "-1", "OTEL_SPAN_LINK_COUNT_LIMIT": "0", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "4", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "5",
		"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "200", "OTEL_BSP_SCHEDULE_DELAY": "250", "OTEL_BSP_EXPORT_TIMEOUT": "1000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if want := (spanLimits{attrs: 20, valueLength: 30, events: -1, links: 0, attrsPerEvent: 4, attrsPerLink: 5}); st.limits != want {
		t.Errorf("limits %+v, want %+v", st.limits, want)
	}
	// A batch larger than the queue is cut to the queue, as the Go SDK does.
	if want := (batchConfig{queueSize: 100, batchSize: 100, delayMillis: 250, timeoutMillis: 1000}); st.batch != want {
		t.Errorf("batch %+v, want %+v", st.batch, want)
	}
	for name, value := range map[string]string{
		"OTEL_TRACES_SAMPLER":             "probabilistic",
		"OTEL_TRACES_SAMPLER_ARG":         "1.5",
		"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "many",
		"OTEL_BSP_MAX_QUEUE_SIZE":         "0",
		"OTEL_BSP_SCHEDULE_DELAY":         "5s",
	} {
		env := map[string]string{name: value}
		if name == "OTEL_TRACES_SAMPLER_ARG" {
			env["OTEL_TRACES_SAMPLER"] = "traceidratio"
		}
		if _, err := sdkSettingsFromEnv(envOf(env)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: err %v, want one naming the variable", name, value, err)
		}
	}
}

// TestSDKResource: the resource holds service.name (OTEL_SERVICE_NAME
// winning over OTEL_RESOURCE_ATTRIBUTES, which wins over the default),
// service.version, host.name and telemetry.sdk.*, URL-decoded values, and
// names the malformed entries by position.
func TestSDKResource(t *testing.T) {
	t.Parallel()
	get := func(res *spanResource, k string) string {
		for _, kv := range res.attrs {
			if string(kv.Key) == k {
				return kv.Value.AsString()
			}
		}
		return "<unset>"
	}
	res, bad := resourceFromEnv(envOf(nil), "1.2.3", "https://opentelemetry.io/schemas/1.43.0")
	if get(res, "service.name") != "spool" || get(res, "service.version") != "1.2.3" || get(res, "telemetry.sdk.language") != "go" ||
		get(res, "telemetry.sdk.name") != httpTracerName || get(res, "host.name") == "<unset>" || len(bad) != 0 {
		t.Errorf("defaults %v, bad %v", res.attrs, bad)
	}
	if res.schemaURL != "https://opentelemetry.io/schemas/1.43.0" {
		t.Errorf("schema %q", res.schemaURL)
	}
	res, bad = resourceFromEnv(envOf(map[string]string{
		"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs, deployment.environment.name = prod%20eu ,broken,=novalue,k8s.pod.name=p-1",
	}), "1.2.3", "")
	if get(res, "service.name") != "from-attrs" || get(res, "deployment.environment.name") != "prod eu" || get(res, "k8s.pod.name") != "p-1" {
		t.Errorf("with OTEL_RESOURCE_ATTRIBUTES: %v", res.attrs)
	}
	if !reflect.DeepEqual(bad, []int{3, 4}) {
		t.Errorf("malformed entries %v, want [3 4]", bad)
	}
	res, _ = resourceFromEnv(envOf(map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=a", "OTEL_SERVICE_NAME": "b"}), "1", "")
	if get(res, "service.name") != "b" {
		t.Errorf("OTEL_SERVICE_NAME does not win: %v", res.attrs)
	}
	for i := 1; i < len(res.attrs); i++ {
		if res.attrs[i-1].Key >= res.attrs[i].Key {
			t.Errorf("attributes not sorted and unique: %v", res.attrs)
		}
	}
	// The same resource as the official SDK builds from the same entries.
	official := resource.NewSchemaless(res.attrs...)
	if !reflect.DeepEqual(official.Attributes(), res.attrs) {
		t.Errorf("resource %v, the SDK's %v", res.attrs, official.Attributes())
	}
}

// fakeExporter records batches; export blocks while gate is held.
type fakeExporter struct {
	mu       sync.Mutex
	batches  [][]string
	err      error
	gate     chan struct{} // when not nil, each export waits for a value (or ctx)
	shutdown int
}

func (f *fakeExporter) ExportSpans(ctx context.Context, spans []*spanData) error {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, s := range spans {
		names = append(names, s.name)
	}
	f.batches = append(f.batches, names)
	return f.err
}

func (f *fakeExporter) Shutdown(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdown++
	return nil
}

func (f *fakeExporter) got() ([][]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]string(nil), f.batches...), f.shutdown
}

func sampledSpan(name string) *spanData {
	return &spanData{name: name, sc: trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: newTraceID(), SpanID: newSpanID(), TraceFlags: trace.FlagsSampled})}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestBatchProcessor: a full batch goes at once, a partial one after the
// delay; unsampled spans are not exported; shutdown exports what is
// queued, then shuts the exporter down; later spans are dropped.
func TestBatchProcessor(t *testing.T) {
	t.Parallel()
	exp := &fakeExporter{}
	b := newBatchProcessor(exp, batchConfig{queueSize: 10, batchSize: 2, delayMillis: 200, timeoutMillis: 1000}, nil)
	b.onEnd(sampledSpan("a"))
	b.onEnd(&spanData{name: "unsampled"})
	b.onEnd(sampledSpan("b"))
	waitFor(t, "the full batch", func() bool { got, _ := exp.got(); return len(got) == 1 })
	began := time.Now()
	b.onEnd(sampledSpan("c"))
	waitFor(t, "the partial batch", func() bool { got, _ := exp.got(); return len(got) == 2 })
	if took := time.Since(began); took < 100*time.Millisecond {
		t.Errorf("partial batch exported after %s, before the 200ms delay", took)
	}
	b.onEnd(sampledSpan("d"))
	if err := b.shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.onEnd(sampledSpan("after shutdown"))
	got, shutdowns := exp.got()
	if want := [][]string{{"a", "b"}, {"c"}, {"d"}}; !reflect.DeepEqual(got, want) || shutdowns != 1 {
		t.Errorf("batches %v, exporter shut down %d times; want %v and once", got, shutdowns, want)
	}
	if err := b.shutdown(context.Background()); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
}

// TestBatchProcessorNeverBlocks: with the exporter stuck, a full queue
// drops spans at once rather than wait, the drops and the export failures
// are logged as "opentelemetry" warnings, and shutdown gives up at its
// deadline.
func TestBatchProcessorNeverBlocks(t *testing.T) {
	t.Parallel()
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	exp := &fakeExporter{gate: make(chan struct{}), err: errors.New("receiver said no")}
	b := newBatchProcessor(exp, batchConfig{queueSize: 4, batchSize: 1, delayMillis: 50, timeoutMillis: 60000}, log)
	began := time.Now()
	for i := range 100 {
		b.onEnd(sampledSpan(fmt.Sprint(i)))
	}
	if took := time.Since(began); took > 100*time.Millisecond {
		t.Errorf("100 spans took %s to end with the exporter stuck", took)
	}
	exp.gate <- struct{}{} // let one export through, failing
	waitFor(t, "the drop report", func() bool { return strings.Contains(logBuf.String(), "spans dropped") })
	// The exporter is stuck again on the next batch: shutdown gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := b.shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown with the exporter stuck: %v, want the deadline", err)
	}
	out := logBuf.String()
	for _, want := range []string{"level=WARN msg=opentelemetry", "receiver said no", "OTEL_BSP_MAX_QUEUE_SIZE=4"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// BenchmarkSpan: a server-like span (start with attributes, two more at
// the end, status) on each SDK, exporting to nowhere. Spool's must not be
// slower than the SDK it replaces.
func BenchmarkSpan(b *testing.B) {
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", "POST"), attribute.String("http.route", "/v1/queues/{queue}/tasks"),
		attribute.String("url.path", "/v1/queues/q/tasks"), attribute.String("url.scheme", "http"),
		attribute.String("server.address", "spool"), attribute.Int("server.port", 8000),
		attribute.String("network.protocol.version", "1.1"), attribute.String("network.peer.address", "10.0.0.1"),
		attribute.Int("network.peer.port", 40000), attribute.String("client.address", "10.0.0.1"),
		attribute.String("user_agent.original", "curl/8"),
	}
	run := func(b *testing.B, tp trace.TracerProvider) {
		tr := tp.Tracer("bench")
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, s := tr.Start(ctx, "POST /v1/queues/{queue}/tasks", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
				s.SetAttributes(attribute.Int("http.response.status_code", 201))
				s.SetStatus(codes.Unset, "")
				s.End()
			}
		})
	}
	b.Run("spool", func(b *testing.B) {
		res, _ := resourceFromEnv(envOf(nil), "bench", "")
		run(b, newTracerProvider(res, newSampler(true, 1), defaultSpanLimits, func(*spanData) {}))
	})
	b.Run("official", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(nopProcessor{}))
		run(b, tp)
	})
}

type nopProcessor struct{}

func (nopProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (nopProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (nopProcessor) Shutdown(context.Context) error                  { return nil }
func (nopProcessor) ForceFlush(context.Context) error                { return nil }
