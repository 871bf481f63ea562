package dispatch

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/webhook"
)

const (
	// errorBodyBytes of a failed response are kept in last_error.
	errorBodyBytes = 512
	// drainBytes of a response are read so the connection can be reused.
	drainBytes = 64 << 10
)

// deliver makes one attempt. ok is false when the lease was taken away and
// nothing must be recorded.
func (d *Dispatcher) deliver(parent context.Context, l store.Lease) (c store.Completion, ok bool) {
	t := l.Task
	c = store.Completion{LeaseRef: store.LeaseRef{TaskID: t.ID, Token: l.Token}}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = task.DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()

	start := time.Now()
	resp, err := d.send(ctx, t, start)
	status := resp.code()
	elapsed := time.Since(start)
	if m := d.cfg.Metrics; m != nil {
		m.DeliveryDuration.WithLabelValues(t.Queue).Observe(elapsed.Seconds())
	}
	log := d.log.With("spool.task.id", t.ID, "spool.queue", t.Queue, "spool.attempt", t.Attempt)

	switch cause := context.Cause(parent); {
	case errors.Is(cause, errLeaseLost):
		return c, false
	case errors.Is(cause, errShutdown) && err != nil:
		c.Outcome = store.Release
		c.LastError = "released at shutdown before the attempt finished"
		return c, true
	}

	c.LastStatus = status
	switch {
	case err == nil && status >= 200 && status < 300:
		c.Outcome = store.Succeeded
		d.count(t.Queue, "succeeded")
		log.Debug("delivered", "http.response.status_code", status, "event.duration", elapsed.Nanoseconds())
		return c, true
	case err != nil && errors.Is(err, ErrForbiddenTarget):
		c.Outcome, c.LastError = store.Fail, err.Error()
	case err != nil:
		c.Outcome, c.LastError = store.Retry, err.Error()
	case task.Retryable(status):
		c.Outcome = store.Retry
	default:
		c.Outcome = store.Fail // other 3xx and 4xx: retrying will not help
	}
	if err == nil {
		c.LastError = resp.describe()
	}
	if c.Outcome == store.Retry {
		delay := d.cfg.Backoff.Delay(t.Attempt)
		if ra, ok := task.RetryAfter(resp.retryAfterHeader(), time.Now()); ok {
			delay = ra
		}
		c.RetryAt = time.Now().Add(delay)
		if t.Attempt >= t.MaxAttempts {
			c.LastError += fmt.Sprintf(" (attempts exhausted: %d of %d)", t.Attempt, t.MaxAttempts)
			d.count(t.Queue, "failed")
		} else {
			d.count(t.Queue, "retried")
		}
	} else {
		d.count(t.Queue, "failed")
	}
	log.Info("attempt failed", "http.response.status_code", status, "error.message", c.LastError, "event.duration", elapsed.Nanoseconds())
	return c, true
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
func (d *Dispatcher) send(ctx context.Context, t task.Task, now time.Time) (*response, error) {
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
	for k, v := range t.Target.Headers {
		req.Header.Set(k, v)
	}
	if t.ContentType != "" && len(t.Payload) > 0 {
		req.Header.Set("Content-Type", t.ContentType)
	}
	req.Header.Set("User-Agent", d.cfg.UserAgent)
	req.Header.Set("Spool-Queue", t.Queue)
	req.Header.Set("Spool-Attempt", strconv.Itoa(t.Attempt))
	req.Header.Set("Traceparent", traceparent(t.ID, t.Attempt))
	webhook.SetHeaders(req.Header, d.cfg.SigningKey, t.ID, now, t.Payload)

	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return nil, describeErr(ctx, err, t.Timeout)
	}
	defer resp.Body.Close()
	r := &response{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyBytes))
		r.body = printable(b)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes))
	return r, nil
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
		return fmt.Errorf("timeout: no response within %s", timeout)
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
