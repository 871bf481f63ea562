// Package client is the Go SDK of Spool's HTTP API: enqueue tasks (one or
// a batch, atomically), get, list (page by page or with an iterator over
// every page), cancel and retry them, and read and change queue and
// destination settings. Spool's own CLI is built on it.
//
// Every method takes a context and returns typed errors: an answer other
// than 2xx is an *Error carrying the RFC 9457 problem+json fields (status,
// type, title, detail, instance, the errors list, extension members and
// Retry-After).
//
// Requests that are safe to repeat are retried on 429, 503 and connection
// errors, with exponential backoff and jitter, honouring Retry-After (see
// RetryPolicy): GETs, PATCHes (the same body sets the same values), and
// enqueues. An enqueue is made safe by its idempotency key: when the caller
// gives none and retries are enabled, the client generates one (a UUIDv7)
// and sends it on every attempt, so an enqueue whose answer was lost is
// answered with the task the first attempt stored instead of a second task.
// Cancel and retry are never repeated by the client.
//
// It speaks only the wire format (JSON under /v1, RFC 9457 errors) and
// imports nothing of Spool's internals, so any Go program can use it and it
// cannot drift from what the server really sends without its tests (run
// against the independently written fake in package clienttest, and
// end-to-end against the real server) noticing. Compatibility before 1.0 is
// described in the README ("Go SDK").
//
// Adding an endpoint: a method builds its URL with endpoint (each path
// segment escaped on its own), describes the request with a request value
// (idempotent: whether repeating it is harmless) and calls do. Endpoints
// the server does not have yet on this version (task attempts, schedules)
// are added that way when they ship.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponse bounds how much of a response the client reads: a page of
// 1000 tasks fits many times over, a misbehaving server cannot exhaust memory.
const maxResponse = 64 << 20

// DefaultTimeout bounds each attempt of a call made with the default HTTP
// client; the caller's context bounds the whole call, retries included.
const DefaultTimeout = 60 * time.Second

// Client calls one Spool server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	apiKey    string
	http      *http.Client
	userAgent string
	retry     RetryPolicy
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (transport, TLS, per-attempt timeout).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithRetryPolicy sets how requests safe to repeat are retried; zero fields
// keep DefaultRetryPolicy's values. MaxAttempts: 1 turns retries (and
// generated idempotency keys) off.
func WithRetryPolicy(p RetryPolicy) Option {
	return func(c *Client) { c.retry = p.withDefaults() }
}

