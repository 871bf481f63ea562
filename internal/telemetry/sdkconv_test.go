package telemetry

import (
	"sync"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Conversions between the official SDK's span snapshots and Spool's, for
// tests only: the exporter tests describe their spans with the SDK's
// tracetest stubs, and the SDK tests compare what both SDKs record.

// fromSDK converts SDK snapshots; spans sharing a resource or a scope
// share one, as spans from one provider and tracer do.
func fromSDK(spans []sdktrace.ReadOnlySpan) []*spanData {
	resources := map[*resource.Resource]*spanResource{}
	scopes := map[instrumentation.Scope]*spanScope{}
	out := make([]*spanData, 0, len(spans))
	for _, s := range spans {
		res, ok := resources[s.Resource()]
		if !ok && s.Resource() != nil {
			res = &spanResource{attrs: s.Resource().Attributes(), schemaURL: s.Resource().SchemaURL()}
			resources[s.Resource()] = res
		}
		scope, ok := scopes[s.InstrumentationScope()]
		if !ok {
			is := s.InstrumentationScope()
			scope = &spanScope{name: is.Name, version: is.Version, schemaURL: is.SchemaURL, attrs: is.Attributes}
			scopes[is] = scope
		}
		d := &spanData{
			name: s.Name(), sc: s.SpanContext(), parent: s.Parent(), kind: s.SpanKind(),
			start: s.StartTime(), end: s.EndTime(), attrs: s.Attributes(),
			droppedAttrs: s.DroppedAttributes(), droppedEvents: s.DroppedEvents(), droppedLinks: s.DroppedLinks(),
			status: s.Status().Code, statusMsg: s.Status().Description,
			resource: res, scope: scope,
		}
		for _, e := range s.Events() {
			d.events = append(d.events, spanEvent{name: e.Name, time: e.Time, attrs: e.Attributes, dropped: e.DroppedAttributeCount})
		}
		for _, l := range s.Links() {
			d.links = append(d.links, spanLink{sc: l.SpanContext, attrs: l.Attributes, dropped: l.DroppedAttributeCount})
		}
		out = append(out, d)
	}
	return out
}

// toStub converts one of Spool's spans to the SDK's stub form.
func toStub(d *spanData) tracetest.SpanStub {
	st := tracetest.SpanStub{
		Name: d.name, SpanContext: d.sc, Parent: d.parent, SpanKind: d.kind,
		StartTime: d.start, EndTime: d.end, Attributes: d.attrs,
		DroppedAttributes: d.droppedAttrs, DroppedEvents: d.droppedEvents, DroppedLinks: d.droppedLinks,
		Status: sdktrace.Status{Code: d.status, Description: d.statusMsg},
	}
	for _, e := range d.events {
		st.Events = append(st.Events, sdktrace.Event{Name: e.name, Time: e.time, Attributes: e.attrs, DroppedAttributeCount: e.dropped})
	}
	for _, l := range d.links {
		st.Links = append(st.Links, sdktrace.Link{SpanContext: l.sc, Attributes: l.attrs, DroppedAttributeCount: l.dropped})
	}
	if d.scope != nil {
		st.InstrumentationScope = instrumentation.Scope{Name: d.scope.name, Version: d.scope.version, SchemaURL: d.scope.schemaURL, Attributes: d.scope.attrs}
	}
	if d.resource != nil {
		st.Resource = resource.NewWithAttributes(d.resource.schemaURL, d.resource.attrs...)
	}
	return st
}

// SpanRecorder collects the spans a Tracing over Spool's SDK ends, as the
// SDK's stubs (this file is compiled only into tests, so the external test
// package uses it too).
type SpanRecorder struct {
	mu    sync.Mutex
	spans []*spanData
}

// NewRecordedTracing is a Tracing over Spool's SDK (parent-based
// always-on sampling, default limits) whose spans go, synchronously, to
// the returned recorder instead of an exporter.
func NewRecordedTracing() (*Tracing, *SpanRecorder) {
	r := &SpanRecorder{}
	res, _ := resourceFromEnv(func(string) string { return "" }, "test", "")
	tp := newTracerProvider(res, newSampler(true, 1), defaultSpanLimits, r.record)
	return &Tracing{provider: tp, propagator: propagation.TraceContext{}, exporter: "recorder"}, r
}

func (r *SpanRecorder) record(d *spanData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, d)
}

// GetSpans returns the spans ended so far.
func (r *SpanRecorder) GetSpans() tracetest.SpanStubs {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(tracetest.SpanStubs, 0, len(r.spans))
	for _, d := range r.spans {
		out = append(out, toStub(d))
	}
	return out
}
