package telemetry

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"reflect"
	"runtime"
	rtrace "runtime/trace"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// This file is Spool's trace SDK: an implementation of the OpenTelemetry
// trace API (go.opentelemetry.io/otel/trace) that records spans and hands
// the sampled ones to the batch span processor (batch.go), which exports
// them with the OTLP/JSON exporter (otlphttp.go). It replaces the official
// SDK (go.opentelemetry.io/otel/sdk), which with what it pulls in (the otel
// global package, the metric and log APIs, go-logr, auto/sdk, its own
// self-observability metrics) cost 0.66 MB of the binary for what Spool
// needs of it: random ids, the standard samplers, span limits and a batch
// processor, all read from the standard OTEL_* variables. The behaviour
// follows the SDK specification and the Go SDK (v1.47); sdk_test.go runs
// the same spans through both and compares what they export.

// spanData is one finished span as the exporter reads it. A span's data
// is written only while the span records, under its lock, and never after
// End hands it to the processor.
type spanData struct {
	name          string
	sc, parent    trace.SpanContext
	kind          trace.SpanKind
	start, end    time.Time
	attrs         []attribute.KeyValue
	events        []spanEvent
	links         []spanLink
	droppedAttrs  int
	droppedEvents int
	droppedLinks  int
	status        codes.Code
	statusMsg     string // kept only with codes.Error
	resource      *spanResource
	scope         *spanScope
}

type spanEvent struct {
	name    string
	time    time.Time
	attrs   []attribute.KeyValue
	dropped int
}

type spanLink struct {
	sc      trace.SpanContext
	attrs   []attribute.KeyValue
	dropped int
}

// spanResource is the entity producing spans (service.name, host.name…);
// one per provider, shared by all its spans, which the exporter groups by
// it.
type spanResource struct {
	attrs     []attribute.KeyValue // unique keys, sorted
	schemaURL string
}

// spanScope is a tracer's instrumentation scope; one per distinct tracer,
// shared by its spans.
type spanScope struct {
	name, version, schemaURL string
	attrs                    attribute.Set
}

// spanLimits bound what one span holds (OTEL_SPAN_*_LIMIT and friends); a
// negative count or length means no limit.
type spanLimits struct {
	attrs, events, links        int
	attrsPerEvent, attrsPerLink int
	valueLength                 int // characters of a string attribute value
}

var defaultSpanLimits = spanLimits{attrs: 128, events: 128, links: 128, attrsPerEvent: 128, attrsPerLink: 128, valueLength: -1}

// sampler is one of the specification's built-in samplers: parent-based
// (follow a valid parent's sampled flag) or not, over a root decision by
// trace-id ratio (1 = always_on, 0 = always_off).
type sampler struct {
	parentBased bool
	ratio       float64
	bound       uint64 // traceidratio: sample when the id's low 63 bits are below it
}

func newSampler(parentBased bool, ratio float64) sampler {
	s := sampler{parentBased: parentBased, ratio: min(max(ratio, 0), 1)}
	s.bound = uint64(s.ratio * (1 << 63))
	return s
}

// sample is the decision for a new span: record and sample, or drop.
func (s sampler) sample(parent trace.SpanContext, id trace.TraceID) bool {
	if s.parentBased && parent.IsValid() {
		return parent.IsSampled()
	}
	switch {
	case s.ratio >= 1:
		return true
	case s.ratio <= 0:
		return false
	}
	// As the Go SDK does (and so the same traces are kept by Spool and by
	// other services sampling at the same ratio): the id's last 8 bytes.
	return binary.BigEndian.Uint64(id[8:16])>>1 < s.bound
}

// tracerProvider implements trace.TracerProvider.
type tracerProvider struct {
	embedded.TracerProvider

	resource *spanResource
	sampler  sampler
	limits   spanLimits
	onEnd    func(*spanData) // receives each sampled span once ended; nil drops them

	mu      sync.Mutex
	tracers map[spanScope]*tracer
}