// RetryPolicy says how the client repeats a request that is safe to repeat
// after a 429, a 503 or a connection error (refused, reset, timed out).
// The n-th retry waits a random time between half and all of
// MinBackoff·2^(n-1), at most MaxBackoff, and never less than the
// server's Retry-After. A Retry-After longer than MaxRetryAfter, or a wait
// that would outlast the context's deadline, ends the retries at once with
// the server's error (its RetryAfter field says how long the server asked
// for).
type RetryPolicy struct {
	// MaxAttempts is how many times a request is sent at most, the first
	// included; 1 means never retry.
	MaxAttempts int
	// MinBackoff is the wait before the first retry, doubled for each next.
	MinBackoff time.Duration
	// MaxBackoff caps the computed wait (not a Retry-After).
	MaxBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits for.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy returns the policy a Client uses unless told
// otherwise: 4 attempts, waits from 250ms up to 5s, Retry-After up to 30s.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 4, MinBackoff: 250 * time.Millisecond, MaxBackoff: 5 * time.Second, MaxRetryAfter: 30 * time.Second}
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.MinBackoff <= 0 {
		p.MinBackoff = d.MinBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	if p.MaxBackoff < p.MinBackoff {
		p.MaxBackoff = p.MinBackoff
	}
	if p.MaxRetryAfter <= 0 {
		p.MaxRetryAfter = d.MaxRetryAfter
	}
	return p
}

// backoff is the wait before retry n (1-based): equal jitter, so waits
// spread out but never collapse to nothing.
func (p RetryPolicy) backoff(n int) time.Duration {
	d := p.MinBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, p.MaxBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

// retrying reports whether the client repeats safe requests (and so
// generates idempotency keys for enqueues).
func (c *Client) retrying() bool { return c.retry.MaxAttempts > 1 }

// New returns a client of the server at baseURL (e.g. http://127.0.0.1:8000;
// a path prefix is kept, for servers behind a proxy). apiKey is sent as a
// bearer token; "" sends none.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("client: server URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q has no host", baseURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("client: server URL must not contain credentials; use the API key")
	}
	u.RawQuery, u.Fragment = "", ""
	c := &Client{
		base:      u,
		apiKey:    apiKey,
		http:      &http.Client{Timeout: DefaultTimeout},
		userAgent: "spool-go-client",
		retry:     DefaultRetryPolicy(),
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an error answer from the server, decoded from RFC 9457
// problem+json when the server sent it (else Title is the status text and
// Detail the start of the body, a proxy's page say). Find it in an error's
// chain with errors.As.
type Error struct {
	Status   int
	Type     string // a URI; "about:blank" when the status says it all
	Title    string
	Detail   string
	Instance string
	// Fields are the problem's "errors" member: one entry per invalid
	// field or parameter (422), named as a JSON path ("tasks[3].target.url")
	// or a parameter ("limit", "Idempotency-Key").
	Fields []FieldError
	// RetryAfter is the answer's Retry-After (seconds or an HTTP date), 0
	// when it had none.
	RetryAfter time.Duration
	// Extensions holds the problem's other members, undecoded: for an
	// enqueue refused for its idempotency key, "idempotency_key" and
	// "task_id".
	Extensions map[string]json.RawMessage
}

// FieldError names one invalid field of a request.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// Error is one line: status, title, detail and the invalid fields.
func (e *Error) Error() string {
	var b strings.Builder
	title := e.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	fmt.Fprintf(&b, "server answered %d %s", e.Status, title)
	if e.Detail != "" && e.Detail != title {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if len(e.Fields) > 0 {
		parts := make([]string, 0, len(e.Fields))
		for _, f := range e.Fields {
			parts = append(parts, f.Field+": "+f.Detail)
		}
		b.WriteString(" (")
		b.WriteString(strings.Join(parts, "; "))
		b.WriteString(")")
	}
	return oneLine(b.String())
}

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// oneLine folds whitespace runs so an error never spans lines.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// endpoint builds base path + escaped segments. Each segment is escaped on
// its own, so an id or queue name can never add a path level.
func (c *Client) endpoint(segs ...string) *url.URL {
	raw := strings.TrimSuffix(c.base.EscapedPath(), "/")
	for _, s := range segs {
		raw += "/" + url.PathEscape(s)
	}
	u := *c.base
	u.RawPath = raw
	u.Path, _ = url.PathUnescape(raw) // raw was built from escaped parts
	return &u
}

// request is one API call.
type request struct {
	method string
	u      *url.URL
	in     any // encoded as JSON once; nil sends no body
	out    any // a 2xx JSON answer is decoded into it when non-nil
	// idempotent: sending it twice has the effect of sending it once, so
	// it may be retried after a connection error or a 429/503.
	idempotent bool
}

// do sends r, retrying as the policy allows when r is idempotent, and
// returns the final answer's status.
func (c *Client) do(ctx context.Context, r request) (int, error) {
	var body []byte
	if r.in != nil {
		b, err := json.Marshal(r.in)
		if err != nil {
			return 0, fmt.Errorf("%s %s: encode request: %w", r.method, r.u.Path, err)
		}
		body = b
	}
	attempts := 1
	if r.idempotent {
		attempts = c.retry.MaxAttempts
	}
	for n := 1; ; n++ {
		status, retryAfter, err := c.once(ctx, r, body)
		if err == nil || n >= attempts || !retryable(ctx, status, err) {
			return status, err
		}
		wait := c.retry.backoff(n)
		if retryAfter > c.retry.MaxRetryAfter {
			return status, err // the server asked for longer than we wait
		}
		wait = max(wait, retryAfter)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return status, err // no time left for another attempt
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return status, err
		}
	}
}

// retryable: 429 and 503 answers (the server refused before acting) and
// connection errors, unless the caller's context is done.
func retryable(ctx context.Context, status int, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if status == 0 {
		var p permanent
		return !errors.As(err, &p)
	}
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// permanent marks a failure before anything was sent (a malformed
// request) that no retry can fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// once sends one attempt. Status 0 means no answer was read (a connection
// error). retryAfter is the answer's Retry-After.
func (c *Client) once(ctx context.Context, r request, body []byte) (status int, retryAfter time.Duration, err error) {
	what := r.method + " " + r.u.Path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.u.String(), rd)
	if err != nil {
		return 0, 0, permanent{fmt.Errorf("%s: %w", what, err)}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error repeats method and URL; keep only its cause. The URL
		// never holds the key.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, 0, fmt.Errorf("%s %s: %w", r.method, r.u.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		// The answer was cut: as far as the caller knows, no answer came.
		return 0, 0, fmt.Errorf("%s: read response: %w", what, err)
	}
	if len(data) > maxResponse {
		return resp.StatusCode, 0, fmt.Errorf("%s: response larger than %d bytes", what, maxResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := decodeError(resp, data, time.Now())
		return resp.StatusCode, e.RetryAfter, e
	}
	if r.out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, r.out); err != nil {
			return resp.StatusCode, 0, fmt.Errorf("%s: decode response: %w", what, err)
		}
	}
	return resp.StatusCode, 0, nil
}

// call is do for a request that is not safe to repeat.
func (c *Client) call(ctx context.Context, method string, u *url.URL, in, out any) (int, error) {
	return c.do(ctx, request{method: method, u: u, in: in, out: out})
}

// patch is do for a PATCH: the same body sets the same values, so it is
// safe to repeat.
func (c *Client) patch(ctx context.Context, u *url.URL, in, out any) (int, error) {
	return c.do(ctx, request{method: http.MethodPatch, u: u, in: in, out: out, idempotent: true})
}

// get is do for a GET, which is always safe to repeat.
func (c *Client) get(ctx context.Context, u *url.URL, out any) (int, error) {
	return c.do(ctx, request{method: http.MethodGet, u: u, out: out, idempotent: true})
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP
// date (relative to now). Absent, malformed or past: 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// Bound before multiplying: a huge value must not overflow into a
		// negative wait.
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// decodeError turns an error answer into *Error, from problem+json when
// possible, else from the status and the first line of the body (a proxy's
// HTML page, say).
func decodeError(resp *http.Response, data []byte, now time.Time) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	var p struct {
		Type     string       `json:"type"`
		Title    string       `json:"title"`
		Detail   string       `json:"detail"`
		Instance string       `json:"instance"`
		Errors   []FieldError `json:"errors"`
	}
	if json.Unmarshal(data, &p) == nil && (p.Title != "" || p.Detail != "" || len(p.Errors) > 0) {
		e.Type, e.Title, e.Detail, e.Instance, e.Fields = p.Type, p.Title, p.Detail, p.Instance, p.Errors
		var all map[string]json.RawMessage
		if json.Unmarshal(data, &all) == nil {
			for _, k := range []string{"type", "title", "status", "detail", "instance", "errors"} {
				delete(all, k)
			}
			if len(all) > 0 {
				e.Extensions = all
			}
		}
		return e
	}
	e.Title = http.StatusText(resp.StatusCode)
	text := oneLine(string(data))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	e.Detail = text
	return e
}

func needID(kind, v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("client: %s is empty", kind)
	}
	return nil
}

