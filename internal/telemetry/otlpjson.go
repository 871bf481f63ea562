package telemetry

import (
	"math"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// This file encodes finished spans as an OTLP ExportTraceServiceRequest in
// the OTLP JSON Protobuf encoding
// (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding): the
// proto3 JSON mapping with lowerCamelCase field names, enums as numbers,
// 64-bit integers as decimal strings, and — unlike plain proto3 JSON —
// trace and span ids as hex strings. It is written by hand, with no
// generated protobuf code, so that the binary carries neither the OTLP
// proto packages nor gRPC (see trace.go).

// otlpRequest is opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest.
type otlpRequest struct {
	ResourceSpans []*otlpResourceSpans `json:"resourceSpans"`
}

type otlpResourceSpans struct {
	Resource   otlpResource      `json:"resource"`
	ScopeSpans []*otlpScopeSpans `json:"scopeSpans"`
	SchemaURL  string            `json:"schemaUrl,omitempty"`
}

type otlpResource struct {
	Attributes []otlpKeyValue `json:"attributes,omitempty"`
}

type otlpScopeSpans struct {
	Scope     *otlpScope `json:"scope,omitempty"`
	Spans     []otlpSpan `json:"spans"`
	SchemaURL string     `json:"schemaUrl,omitempty"`
}

type otlpScope struct {
	Name       string         `json:"name,omitempty"`
	Version    string         `json:"version,omitempty"`
	Attributes []otlpKeyValue `json:"attributes,omitempty"`
}

type otlpSpan struct {
	TraceID                string         `json:"traceId"`
	SpanID                 string         `json:"spanId"`
	TraceState             string         `json:"traceState,omitempty"`
	ParentSpanID           string         `json:"parentSpanId,omitempty"`
	Flags                  uint32         `json:"flags,omitempty"`
	Name                   string         `json:"name"`
	Kind                   int            `json:"kind"`
	StartTimeUnixNano      string         `json:"startTimeUnixNano"`
	EndTimeUnixNano        string         `json:"endTimeUnixNano"`
	Attributes             []otlpKeyValue `json:"attributes,omitempty"`
	DroppedAttributesCount uint32         `json:"droppedAttributesCount,omitempty"`
	Events                 []otlpEvent    `json:"events,omitempty"`
	DroppedEventsCount     uint32         `json:"droppedEventsCount,omitempty"`
	Links                  []otlpLink     `json:"links,omitempty"`
	DroppedLinksCount      uint32         `json:"droppedLinksCount,omitempty"`
	Status                 otlpStatus     `json:"status"`
}

type otlpEvent struct {
	TimeUnixNano           string         `json:"timeUnixNano"`
	Name                   string         `json:"name"`
	Attributes             []otlpKeyValue `json:"attributes,omitempty"`
	DroppedAttributesCount uint32         `json:"droppedAttributesCount,omitempty"`
}

type otlpLink struct {
	TraceID                string         `json:"traceId"`
	SpanID                 string         `json:"spanId"`
	TraceState             string         `json:"traceState,omitempty"`
	Attributes             []otlpKeyValue `json:"attributes,omitempty"`
	DroppedAttributesCount uint32         `json:"droppedAttributesCount,omitempty"`
	Flags                  uint32         `json:"flags,omitempty"`
}

type otlpStatus struct {
	Message string `json:"message,omitempty"`
	Code    int    `json:"code"`
}

type otlpKeyValue struct {
	Key   string       `json:"key"`
	Value otlpAnyValue `json:"value"`
}

// otlpAnyValue is common.v1.AnyValue, a oneof: exactly one field is set,
// or none for an empty value.
type otlpAnyValue struct {
	StringValue *string     `json:"stringValue,omitempty"`
	BoolValue   *bool       `json:"boolValue,omitempty"`
	IntValue    *string     `json:"intValue,omitempty"` // int64: a decimal string
	DoubleValue *otlpDouble `json:"doubleValue,omitempty"`
	ArrayValue  *otlpArray  `json:"arrayValue,omitempty"`
	KvlistValue *otlpKvlist `json:"kvlistValue,omitempty"`
	BytesValue  *[]byte     `json:"bytesValue,omitempty"` // base64, as proto3 JSON has it
}

type otlpArray struct {
	Values []otlpAnyValue `json:"values"`
}

type otlpKvlist struct {
	Values []otlpKeyValue `json:"values"`
}

// otlpDouble writes the non-finite values proto3 JSON spells as strings,
// which encoding/json refuses.
type otlpDouble float64

func (d otlpDouble) MarshalJSON() ([]byte, error) {
	switch f := float64(d); {
	case math.IsNaN(f):
		return []byte(`"NaN"`), nil
	case math.IsInf(f, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(f, -1):
		return []byte(`"-Infinity"`), nil
	default:
		return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
	}
}

// OTLP span flags (trace.v1.SpanFlags): the low byte is the W3C trace
// flags; these two bits say whether the parent (or linked) context is
// remote, and that this is known.
const (
	otlpFlagHasIsRemote = 0x100
	otlpFlagIsRemote    = 0x200
)

// encodeSpans groups spans by resource, then by instrumentation scope, in
// the order they first appear, as OTLP requires. Spans share their
// provider's resource and their tracer's scope, so grouping is by those.
func encodeSpans(spans []*spanData) *otlpRequest {
	type scopeKey struct {
		res   *spanResource
		scope *spanScope
	}
	req := &otlpRequest{}
	byResource := map[*spanResource]*otlpResourceSpans{}
	byScope := map[scopeKey]*otlpScopeSpans{}
	for _, s := range spans {
		if s == nil {
			continue
		}
		rs, ok := byResource[s.resource]
		if !ok {
			rs = &otlpResourceSpans{}
			if s.resource != nil {
				rs.Resource.Attributes = encodeAttrs(s.resource.attrs)
				rs.SchemaURL = s.resource.schemaURL
			}
			byResource[s.resource] = rs
			req.ResourceSpans = append(req.ResourceSpans, rs)
		}
		sk := scopeKey{s.resource, s.scope}
		ss, ok := byScope[sk]
		if !ok {
			ss = &otlpScopeSpans{}
			if sc := s.scope; sc != nil {
				ss.SchemaURL = sc.schemaURL
				if *sc != (spanScope{}) {
					ss.Scope = &otlpScope{Name: sc.name, Version: sc.version, Attributes: encodeAttrs(sc.attrs.ToSlice())}
				}
			}
			byScope[sk] = ss
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		ss.Spans = append(ss.Spans, encodeSpan(s))
	}
	return req
}

func encodeSpan(s *spanData) otlpSpan {
	sc := s.sc
	out := otlpSpan{
		TraceID:                sc.TraceID().String(),
		SpanID:                 sc.SpanID().String(),
		TraceState:             sc.TraceState().String(),
		Flags:                  otlpFlags(sc.TraceFlags(), s.parent),
		Name:                   s.name,
		Kind:                   otlpKind(s.kind),
		StartTimeUnixNano:      unixNano(s.start.UnixNano()),
		EndTimeUnixNano:        unixNano(s.end.UnixNano()),
		Attributes:             encodeAttrs(s.attrs),
		DroppedAttributesCount: clampUint32(s.droppedAttrs),
		DroppedEventsCount:     clampUint32(s.droppedEvents),
		DroppedLinksCount:      clampUint32(s.droppedLinks),
		Status:                 otlpStatusOf(s.status, s.statusMsg),
	}
	if p := s.parent.SpanID(); p.IsValid() {
		out.ParentSpanID = p.String()
	}
	for _, e := range s.events {
		out.Events = append(out.Events, otlpEvent{
			TimeUnixNano:           unixNano(e.time.UnixNano()),
			Name:                   e.name,
			Attributes:             encodeAttrs(e.attrs),
			DroppedAttributesCount: clampUint32(e.dropped),
		})
	}
	for _, l := range s.links {
		out.Links = append(out.Links, otlpLink{
			TraceID:                l.sc.TraceID().String(),
			SpanID:                 l.sc.SpanID().String(),
			TraceState:             l.sc.TraceState().String(),
			Attributes:             encodeAttrs(l.attrs),
			DroppedAttributesCount: clampUint32(l.dropped),
			Flags:                  otlpFlags(l.sc.TraceFlags(), l.sc),
		})
	}
	return out
}

// otlpFlags is the span's (or link's) W3C trace flags plus whether the
// parent (or linked) context is remote.
func otlpFlags(tf trace.TraceFlags, other trace.SpanContext) uint32 {
	f := uint32(tf) | otlpFlagHasIsRemote
	if other.IsRemote() {
		f |= otlpFlagIsRemote
	}
	return f
}

// otlpKind maps the API's span kinds to trace.v1.Span.SpanKind; the
// numbers happen to agree, but the mapping should not rest on that.
func otlpKind(k trace.SpanKind) int {
	switch k {
	case trace.SpanKindInternal:
		return 1
	case trace.SpanKindServer:
		return 2
	case trace.SpanKindClient:
		return 3
	case trace.SpanKindProducer:
		return 4
	case trace.SpanKindConsumer:
		return 5
	default:
		return 0 // SPAN_KIND_UNSPECIFIED
	}
}

// otlpStatusOf maps the API's status codes, whose numbers differ from
// OTLP's (codes.Error is 1 and codes.Ok is 2; OTLP has OK=1, ERROR=2).
func otlpStatusOf(code codes.Code, msg string) otlpStatus {
	switch code {
	case codes.Ok:
		return otlpStatus{Code: 1}
	case codes.Error:
		// The description is kept only with an error, as the API does.
		return otlpStatus{Code: 2, Message: msg}
	default:
		return otlpStatus{Code: 0}
	}
}

func unixNano(ns int64) string {
	// A zero time.Time has a negative UnixNano; OTLP's field is unsigned.
	return strconv.FormatInt(max(ns, 0), 10)
}

func clampUint32(n int) uint32 {
	if n <= 0 {
		return 0
	}
	if int64(n) > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(n)
}

func encodeAttrs(kvs []attribute.KeyValue) []otlpKeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]otlpKeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, otlpKeyValue{Key: string(kv.Key), Value: encodeValue(kv.Value)})
	}
	return out
}

