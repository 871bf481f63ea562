package dispatch

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/webhook"
)

const (
	// errorBodyBytes of a failed response are kept in last_error.
	errorBodyBytes = 512
	// drainBytes of a response are read so the connection can be reused.
	drainBytes = 64 << 10
)

// deliver makes one attempt. ok is false when the lease was taken away and
// nothing must be recorded. The attempt is a span in the task's trace (a
// child of the enqueue that stored its traceparent), linked to leaseSpan.
func (d *Dispatcher) deliver(parent context.Context, l store.Lease, leaseSpan trace.SpanContext) (c store.Completion, ok bool) {
	t := l.Task
	c = store.Completion{LeaseRef: store.LeaseRef{TaskID: t.ID, Token: l.Token}}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = task.DefaultTimeout
	}
	ctx, span := d.startDelivery(parent, t, leaseSpan)
	defer func() { endDelivery(span, c, ok) }()
	// The task's fields go on a line only when one is written: most
	// deliveries succeed and log nothing at the default level.
	logf := func(level slog.Level, msg string, args ...any) {
		if d.log.Enabled(ctx, level) {
			d.log.Log(ctx, level, msg, append([]any{"spool.task.id", t.ID, "spool.queue", t.Queue, "spool.attempt", t.Attempt}, args...)...)
		}
	}

	// Protect the destination: take a slot of its limit (perhaps after a
	// short wait here), or defer the task without spending the attempt
	// while the destination is busy, held by a Retry-After or behind an
	// open circuit breaker. A target that is not a URL has no destination:
	// the request below fails it.
	var slot *permit
	if name, err := task.DestinationOf(t.Target.URL); err == nil {
		var df *deferral
		slot, df, err = d.dests.acquire(ctx, name)
		switch {
		case err != nil: // the delivery was cancelled while it waited
			if errors.Is(context.Cause(parent), errLeaseLost) {
				return c, false
			}
			c.Outcome, c.LastError = store.Release, "released at shutdown before the attempt was sent"
			return c, true
		case df != nil:
			c.Outcome, c.RetryIn, c.LastError = store.Defer, df.wait, df.reason
			logf(slog.LevelDebug, "deferred", "spool.destination", name, "error.message", df.reason)
			return c, true
		}
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	resp, err := d.send(ctx, t, start)
	status := resp.code()
	elapsed := time.Since(start)
	if m := d.cfg.Metrics; m != nil {
		m.DeliveryDuration.WithLabelValues(t.Queue).Observe(elapsed.Seconds())
	}
	var retryAfter time.Duration
	hasRetryAfter := false
	if err == nil {
		retryAfter, hasRetryAfter = task.RetryAfter(resp.retryAfterHeader(), d.cfg.Now())
	}
	if slot != nil {
		if errors.Is(err, ErrForbiddenTarget) {
			slot.release() // never sent: says nothing of the destination
		} else {
			slot.done(judge(status, err), elapsed, retryAfter, hasRetryAfter)
		}
	}

	switch cause := context.Cause(parent); {
	case errors.Is(cause, errLeaseLost):
		return c, false
	case errors.Is(cause, errShutdown) && err != nil:
		c.Outcome = store.Release
		c.LastError = "released at shutdown before the attempt finished"
		return c, true
	}

	c.LastStatus = status
	statuses := d.retryStatuses(t.Queue)
	switch {
	case err == nil && status >= 200 && status < 300:
		c.Outcome = store.Succeeded
		d.count(t.Queue, "succeeded")
		logf(slog.LevelDebug, "delivered", "http.response.status_code", status, "event.duration", elapsed.Nanoseconds())
		return c, true
	case err != nil && errors.Is(err, ErrForbiddenTarget):
		c.Outcome, c.LastError = store.Fail, err.Error()
	case err != nil && errors.Is(err, errTimeout):
		c.Outcome, c.LastError = retryIf(statuses.Timeout()), err.Error()
	case err != nil:
		c.Outcome, c.LastError = retryIf(statuses.Connection()), err.Error()
	default:
		// The queue's retry_statuses decide (by default 408, 425, 429 and
		// 5xx); other statuses say retrying will not help.
		c.Outcome = retryIf(statuses.Status(status))
	}
	if err == nil {
		c.LastError = resp.describe()
	}
	if c.Outcome == store.Retry {
		// The task's own backoff, unless a Retry-After asks for longer: a
		// Retry-After can slow a task down but never hurry it (Retry-After:
		// 0 must not spend every attempt in a second), nor park it past
		// the longest backoff (a far-future date).
		delay := d.cfg.Backoff.Delay(t.Attempt)
		if hasRetryAfter {
			delay = min(max(delay, retryAfter), max(d.cfg.Backoff.Max, delay))
		}
		// A wait, not a time: the store's clock (PostgreSQL's now()) starts
		// it, so a replica whose clock is off retries neither early nor late.
		c.RetryIn = delay
		if t.Attempt >= t.MaxAttempts {
			c.LastError += fmt.Sprintf(" (attempts exhausted: %d of %d)", t.Attempt, t.MaxAttempts)
			d.count(t.Queue, "failed")
		} else {
			d.count(t.Queue, "retried")
		}
	} else {
		d.count(t.Queue, "failed")
	}
	logf(slog.LevelInfo, "attempt failed", "http.response.status_code", status, "error.message", c.LastError, "event.duration", elapsed.Nanoseconds())
	return c, true
}