func newTracerProvider(res *spanResource, s sampler, limits spanLimits, onEnd func(*spanData)) *tracerProvider {
	return &tracerProvider{resource: res, sampler: s, limits: limits, onEnd: onEnd, tracers: map[spanScope]*tracer{}}
}

// Tracer returns the provider's tracer for one instrumentation scope; the
// same scope gets the same tracer.
func (p *tracerProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	c := trace.NewTracerConfig(opts...)
	scope := spanScope{name: name, version: c.InstrumentationVersion(), schemaURL: c.SchemaURL(), attrs: c.InstrumentationAttributes()}
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.tracers[scope]
	if !ok {
		t = &tracer{provider: p, scope: &scope}
		p.tracers[scope] = t
	}
	return t
}

type tracer struct {
	embedded.Tracer
	provider *tracerProvider
	scope    *spanScope
}

// Start starts a span, a child of the span context in ctx unless
// trace.WithNewRoot is given. A span the sampler drops still gets its own
// span id and carries its parent's trace id and trace state, so the trace
// context propagates through it unsampled.
func (t *tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if ctx == nil {
		ctx = context.Background()
	}
	c := trace.NewSpanStartConfig(opts...)
	var parent trace.SpanContext
	if !c.NewRoot() {
		parent = trace.SpanContextFromContext(ctx)
	}
	p := t.provider
	scc := trace.SpanContextConfig{TraceID: parent.TraceID(), SpanID: newSpanID(), TraceState: parent.TraceState()}
	if !scc.TraceID.IsValid() {
		scc.TraceID = newTraceID()
	}
	if !p.sampler.sample(parent, scc.TraceID) {
		scc.TraceFlags = parent.TraceFlags() &^ trace.FlagsSampled
		s := &nonRecordingSpan{sc: trace.NewSpanContext(scc), provider: p}
		return trace.ContextWithSpan(ctx, s), s
	}
	scc.TraceFlags = parent.TraceFlags() | trace.FlagsSampled

	start := c.Timestamp()
	if start.IsZero() {
		start = time.Now()
	}
	s := &recordingSpan{provider: p, d: spanData{
		name: name, sc: trace.NewSpanContext(scc), parent: parent,
		kind: trace.ValidateSpanKind(c.SpanKind()), start: start,
		resource: p.resource, scope: t.scope,
	}}
	for _, l := range c.Links() {
		s.addLink(l)
	}
	s.addAttrs(c.Attributes())
	ctx = trace.ContextWithSpan(ctx, s)
	if rtrace.IsEnabled() {
		// Under `go tool trace` (e.g. /debug/pprof/trace) a span is also a
		// runtime task, as the Go SDK makes it.
		var task *rtrace.Task
		ctx, task = rtrace.NewTask(ctx, name)
		s.endTask = task.End
	}
	return ctx, s
}

// newTraceID and newSpanID draw from math/rand/v2's per-thread ChaCha8
// generator, as the Go SDK does: ids must be unique and random, not secret.
func newTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

// recordingSpan is a sampled span until End.
type recordingSpan struct {
	embedded.Span
	provider *tracerProvider
	endTask  func() // ends the runtime/trace task, if any

	mu    sync.Mutex
	ended bool
	d     spanData
}

func (s *recordingSpan) SpanContext() trace.SpanContext { return s.d.sc }

func (s *recordingSpan) TracerProvider() trace.TracerProvider { return s.provider }

func (s *recordingSpan) IsRecording() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended
}

func (s *recordingSpan) SetName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.d.name = name
	}
}

// SetStatus keeps the highest status set: Ok over Error over Unset; the
// description only with Error.
func (s *recordingSpan) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.d.status > code {
		return
	}
	s.d.status, s.d.statusMsg = code, ""
	if code == codes.Error {
		s.d.statusMsg = description
	}
}

func (s *recordingSpan) SetAttributes(kvs ...attribute.KeyValue) {
	if len(kvs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.addAttrs(kvs)
	}
}

