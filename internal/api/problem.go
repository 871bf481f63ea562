package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
)

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string       `json:"type"`
	Title  string       `json:"title"`
	Status int          `json:"status"`
	Detail string       `json:"detail"`
	Errors []fieldError `json:"errors,omitempty"`
	// Extension members of an enqueue refused for its idempotency key: the
	// key, and the task it is reserved for.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	TaskID         string `json:"task_id,omitempty"`

	retryAfter int // seconds; sets Retry-After when > 0
}

// fieldError names one invalid field of a request, as a JSON path
// ("tasks[3].target.url") or a parameter ("limit", "Idempotency-Key").
type fieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// apiError is the typed error handlers return for problems the client can
// act on; its detail is safe to show. Anything else is an internal error.
type apiError struct {
	status         int
	detail         string
	fields         []fieldError
	retryAfter     int
	idempotencyKey string // problem extension members
	taskID         string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.status, http.StatusText(e.status), e.detail)
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, detail: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{status: http.StatusNotFound, detail: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) *apiError {
	return &apiError{status: http.StatusConflict, detail: fmt.Sprintf(format, args...)}
}

// forbidden is the 403 for a valid key whose role does not allow what; the
// detail names both roles, never the key.
func forbidden(have, need auth.Role, what string) *apiError {
	return &apiError{status: http.StatusForbidden,
		detail: fmt.Sprintf("this API key has the %s role; %s needs %s", have, what, need)}
}

func tooLarge(limit int64) *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge,
		detail: fmt.Sprintf("the request body is larger than the limit of %d bytes", limit)}
}

// invalid is a 422 naming every bad field; the detail repeats the first.
func invalid(fields ...fieldError) *apiError {
	e := &apiError{status: http.StatusUnprocessableEntity, fields: fields}
	switch {
	case len(fields) == 0:
		e.detail = "the request is invalid"
	case fields[0].Field == "":
		e.detail = fields[0].Detail
	default:
		e.detail = fields[0].Field + ": " + fields[0].Detail
	}
	if len(fields) > 1 {
		e.detail += fmt.Sprintf(" (and %d more problems; see errors)", len(fields)-1)
	}
	return e
}