func encodeValue(v attribute.Value) otlpAnyValue {
	switch v.Type() {
	case attribute.EMPTY:
		return otlpAnyValue{}
	case attribute.BOOL:
		b := v.AsBool()
		return otlpAnyValue{BoolValue: &b}
	case attribute.INT64:
		s := strconv.FormatInt(v.AsInt64(), 10)
		return otlpAnyValue{IntValue: &s}
	case attribute.FLOAT64:
		d := otlpDouble(v.AsFloat64())
		return otlpAnyValue{DoubleValue: &d}
	case attribute.STRING:
		s := v.AsString()
		return otlpAnyValue{StringValue: &s}
	case attribute.BYTESLICE:
		b := v.AsByteSlice()
		return otlpAnyValue{BytesValue: &b}
	case attribute.BOOLSLICE:
		return arrayOf(v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		return arrayOf(v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		return arrayOf(v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		return arrayOf(v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		return arrayOf(v.AsSlice(), func(e attribute.Value) attribute.Value { return e })
	case attribute.MAP:
		kvs := encodeAttrs(v.AsMap())
		if kvs == nil {
			kvs = []otlpKeyValue{}
		}
		return otlpAnyValue{KvlistValue: &otlpKvlist{Values: kvs}}
	default:
		// A type newer than this encoder: say so rather than drop the key.
		s := "INVALID"
		return otlpAnyValue{StringValue: &s}
	}
}

func arrayOf[T any](elems []T, value func(T) attribute.Value) otlpAnyValue {
	vals := make([]otlpAnyValue, 0, len(elems))
	for _, e := range elems {
		vals = append(vals, encodeValue(value(e)))
	}
	return otlpAnyValue{ArrayValue: &otlpArray{Values: vals}}
}