// addAttrs sets attributes: a key already set takes the new value in its
// place; an invalid one, or a new key beyond the limit, is dropped and
// counted.
func (s *recordingSpan) addAttrs(kvs []attribute.KeyValue) {
	limit := s.provider.limits
	for _, kv := range kvs {
		if !kv.Valid() {
			s.d.droppedAttrs++
			continue
		}
		kv = truncateValue(kv, limit.valueLength)
		if i := keyIndex(s.d.attrs, kv.Key); i >= 0 {
			s.d.attrs[i] = kv
		} else if limit.attrs >= 0 && len(s.d.attrs) >= limit.attrs {
			s.d.droppedAttrs++
		} else {
			s.d.attrs = append(s.d.attrs, kv)
		}
	}
}

func keyIndex(kvs []attribute.KeyValue, k attribute.Key) int {
	for i := range kvs {
		if kvs[i].Key == k {
			return i
		}
	}
	return -1
}

// truncateValue cuts a string (or each string of a slice) to limit
// characters; limit < 0 leaves it whole.
func truncateValue(kv attribute.KeyValue, limit int) attribute.KeyValue {
	if limit < 0 {
		return kv
	}
	switch kv.Value.Type() {
	case attribute.STRING:
		if s := kv.Value.AsString(); len(s) > limit {
			return kv.Key.String(truncateString(s, limit))
		}
	case attribute.STRINGSLICE:
		v := kv.Value.AsStringSlice()
		for i := range v {
			v[i] = truncateString(v[i], limit)
		}
		return kv.Key.StringSlice(v)
	}
	return kv
}

func truncateString(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	n := 0
	for i := range s {
		if n == limit {
			return s[:i]
		}
		n++
	}
	return s
}

// uniqueAttrs returns kvs with one entry per key (the last value, in the
// place of the first) and at most limit entries, and how many were
// dropped, as an event's or a link's attributes are kept.
func uniqueAttrs(kvs []attribute.KeyValue, limit int) ([]attribute.KeyValue, int) {
	var out []attribute.KeyValue
	dropped := 0
	for _, kv := range kvs {
		if !kv.Valid() {
			dropped++
			continue
		}
		if i := keyIndex(out, kv.Key); i >= 0 {
			out[i] = kv
		} else {
			out = append(out, kv)
		}
	}
	if limit >= 0 && len(out) > limit {
		dropped += len(out) - limit
		out = out[:limit]
	}
	return out, dropped
}

func (s *recordingSpan) AddEvent(name string, opts ...trace.EventOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.addEvent(name, trace.NewEventConfig(opts...))
	}
}

// addEvent keeps the latest events: beyond the limit the oldest goes.
func (s *recordingSpan) addEvent(name string, c trace.EventConfig) {
	attrs, dropped := uniqueAttrs(c.Attributes(), s.provider.limits.attrsPerEvent)
	e := spanEvent{name: name, time: c.Timestamp(), attrs: attrs, dropped: dropped}
	s.d.events, s.d.droppedEvents = evict(s.d.events, e, s.provider.limits.events, s.d.droppedEvents)
}

func evict[T any](q []T, v T, limit, dropped int) ([]T, int) {
	switch {
	case limit == 0:
		return q, dropped + 1
	case limit > 0 && len(q) >= limit:
		copy(q, q[1:])
		q[len(q)-1] = v
		return q, dropped + 1
	}
	return append(q, v), dropped
}

// RecordError adds an "exception" event with the error's type and
// message (and the stack with trace.WithStackTrace); it does not set the
// status.
func (s *recordingSpan) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.addException(typeName(err), err.Error(), opts)
	}
}

func (s *recordingSpan) addException(typ, msg string, opts []trace.EventOption) {
	opts = append(opts, trace.WithAttributes(
		attribute.String("exception.type", typ), attribute.String("exception.message", msg)))
	c := trace.NewEventConfig(opts...)
	if c.StackTrace() {
		buf := make([]byte, 2048)
		buf = buf[:runtime.Stack(buf, false)]
		c = trace.NewEventConfig(append(opts, trace.WithAttributes(attribute.String("exception.stacktrace", string(buf))))...)
	}
	s.addEvent("exception", c)
}

