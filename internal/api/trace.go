package api

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the API's own spans.
const tracerName = "github.com/spoolhq/spool/internal/api"

// traceContext is the context an enqueue continues: the server span that
// Config.Instrument started (which already continues the caller's
// traceparent), or, when nothing instrumented the route, the caller's
// traceparent header read here, so it is stored either way.
func traceContext(r *http.Request) context.Context {
	ctx := r.Context()
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
}

// traceParent formats ctx's span context as a W3C traceparent, "" when
// there is none (tracing off and the caller sent none).
func traceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}