// retryIf is Retry when retry holds, else Fail.
func retryIf(retry bool) store.Outcome {
	if retry {
		return store.Retry
	}
	return store.Fail
}

// retryStatuses is a queue's retry_statuses setting as last read.
func (d *Dispatcher) retryStatuses(queue string) task.RetryStatuses {
	d.settingsMu.RLock()
	rs, ok := d.statuses[queue]
	d.settingsMu.RUnlock()
	if !ok {
		return task.DefaultRetryStatuses
	}
	return rs
}

func (d *Dispatcher) count(queue, outcome string) {
	if m := d.cfg.Metrics; m != nil {
		m.Finished.WithLabelValues(queue, outcome).Inc()
	}
}

// response is what an attempt learned from the target.
type response struct {
	status     int
	retryAfter string
	body       string
}

func (r *response) code() int {
	if r == nil {
		return 0
	}
	return r.status
}

func (r *response) retryAfterHeader() string {
	if r == nil {
		return ""
	}
	return r.retryAfter
}

func (r *response) describe() string {
	s := fmt.Sprintf("HTTP %d %s", r.status, http.StatusText(r.status))
	if r.status >= 300 && r.status < 400 {
		s += " (redirects are not followed)"
	}
	if r.body != "" {
		s += ": " + r.body
	}
	return s
}

// send performs the signed HTTP request. A nil error means a response arrived.
func (d *Dispatcher) send(ctx context.Context, t task.Task, now time.Time) (resp *response, err error) {
	method := t.Target.Method
	if method == "" {
		method = http.MethodPost
	}
	var body io.Reader
	if len(t.Payload) > 0 {
		body = bytes.NewReader(t.Payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.Target.URL, body)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid target: %v", ErrForbiddenTarget, err)
	}
	ctx, span := d.startClient(ctx, req)
	defer func() { endClient(span, resp, err) }()
	req = req.WithContext(ctx)
	for k, v := range t.Target.Headers {
		req.Header.Set(k, v)
	}
	if t.ContentType != "" && len(t.Payload) > 0 {
		req.Header.Set("Content-Type", t.ContentType)
	}
	req.Header.Set("User-Agent", d.cfg.UserAgent)
	req.Header.Set(webhook.HeaderQueue, t.Queue)
	req.Header.Set(webhook.HeaderAttempt, strconv.Itoa(t.Attempt))
	setTraceparent(ctx, req.Header, t)
	webhook.SetHeaders(req.Header, d.cfg.SigningKeys, t.ID, now, t.Payload)

	hr, err := d.cfg.Client.Do(req)
	if err != nil {
		return nil, describeErr(ctx, err, t.Timeout)
	}
	defer hr.Body.Close()
	r := &response{status: hr.StatusCode, retryAfter: hr.Header.Get("Retry-After")}
	if hr.StatusCode < 200 || hr.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(hr.Body, errorBodyBytes))
		r.body = printable(b)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(hr.Body, drainBytes))
	return r, nil
}

// tracerName is the instrumentation scope of the dispatcher's spans.
const tracerName = "github.com/spoolhq/spool/internal/dispatch"

// taskSpanContext is the trace context stored with t at enqueue (invalid
// when there was none).
func taskSpanContext(t task.Task) trace.SpanContext {
	if t.TraceParent == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(),
		propagation.MapCarrier{"traceparent": t.TraceParent})
	return trace.SpanContextFromContext(ctx)
}