// typeName is exception.type: the package path and name of the error's
// type, as the Go SDK writes it.
func typeName(v any) string {
	t := reflect.TypeOf(v)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String() // an unnamed type, e.g. *errors.errorString
	}
	return t.PkgPath() + "." + t.Name()
}

func (s *recordingSpan) AddLink(l trace.Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.addLink(l)
	}
}

func (s *recordingSpan) addLink(l trace.Link) {
	if !l.SpanContext.IsValid() && len(l.Attributes) == 0 && l.SpanContext.TraceState().Len() == 0 {
		return
	}
	attrs, dropped := uniqueAttrs(l.Attributes, s.provider.limits.attrsPerLink)
	s.d.links, s.d.droppedLinks = evict(s.d.links, spanLink{sc: l.SpanContext, attrs: attrs, dropped: dropped},
		s.provider.limits.links, s.d.droppedLinks)
}

// End ends the span and hands it to the processor; later calls do nothing.
// Called by a deferred statement while the goroutine panics, it records
// the panic as an "exception" event and lets the panic go on.
func (s *recordingSpan) End(opts ...trace.SpanEndOption) {
	// The end time first, before any work lengthens the span; from the
	// start's monotonic clock, so a wall-clock step cannot make it negative.
	end := s.d.start.Add(time.Since(s.d.start))
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	c := trace.NewSpanEndConfig(opts...)
	if p := recover(); p != nil {
		defer panic(p)
		var o []trace.EventOption
		if c.StackTrace() {
			o = append(o, trace.WithStackTrace(true))
		}
		s.addException(typeName(p), fmt.Sprint(p), o)
	}
	if !c.Timestamp().IsZero() {
		end = c.Timestamp()
	}
	s.d.end = end
	s.ended = true
	s.mu.Unlock()
	if s.endTask != nil {
		s.endTask()
	}
	if s.provider.onEnd != nil {
		s.provider.onEnd(&s.d)
	}
}

// nonRecordingSpan is a span the sampler dropped: it only carries its
// context.
type nonRecordingSpan struct {
	embedded.Span
	sc       trace.SpanContext
	provider *tracerProvider
}

func (s *nonRecordingSpan) SpanContext() trace.SpanContext        { return s.sc }
func (s *nonRecordingSpan) TracerProvider() trace.TracerProvider  { return s.provider }
func (*nonRecordingSpan) IsRecording() bool                       { return false }
func (*nonRecordingSpan) End(...trace.SpanEndOption)              {}
func (*nonRecordingSpan) AddEvent(string, ...trace.EventOption)   {}
func (*nonRecordingSpan) AddLink(trace.Link)                      {}
func (*nonRecordingSpan) RecordError(error, ...trace.EventOption) {}
func (*nonRecordingSpan) SetStatus(codes.Code, string)            {}
func (*nonRecordingSpan) SetName(string)                          {}
func (*nonRecordingSpan) SetAttributes(...attribute.KeyValue)     {}

// sdkSettings are the SDK's settings from the standard variables, each
// validated with an error naming the variable.
type sdkSettings struct {
	sampler sampler
	limits  spanLimits
	batch   batchConfig
}