// Enqueue adds one task to queue. created is false when the server
// answered with a task an earlier request stored under the same
// idempotency key (200, an idempotent replay); a replay of a key the client
// generated is this call's own earlier attempt, so created is true.
//
// When r has no IdempotencyKey and retries are enabled, the client sets a
// generated one (the returned task shows it), so retrying after a lost
// answer cannot store the task twice.
func (c *Client) Enqueue(ctx context.Context, queue string, r EnqueueRequest) (t *Task, created bool, err error) {
	if err := needID("queue name", queue); err != nil {
		return nil, false, err
	}
	generated := false
	if r.IdempotencyKey == "" && c.retrying() {
		r.IdempotencyKey, generated = newKey(), true
	}
	t = new(Task)
	status, err := c.do(ctx, request{
		method: http.MethodPost, u: c.endpoint("v1", "queues", queue, "tasks"), in: r, out: t,
		idempotent: r.IdempotencyKey != "",
	})
	if err != nil {
		return nil, false, fmt.Errorf("enqueue: %w", err)
	}
	return t, status == http.StatusCreated || generated, nil
}

// EnqueueBatch adds several tasks to queue atomically: all or none. As
// with Enqueue, tasks without an idempotency key get a generated one when
// retries are enabled; the batch is retried only when every task has a key.
// A task's IdempotentReplay says whether an earlier request stored it.
func (c *Client) EnqueueBatch(ctx context.Context, queue string, rs []EnqueueRequest) ([]Task, error) {
	if err := needID("queue name", queue); err != nil {
		return nil, err
	}
	keyed := true
	if c.retrying() {
		rs = slicesClone(rs)
		for i := range rs {
			if rs[i].IdempotencyKey == "" {
				rs[i].IdempotencyKey = newKey()
			}
		}
	} else {
		for _, r := range rs {
			keyed = keyed && r.IdempotencyKey != ""
		}
	}
	in := struct {
		Tasks []EnqueueRequest `json:"tasks"`
	}{rs}
	var out struct {
		Tasks []Task `json:"tasks"`
	}
	if _, err := c.do(ctx, request{
		method: http.MethodPost, u: c.endpoint("v1", "queues", queue, "tasks"), in: in, out: &out,
		idempotent: keyed && len(rs) > 0,
	}); err != nil {
		return nil, fmt.Errorf("enqueue batch: %w", err)
	}
	return out.Tasks, nil
}