// invalidField is a 422 for one field.
func invalidField(field, format string, args ...any) *apiError {
	return invalid(fieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

// idempotencyRefusal answers an enqueue the store refused for one task's
// idempotency key, naming the key and, in a batch, the task's index: 422
// for a key reused with a different request (as the IETF Idempotency-Key
// draft and Stripe answer), 409 for the same request whose task was
// pruned while its key is still reserved.
func idempotencyRefusal(e *store.IdempotencyError, batch, byHeader bool) *apiError {
	field := "idempotency_key"
	switch {
	case batch:
		field = fmt.Sprintf("tasks[%d].idempotency_key", e.Index)
	case byHeader:
		field = "Idempotency-Key"
	}
	var ae *apiError
	switch {
	case errors.Is(e, store.ErrIdempotencyPruned):
		ae = &apiError{status: http.StatusConflict, detail: fmt.Sprintf(
			"%s: idempotency key %q was used in queue %q by task %s, which has finished and been pruned; "+
				"the key stays reserved for a while after its first use, so enqueue again with a new key",
			field, e.Key, e.Queue, cmp.Or(e.TaskID, "(unknown)"))}
	case e.TaskID == "":
		ae = invalidField(field, "idempotency key %q is given to an earlier task of this batch with a different request", e.Key)
	default:
		ae = invalidField(field, "idempotency key %q was already used in queue %q for a different request (task %s); "+
			"send the same request to get that task, or use a new key", e.Key, e.Queue, e.TaskID)
	}
	ae.idempotencyKey, ae.taskID = e.Key, e.TaskID
	return ae
}

// statusClientClosedRequest is nginx's 499: the client went away before
// the answer. Nobody reads it; it keeps a client's disconnect out of the
// 5xx count that the API error alert watches.
const statusClientClosedRequest = 499

func problemFrom(e *apiError) problem {
	title := http.StatusText(e.status)
	if e.status == statusClientClosedRequest {
		title = "Client Closed Request"
	}
	return problem{
		Type:           "about:blank",
		Title:          title,
		Status:         e.status,
		Detail:         e.detail,
		Errors:         e.fields,
		IdempotencyKey: e.idempotencyKey,
		TaskID:         e.taskID,
		retryAfter:     e.retryAfter,
	}
}

// internalProblem is the 500 answer: generic, with the request id so an
// operator can find the logged cause. Never the error itself.
func (s *server) internalProblem(requestID string) problem {
	return problemFrom(&apiError{status: http.StatusInternalServerError,
		detail: "internal error; the server logged it under request id " + requestID})
}

// toProblem is the one place errors become HTTP answers. Client errors
// carry their own safe detail; store sentinels map to statuses; the rest
// is logged in full and answered with a generic 500.
func (s *server) toProblem(r *http.Request, err error) problem {
	var ae *apiError
	var mbe *http.MaxBytesError
	var ie *store.InvalidError
	switch {
	case errors.As(err, &ae):
		return problemFrom(ae)
	case errors.As(err, &mbe):
		return problemFrom(tooLarge(mbe.Limit))
	case errors.As(err, &ie):
		// The store refused a value the API let through (its bounds moved
		// first): still the client's to fix, so a 422 naming the field.
		return problemFrom(invalidField(ie.Field, "%s", ie.Detail))
	case errors.Is(err, store.ErrNotFound):
		return problemFrom(notFound("not found"))
	case errors.Is(err, store.ErrConflict):
		return problemFrom(conflict("the operation does not apply in the current state"))
	case errors.Is(err, store.ErrUnavailable),
		// The request's own deadline (RequestTimeout) ran out in the store;
		// a client that went away is Canceled, not DeadlineExceeded.
		errors.Is(err, context.DeadlineExceeded) && !errors.Is(r.Context().Err(), context.Canceled):
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "store unavailable",
			slog.String("http.request.id", requestIDFrom(r.Context())),
			slog.String("error.message", err.Error()))
		return problemFrom(&apiError{status: http.StatusServiceUnavailable, retryAfter: 1,
			detail: "the store is unavailable; retry shortly"})
	}
	if errors.Is(r.Context().Err(), context.Canceled) {
		// The client went away (the store call ended with its context):
		// not a server error. What was stored before stays stored.
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "client closed the request",
			slog.String("http.request.method", r.Method),
			slog.String("http.route", r.Pattern),
			slog.String("http.request.id", requestIDFrom(r.Context())),
			slog.String("error.message", err.Error()))
		return problemFrom(&apiError{status: statusClientClosedRequest,
			detail: "the client closed the request before the answer"})
	}
	s.log.LogAttrs(r.Context(), slog.LevelError, "request failed",
		slog.String("http.request.method", r.Method),
		slog.String("http.route", r.Pattern),
		slog.String("http.request.id", requestIDFrom(r.Context())),
		slog.String("error.message", err.Error()))
	return s.internalProblem(requestIDFrom(r.Context()))
}

// writeProblem sends p as application/problem+json.
func writeProblem(w http.ResponseWriter, p problem) {
	h := w.Header()
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(p.retryAfter))
	}
	writeJSON(w, p.Status, "application/problem+json", p)
}

// writeJSON encodes v; HTML escaping is off because this is not HTML and
// escaped "&" in URLs only confuses readers.
func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := marshal(v)
	if err != nil {
		// Our own types always marshal; this is a bug, not a client error.
		b = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"response encoding failed"}`)
		status, contentType = http.StatusInternalServerError, "application/problem+json"
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // a failed write means the client left; nothing to do
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return buf.Bytes(), nil
}

// statusCoder lets a handler's result choose its success status
// (201 created vs 200 replayed).
type statusCoder interface{ httpStatus() int }

// endpoint adapts a handler returning (T, error) to http.Handler: the value
// is written as JSON with status (or T's own), the error through toProblem.
func endpoint[T any](s *server, status int, fn func(r *http.Request) (T, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			writeProblem(w, s.toProblem(r, err))
			return
		}
		st := status
		if sc, ok := any(v).(statusCoder); ok {
			st = sc.httpStatus()
		}
		if loc, ok := any(v).(locator); ok && st == http.StatusCreated {
			if l := loc.location(); l != "" {
				w.Header().Set("Location", l)
			}
		}
		writeJSON(w, st, "application/json", v)
	})
}

// locator lets a created resource name its URL for the Location header.
type locator interface{ location() string }