func sdkSettingsFromEnv(get func(string) string) (sdkSettings, error) {
	st := sdkSettings{sampler: newSampler(true, 1), limits: defaultSpanLimits, batch: defaultBatchConfig}

	// OTEL_TRACES_SAMPLER and its argument.
	name := strings.ToLower(get("OTEL_TRACES_SAMPLER"))
	ratio := 1.0
	if arg := get("OTEL_TRACES_SAMPLER_ARG"); arg != "" && strings.HasSuffix(name, "traceidratio") {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return st, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
		}
		ratio = r
	}
	switch name {
	case "", "parentbased_always_on":
	case "always_on":
		st.sampler = newSampler(false, 1)
	case "always_off":
		st.sampler = newSampler(false, 0)
	case "traceidratio":
		st.sampler = newSampler(false, ratio)
	case "parentbased_always_off":
		st.sampler = newSampler(true, 0)
	case "parentbased_traceidratio":
		st.sampler = newSampler(true, ratio)
	default:
		return st, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio, "+
			"parentbased_always_on (the default), parentbased_always_off or parentbased_traceidratio", name)
	}

	// Span limits: an integer, negative for none; the OTEL_SPAN_ forms win
	// over the general attribute limits.
	for _, l := range []struct {
		dst   *int
		names []string
	}{
		{&st.limits.attrs, []string{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"}},
		{&st.limits.valueLength, []string{"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"}},
		{&st.limits.events, []string{"OTEL_SPAN_EVENT_COUNT_LIMIT"}},
		{&st.limits.links, []string{"OTEL_SPAN_LINK_COUNT_LIMIT"}},
		{&st.limits.attrsPerEvent, []string{"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT"}},
		{&st.limits.attrsPerLink, []string{"OTEL_LINK_ATTRIBUTE_COUNT_LIMIT"}},
	} {
		for _, name := range l.names {
			if v := get(name); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return st, fmt.Errorf("%s=%q: want an integer (negative for no limit)", name, v)
				}
				*l.dst = n
				break
			}
		}
	}

	// The batch span processor: positive integers.
	for _, b := range []struct {
		dst  *int
		name string
	}{
		{&st.batch.queueSize, "OTEL_BSP_MAX_QUEUE_SIZE"},
		{&st.batch.batchSize, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"},
		{&st.batch.delayMillis, "OTEL_BSP_SCHEDULE_DELAY"},
		{&st.batch.timeoutMillis, "OTEL_BSP_EXPORT_TIMEOUT"},
	} {
		if v := get(b.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return st, fmt.Errorf("%s=%q: want a positive integer", b.name, v)
			}
			*b.dst = n
		}
	}
	if st.batch.batchSize > st.batch.queueSize {
		// As the Go SDK: a batch cannot be larger than the queue.
		st.batch.batchSize = min(defaultBatchConfig.batchSize, st.batch.queueSize)
	}
	return st, nil
}

// resourceFromEnv is the process's resource, later entries winning:
// telemetry.sdk.*, host.name, service.name and service.version, then
// OTEL_RESOURCE_ATTRIBUTES ("k=v,k2=v2", values URL-decoded), then
// OTEL_SERVICE_NAME. It also returns the OTEL_RESOURCE_ATTRIBUTES entries
// it skipped as malformed (by position, since a value may be private).
func resourceFromEnv(get func(string) string, version, schemaURL string) (*spanResource, []int) {
	kvs := []attribute.KeyValue{
		// Not "opentelemetry": the specification reserves that name for
		// the official SDKs, and asks others to name themselves.
		attribute.String("telemetry.sdk.name", httpTracerName),
		attribute.String("telemetry.sdk.language", "go"),
		attribute.String("telemetry.sdk.version", version),
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		kvs = append(kvs, attribute.String("host.name", h))
	}
	kvs = append(kvs, attribute.String("service.name", DefaultServiceName), attribute.String("service.version", version))
	var bad []int
	if v := get("OTEL_RESOURCE_ATTRIBUTES"); v != "" {
		for i, pair := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(pair, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" {
				bad = append(bad, i+1)
				continue
			}
			val = strings.TrimSpace(val)
			if dec, err := url.PathUnescape(val); err == nil {
				val = dec
			}
			kvs = append(kvs, attribute.String(k, val))
		}
	}
	if v := get("OTEL_SERVICE_NAME"); v != "" {
		kvs = append(kvs, attribute.String("service.name", v))
	}
	set := attribute.NewSet(kvs...) // sorted by key; the last value of a key wins
	return &spanResource{attrs: set.ToSlice(), schemaURL: schemaURL}, bad
}
