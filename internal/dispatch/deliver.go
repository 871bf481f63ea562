package dispatch

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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
	// The attempt's record for the task's history; its outcome and error
	// are filled below, where the completion's are decided.
	c.Attempt = &task.Attempt{
		Attempt:    t.Attempt,
		StartedAt:  start.UTC(),
		FinishedAt: start.Add(elapsed).UTC(),
		Duration:   elapsed,
		Status:     status,
		Replica:    d.cfg.Replica,
		TraceID:    attemptTraceID(span.SpanContext(), t),
	}
	if resp != nil {
		c.Attempt.ResponseExcerpt, c.Attempt.ResponseHeaders = resp.excerpt, resp.headers
	}
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
		// The request went out: the history keeps the abandoned attempt,
		// though the task does not count it.
		c.Outcome = store.Release
		c.LastError = "released at shutdown before the attempt finished"
		c.Attempt.Outcome, c.Attempt.ErrorClass, c.Attempt.ErrorMessage = task.AttemptReleased, task.ErrorShutdown, c.LastError
		return c, true
	}

	c.LastStatus = status
	statuses := d.retryStatuses(t.Queue)
	switch {
	case err == nil && status >= 200 && status < 300:
		c.Outcome = store.Succeeded
		c.Attempt.Outcome = task.AttemptSucceeded
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
	c.Attempt.ErrorClass, c.Attempt.ErrorMessage = errorClass(err), c.LastError
	c.Attempt.Outcome = task.AttemptFailed
	if c.Outcome == store.Retry && t.Attempt < t.MaxAttempts {
		c.Attempt.Outcome = task.AttemptRetry
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

// errorClass is the class of a failed attempt's error (nil: the target
// answered with a status that is not 2xx).
func errorClass(err error) task.ErrorClass {
	switch {
	case err == nil:
		return task.ErrorHTTPStatus
	case errors.Is(err, ErrForbiddenTarget):
		return task.ErrorSSRFRefused
	case errors.Is(err, errTimeout):
		return task.ErrorTimeout
	case errors.Is(err, errTLS):
		return task.ErrorTLS
	default:
		return task.ErrorConnection
	}
}

// attemptTraceID is the trace id an attempt ran under: its delivery
// span's, or, with no trace context at all, the synthetic one the target
// received (see setTraceparent).
func attemptTraceID(sc trace.SpanContext, t task.Task) string {
	if sc.TraceID().IsValid() {
		return sc.TraceID().String()
	}
	return traceparent(t.ID, t.Attempt)[3:35]
}

// response is what an attempt learned from the target.
type response struct {
	status     int
	retryAfter string
	body       string            // the start of a failed response's body, for last_error
	excerpt    *string           // the attempt's response excerpt; nil: none kept
	headers    map[string]string // the task.KeptHeaders present; nil: none
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
	for _, k := range task.KeptHeaders {
		if v := hr.Header.Get(k); v != "" {
			if r.headers == nil {
				r.headers = make(map[string]string, len(task.KeptHeaders))
			}
			r.headers[k] = task.HeaderValue(v)
		}
	}
	// One read serves last_error (a failed response's first
	// errorBodyBytes) and the attempt's excerpt (AttemptBodyBytes of any
	// response); the rest is drained for the connection's reuse.
	failed := hr.StatusCode < 200 || hr.StatusCode >= 300
	keep := d.cfg.AttemptBodyBytes
	if failed {
		keep = max(keep, errorBodyBytes)
	}
	if keep > 0 {
		b, _ := io.ReadAll(io.LimitReader(hr.Body, int64(keep)))
		if failed {
			r.body = printable(b[:min(len(b), errorBodyBytes)])
		}
		if n := d.cfg.AttemptBodyBytes; n > 0 && len(b) > 0 {
			e := task.Excerpt(b, n)
			r.excerpt = &e
		}
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

// errTLS marks a connection error of the TLS handshake or certificate
// check (errors.Is matches a tlsError).
var errTLS = errors.New("tls")

// tlsError is a connection error that happened in TLS: its message is the
// same as any connection error's; only its class differs.
type tlsError struct{ msg string }

func (e tlsError) Error() string        { return e.msg }
func (e tlsError) Is(target error) bool { return target == errTLS }

// isTLS reports whether err came from the TLS handshake or the
// certificate check.
func isTLS(err error) bool {
	var (
		rh    tls.RecordHeaderError
		alert tls.AlertError
		cv    *tls.CertificateVerificationError
		ua    x509.UnknownAuthorityError
		hn    x509.HostnameError
		ci    x509.CertificateInvalidError
	)
	return errors.As(err, &rh) || errors.As(err, &alert) || errors.As(err, &cv) ||
		errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) ||
		strings.Contains(err.Error(), "tls: ")
}

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
	if isTLS(err) {
		return tlsError{msg: fmt.Sprintf("connection error: %v", err)}
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
