package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultServiceName is service.name when OTEL_SERVICE_NAME is not set.
const DefaultServiceName = "spool"

// Tracing is the process's OpenTelemetry setup: a tracer provider (the SDK
// with an OTLP exporter, or the no-op provider when tracing is off) and the
// W3C trace-context propagator, which works either way so a caller's
// traceparent still reaches the delivered request with tracing off. It is
// passed to the API and the dispatcher explicitly; nothing is installed as
// the otel global provider.
type Tracing struct {
	provider   trace.TracerProvider
	propagator propagation.TextMapPropagator
	sdk        *sdktrace.TracerProvider // nil when off or when the caller owns the provider
	exporter   string                   // "otlp (http/json) <url>", or "" when off
}

// NewTracing configures tracing from the standard OTEL_* variables, looked
// up through env (os.LookupEnv in production):
//
//   - Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT,
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER is set, and
//     off when none is, when OTEL_TRACES_EXPORTER is "none" or when
//     OTEL_SDK_DISABLED is "true". Only the "otlp" exporter is supported.
//   - Spans go over OTLP/HTTP, encoded as OTLP/JSON, by Spool's own
//     exporter (otlphttp.go), which reads the endpoint, headers, timeout,
//     compression and TLS files from OTEL_EXPORTER_OTLP_(TRACES_)*.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
//     "http/json", or "http/protobuf" (the specification's default), which
//     is served by the same exporter and so also sends JSON. That is a
//     deliberate trade: the official OTLP exporters link gRPC and the
//     generated protobuf code, which nearly double the binary, while the
//     common OTLP/HTTP receivers (the Collector, Jaeger, Tempo) accept
//     JSON on the same path as protobuf (docs/operations.md, "Why JSON, and
//     no gRPC", names the exceptions and the workaround). "grpc" is refused
//     with an error saying to use the receiver's OTLP/HTTP port (4318).
//   - OTEL_SERVICE_NAME (default "spool") and OTEL_RESOURCE_ATTRIBUTES name
//     the resource; service.version is version.
//
// The SDK reads the rest itself from the process environment: the sampler
// (OTEL_TRACES_SAMPLER, default parent-based always-on) and the batch
// span processor's sizes (OTEL_BSP_*). log receives export failures.
func NewTracing(ctx context.Context, env func(string) (string, bool), version string, log *slog.Logger) (*Tracing, error) {
	get := func(k string) string { v, _ := env(k); return strings.TrimSpace(v) }
	off := &Tracing{provider: noop.NewTracerProvider(), propagator: propagation.TraceContext{}}

	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return off, nil
	}
	exporter := strings.ToLower(get("OTEL_TRACES_EXPORTER"))
	switch exporter {
	case "none":
		return off, nil
	case "":
		if get("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return off, nil
		}
	case "otlp":
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: Spool supports only \"otlp\" or \"none\"", exporter)
	}

	protocol := get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	protocolVar := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if protocol == "" {
		protocol, protocolVar = get("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch protocol {
	case "", "http/protobuf", "http/json":
		// Both HTTP protocols are served as OTLP/JSON; see above.
	case "grpc":
		return nil, fmt.Errorf("%s=grpc: Spool exports traces over OTLP/HTTP only; "+
			"set it to http/protobuf (or unset it) and point the endpoint at the receiver's OTLP/HTTP port (4318), "+
			"e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318", protocolVar)
	default:
		return nil, fmt.Errorf("%s=%q: Spool supports \"http/protobuf\" or \"http/json\" (both sent as OTLP/JSON over HTTP)", protocolVar, protocol)
	}
	cfg, err := otlpHTTPConfigFromEnv(get)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if cfg.endpoint.Port() == "4317" && log != nil {
		log.Warn("the OTLP endpoint uses port 4317, by convention OTLP/gRPC; Spool sends OTLP/HTTP, usually on 4318",
			"url.full", safeURL(cfg.endpoint))
	}
	exp := newOTLPHTTPExporter(cfg, version)

	service := get("OTEL_SERVICE_NAME")
	if service == "" {
		service = DefaultServiceName
	}
	// Later options win: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (read
	// by WithFromEnv) override the defaults given first.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(
			attribute.String("service.name", service),
			attribute.String("service.version", version),
		),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	if log != nil {
		// The SDK reports export failures only through this process-wide
		// hook; without it they go to stderr as plain text, outside the
		// ECS log stream.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("opentelemetry", "error.message", err.Error())
		}))
	}
	sdk := sdktrace.NewTracerProvider(
		// The processor buffers spans (OTEL_BSP_MAX_QUEUE_SIZE, 2048) and
		// exports them from its own goroutine, so a slow receiver never
		// delays a request or a delivery.
		sdktrace.WithSpanProcessor(sdktrace.NewBatchSpanProcessor(exp)),
		sdktrace.WithResource(res),
	)
	return &Tracing{
		provider:   sdk,
		propagator: propagation.TraceContext{},
		sdk:        sdk,
		exporter:   "otlp (http/json) " + exp.Endpoint(),
	}, nil
}

// NewTracingWith wraps a provider the caller built and owns (tests use an
// SDK provider with an in-memory exporter); Shutdown leaves it alone.
func NewTracingWith(tp trace.TracerProvider) *Tracing {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return &Tracing{provider: tp, propagator: propagation.TraceContext{}, exporter: "caller's provider"}
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.exporter != "" }

// Exporter names the exporter in use ("" when tracing is off), for the
// start-up log line.
func (t *Tracing) Exporter() string { return t.exporter }

// TracerProvider is the provider the API and the dispatcher start spans
// from: the SDK's, or the no-op provider, whose spans still carry their
// parent's context.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Propagator reads and writes W3C traceparent headers.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.propagator }

// Shutdown exports the spans still buffered and stops the exporter; call it
// last in the shutdown sequence, with a deadline. A no-op when tracing is
// off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing shutdown: %w", err)
	}
	return nil
}