// startDelivery starts the attempt's consumer span as a child of the task's
// stored trace context. Under the no-op provider the "span" is that stored
// context itself, so it is still what the target receives.
func (d *Dispatcher) startDelivery(ctx context.Context, t task.Task, leaseSpan trace.SpanContext) (context.Context, trace.Span) {
	if sc := taskSpanContext(t); sc.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("spool.task.id", t.ID),
			attribute.String("spool.queue", t.Queue),
			attribute.Int("spool.attempt", t.Attempt),
			attribute.Int("spool.max_attempts", t.MaxAttempts),
		),
	}
	if leaseSpan.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: leaseSpan}))
	}
	return d.tracer.Start(ctx, "spool.deliver", opts...)
}

// endDelivery records how the attempt ended and ends its span.
func endDelivery(span trace.Span, c store.Completion, ok bool) {
	outcome := "lease_lost"
	if ok {
		switch c.Outcome {
		case store.Succeeded:
			outcome = "succeeded"
		case store.Retry:
			outcome = "retry"
		case store.Fail:
			outcome = "failed"
		case store.Release:
			outcome = "released"
		case store.Defer:
			outcome = "deferred"
		}
	}
	span.SetAttributes(attribute.String("spool.outcome", outcome))
	if c.Outcome == store.Retry || c.Outcome == store.Fail {
		span.SetStatus(codes.Error, c.LastError)
	}
	span.End()
}

// startClient starts the HTTP client span of one request. Its attributes
// name the target's scheme, host and port only: a webhook URL's path or
// query is often its secret, and spans leave the process.
func (d *Dispatcher) startClient(ctx context.Context, req *http.Request) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", req.Method),
		attribute.String("url.scheme", req.URL.Scheme),
		attribute.String("server.address", req.URL.Hostname()),
	}
	port := req.URL.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[req.URL.Scheme]
	}
	if n, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, attribute.Int("server.port", n))
	}
	return d.tracer.Start(ctx, req.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endClient records the response status (or the transport error) and ends
// the client span; 4xx and 5xx are errors, as the HTTP client conventions say.
func endClient(span trace.Span, resp *response, err error) {
	switch {
	case err != nil:
		span.SetAttributes(attribute.String("error.type", clientErrorType(err)))
		span.SetStatus(codes.Error, err.Error())
	case resp != nil:
		span.SetAttributes(attribute.Int("http.response.status_code", resp.status))
		if resp.status >= 400 {
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(resp.status)))
			span.SetStatus(codes.Error, "")
		}
	}
	span.End()
}

// clientErrorType is a low-cardinality error.type for a failed request.
func clientErrorType(err error) string {
	switch {
	case errors.Is(err, ErrForbiddenTarget):
		return "forbidden_target"
	case errors.Is(err, errTimeout):
		return "timeout"
	default:
		return "connection"
	}
}

// setTraceparent puts the attempt's trace context on the request: the
// client span's (which continues the caller's trace), or, when there is no
// trace context at all (tracing off and the caller sent none), a synthetic
// one derived from the task id.
func setTraceparent(ctx context.Context, h http.Header, t task.Task) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
		return
	}
	h.Set("Traceparent", traceparent(t.ID, t.Attempt))
}

// errTimeout marks an attempt that got no response within the task's timeout.
var errTimeout = errors.New("timeout")

// describeErr turns a transport error into a last_error line without the
// target URL (it may carry credentials in its query).
func describeErr(ctx context.Context, err error, timeout time.Duration) error {
	if errors.Is(err, ErrForbiddenTarget) {
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err
		}
		return err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: no response within %s", errTimeout, timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("connection error: %v", err)
}

// printable keeps a response excerpt safe to store and show.
func printable(b []byte) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if !utf8.ValidString(s) {
		return ""
	}
	return strings.TrimSpace(s)
}

// traceparent is a W3C trace context whose trace id is the task id, so every
// attempt of a task shares one trace; the span id varies with the attempt.
func traceparent(id string, attempt int) string {
	traceID := strings.ReplaceAll(id, "-", "")
	if len(traceID) != 32 {
		traceID = fmt.Sprintf("%032x", []byte(id))[:32]
	}
	var span [8]byte
	copy(span[:], traceID[16:24])
	span[7] ^= byte(attempt)
	span[6] ^= byte(attempt >> 8)
	return "00-" + traceID + "-" + hex.EncodeToString(span[:]) + "-01"
}