// slicesClone copies rs so generated keys never write into the caller's slice.
func slicesClone(rs []EnqueueRequest) []EnqueueRequest { return append([]EnqueueRequest(nil), rs...) }

// GetTask returns one task.
func (c *Client) GetTask(ctx context.Context, id string) (*Task, error) {
	return c.GetTaskView(ctx, id, "")
}

// GetTaskView is GetTask with ?view=: ViewFull shows target header values
// (the server answers 403 unless the key is admin); "" or ViewRedacted
// shows their names only.
func (c *Client) GetTaskView(ctx context.Context, id, view string) (*Task, error) {
	if err := needID("task id", id); err != nil {
		return nil, err
	}
	u := c.endpoint("v1", "tasks", id)
	if view != "" {
		u.RawQuery = url.Values{"view": {view}}.Encode()
	}
	t := new(Task)
	if _, err := c.get(ctx, u, t); err != nil {
		return nil, fmt.Errorf("get task: %w", err)
	}
	return t, nil
}

// Attempts returns a task's delivery attempts, oldest first (an
// *APIError with status 404 when there is no such task).
func (c *Client) Attempts(ctx context.Context, id string) ([]Attempt, error) {
	if err := needID("task id", id); err != nil {
		return nil, err
	}
	var out struct {
		Attempts []Attempt `json:"attempts"`
	}
	if _, err := c.get(ctx, c.endpoint("v1", "tasks", id, "attempts"), &out); err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	if out.Attempts == nil {
		out.Attempts = []Attempt{}
	}
	return out.Attempts, nil
}

// ListTasks returns one page of a queue's tasks in creation order; pass
// the page's NextCursor in o.Cursor for the next one, or use AllTasks.
func (c *Client) ListTasks(ctx context.Context, queue string, o ListOptions) (*TaskPage, error) {
	if err := needID("queue name", queue); err != nil {
		return nil, err
	}
	u := c.endpoint("v1", "queues", queue, "tasks")
	q := url.Values{}
	if o.State != "" {
		q.Set("state", o.State)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	if o.View != "" {
		q.Set("view", o.View)
	}
	if o.Priority != nil {
		q.Set("priority", strconv.Itoa(*o.Priority))
	}
	if o.TargetHost != "" {
		q.Set("target_host", o.TargetHost)
	}
	if o.IdempotencyKey != "" {
		q.Set("idempotency_key", o.IdempotencyKey)
	}
	for name, t := range map[string]time.Time{"created_after": o.CreatedAfter, "created_before": o.CreatedBefore,
		"run_after": o.RunAfter, "run_before": o.RunBefore} {
		if !t.IsZero() {
			q.Set(name, t.UTC().Format(time.RFC3339Nano))
		}
	}
	u.RawQuery = q.Encode()
	page := new(TaskPage)
	if _, err := c.get(ctx, u, page); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	if page.Tasks == nil {
		page.Tasks = []Task{}
	}
	return page, nil
}

// AllTasks iterates over a queue's tasks in creation order, fetching page
// after page (o.Limit tasks each, the server's default when 0) from
// o.Cursor on, as the loop consumes them. A failed page is yielded once as
// an error with a zero Task, and the iteration ends; breaking out of the
// loop fetches nothing more.
//
//	for t, err := range c.AllTasks(ctx, "emails", client.ListOptions{State: client.StateFailed}) {
//		if err != nil {
//			return err
//		}
//		fmt.Println(t.ID)
//	}
func (c *Client) AllTasks(ctx context.Context, queue string, o ListOptions) iter.Seq2[Task, error] {
	return func(yield func(Task, error) bool) {
		for {
			page, err := c.ListTasks(ctx, queue, o)
			if err != nil {
				yield(Task{}, err)
				return
			}
			for _, t := range page.Tasks {
				if !yield(t, nil) {
					return
				}
			}
			// A filtered page may be empty and still go on (the server
			// bounds what one page examines): follow the cursor.
			if page.NextCursor == "" {
				return
			}
			if page.NextCursor == o.Cursor {
				yield(Task{}, fmt.Errorf("list tasks: the server answered cursor %q again", o.Cursor))
				return
			}
			o.Cursor = page.NextCursor
		}
	}
}

// CancelTask cancels an unfinished task and returns it. It is sent once:
// a repeated cancel would answer 409 for a task the first one cancelled.
func (c *Client) CancelTask(ctx context.Context, id string) (*Task, error) {
	return c.taskAction(ctx, id, "cancel")
}

// RetryTask makes a failed or cancelled task run again and returns it. It
// is sent once, never retried by the client.
func (c *Client) RetryTask(ctx context.Context, id string) (*Task, error) {
	return c.taskAction(ctx, id, "retry")
}

// CancelTasks cancels the given tasks of queue (1 to 1000 ids) in one
// request. A task the server could not cancel (unknown, of another queue,
// already finished) is reported in its BulkTaskResult, not as an error.
// It is sent once.
func (c *Client) CancelTasks(ctx context.Context, queue string, ids []string) (*BulkResult, error) {
	return c.bulk(ctx, queue, "cancel", map[string]any{"ids": ids})
}

// RetryTasks retries the given failed or cancelled tasks of queue (1 to
// 1000 ids) in one request, reporting each as CancelTasks does. It is
// sent once.
func (c *Client) RetryTasks(ctx context.Context, queue string, ids []string) (*BulkResult, error) {
	return c.bulk(ctx, queue, "retry", map[string]any{"ids": ids})
}

// CancelTasksInState cancels the next tasks of queue in state (scheduled,
// available, running or retrying), up to o.Limit (1000) from o.Cursor, in
// one request; while the answer's More is set, call again with its
// NextCursor.
func (c *Client) CancelTasksInState(ctx context.Context, queue, state string, o SweepOptions) (*BulkResult, error) {
	return c.bulk(ctx, queue, "cancel", sweepBody(state, o))
}

// RetryTasksInState retries the next tasks of queue in state (failed or
// cancelled) as CancelTasksInState cancels them. A sweep follows task ids,
// so a task that fails again during it is not retried twice.
//
//	o := client.SweepOptions{}
//	for {
//		r, err := c.RetryTasksInState(ctx, "emails", client.StateFailed, o)
//		if err != nil {
//			return err
//		}
//		if !r.More {
//			break
//		}
//		o.Cursor = r.NextCursor
//	}
func (c *Client) RetryTasksInState(ctx context.Context, queue, state string, o SweepOptions) (*BulkResult, error) {
	return c.bulk(ctx, queue, "retry", sweepBody(state, o))
}

func sweepBody(state string, o SweepOptions) map[string]any {
	in := map[string]any{"state": state}
	if o.Cursor != "" {
		in["cursor"] = o.Cursor
	}
	if o.Limit > 0 {
		in["limit"] = o.Limit
	}
	return in
}

func (c *Client) bulk(ctx context.Context, queue, action string, in map[string]any) (*BulkResult, error) {
	if err := needID("queue name", queue); err != nil {
		return nil, err
	}
	out := new(BulkResult)
	if _, err := c.call(ctx, http.MethodPost, c.endpoint("v1", "queues", queue, "tasks", action), in, out); err != nil {
		return nil, fmt.Errorf("%s tasks: %w", action, err)
	}
	return out, nil
}

func (c *Client) taskAction(ctx context.Context, id, action string) (*Task, error) {
	if err := needID("task id", id); err != nil {
		return nil, err
	}
	t := new(Task)
	if _, err := c.call(ctx, http.MethodPost, c.endpoint("v1", "tasks", id, action), nil, t); err != nil {
		return nil, fmt.Errorf("%s task: %w", action, err)
	}
	if t.ID == "" {
		// A server answering 204 without the task: read it back.
		return c.GetTask(ctx, id)
	}
	return t, nil
}

// ListQueues returns every queue.
func (c *Client) ListQueues(ctx context.Context) ([]Queue, error) {
	var out struct {
		Queues []Queue `json:"queues"`
	}
	if _, err := c.get(ctx, c.endpoint("v1", "queues"), &out); err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	if out.Queues == nil {
		out.Queues = []Queue{}
	}
	return out.Queues, nil
}

// GetQueue returns one queue's settings and counts.
func (c *Client) GetQueue(ctx context.Context, name string) (*Queue, error) {
	if err := needID("queue name", name); err != nil {
		return nil, err
	}
	q := new(Queue)
	if _, err := c.get(ctx, c.endpoint("v1", "queues", name), q); err != nil {
		return nil, fmt.Errorf("get queue: %w", err)
	}
	return q, nil
}

// UpdateQueue changes the settings set in p and returns the queue.
func (c *Client) UpdateQueue(ctx context.Context, name string, p QueuePatch) (*Queue, error) {
	if err := needID("queue name", name); err != nil {
		return nil, err
	}
	q := new(Queue)
	if _, err := c.patch(ctx, c.endpoint("v1", "queues", name), p, q); err != nil {
		return nil, fmt.Errorf("update queue: %w", err)
	}
	if q.Name == "" {
		return c.GetQueue(ctx, name)
	}
	return q, nil
}

// PauseQueue stops dispatching a queue's tasks; enqueueing still works.
func (c *Client) PauseQueue(ctx context.Context, name string) (*Queue, error) {
	return c.UpdateQueue(ctx, name, QueuePatch{Paused: Ptr(true)})
}

// ResumeQueue undoes PauseQueue.
func (c *Client) ResumeQueue(ctx context.Context, name string) (*Queue, error) {
	return c.UpdateQueue(ctx, name, QueuePatch{Paused: Ptr(false)})
}

// ListDestinations returns every destination Spool keeps, by name.
func (c *Client) ListDestinations(ctx context.Context) ([]Destination, error) {
	var out struct {
		Destinations []Destination `json:"destinations"`
	}
	if _, err := c.get(ctx, c.endpoint("v1", "destinations"), &out); err != nil {
		return nil, fmt.Errorf("list destinations: %w", err)
	}
	if out.Destinations == nil {
		out.Destinations = []Destination{}
	}
	return out.Destinations, nil
}

// GetDestination returns one destination. name is a destination
// ("https://api.example.com:443") or any URL on it; the server normalizes it.
func (c *Client) GetDestination(ctx context.Context, name string) (*Destination, error) {
	if err := needID("destination", name); err != nil {
		return nil, err
	}
	d := new(Destination)
	if _, err := c.get(ctx, c.endpoint("v1", "destinations", name), d); err != nil {
		return nil, fmt.Errorf("get destination: %w", err)
	}
	return d, nil
}

// UpdateDestination sets the ceilings given in p, creating the destination
// if the server has none by that name, and returns it.
func (c *Client) UpdateDestination(ctx context.Context, name string, p DestinationPatch) (*Destination, error) {
	if err := needID("destination", name); err != nil {
		return nil, err
	}
	d := new(Destination)
	if _, err := c.patch(ctx, c.endpoint("v1", "destinations", name), p, d); err != nil {
		return nil, fmt.Errorf("update destination: %w", err)
	}
	if d.Name == "" {
		return c.GetDestination(ctx, name)
	}
	return d, nil
}

// Livez returns nil when the server process answers /livez with 2xx.
func (c *Client) Livez(ctx context.Context) error {
	if _, err := c.call(ctx, http.MethodGet, c.endpoint("livez"), nil, nil); err != nil {
		return fmt.Errorf("livez: %w", err)
	}
	return nil
}

// Readyz returns nil when the server answers /readyz with 2xx (it can serve).
func (c *Client) Readyz(ctx context.Context) error {
	if _, err := c.call(ctx, http.MethodGet, c.endpoint("readyz"), nil, nil); err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	return nil
}
