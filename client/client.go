// Package client is a Go client of Spool's HTTP API: enqueue, inspect,
// cancel and retry tasks, and read and change queue and destination
// settings. The CLI is built on it.
//
// It speaks only the wire format (JSON under /v1, RFC 9457 errors) and
// imports none of the server's packages, so it stays usable by any Go
// program and cannot drift from what the server really sends without its
// tests noticing.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponse bounds how much of a response the client reads: a page of
// 1000 tasks fits many times over, a misbehaving server cannot exhaust memory.
const maxResponse = 64 << 20

// DefaultTimeout bounds each call when the caller's context has no deadline.
const DefaultTimeout = 60 * time.Second

// Client calls one Spool server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	apiKey    string
	http      *http.Client
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (transport, TLS, timeouts).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

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
		userAgent: "spool-client",
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an error answer from the server, decoded from RFC 9457
// problem+json when the server sent it.
type Error struct {
	Status int
	Type   string
	Title  string
	Detail string
	Fields []FieldError // per-field problems (422)
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

// call sends one request and decodes a 2xx JSON answer into out (when out
// is non-nil and the answer has a body). It returns the status.
func (c *Client) call(ctx context.Context, method string, u *url.URL, in, out any) (int, error) {
	what := method + " " + u.Path
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("%s: encode request: %w", what, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if in != nil {
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
		return 0, fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s: read response: %w", what, err)
	}
	if len(data) > maxResponse {
		return resp.StatusCode, fmt.Errorf("%s: response larger than %d bytes", what, maxResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, decodeError(resp, data)
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s: decode response: %w", what, err)
		}
	}
	return resp.StatusCode, nil
}

// decodeError turns an error answer into *Error, from problem+json when
// possible, else from the status and the first line of the body (a proxy's
// HTML page, say).
func decodeError(resp *http.Response, data []byte) error {
	e := &Error{Status: resp.StatusCode}
	var p struct {
		Type   string       `json:"type"`
		Title  string       `json:"title"`
		Detail string       `json:"detail"`
		Errors []FieldError `json:"errors"`
	}
	if json.Unmarshal(data, &p) == nil && (p.Title != "" || p.Detail != "" || len(p.Errors) > 0) {
		e.Type, e.Title, e.Detail, e.Fields = p.Type, p.Title, p.Detail, p.Errors
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

// Enqueue adds one task to queue. created is false when the server found a
// task with the same idempotency key and returned it instead (200).
func (c *Client) Enqueue(ctx context.Context, queue string, r EnqueueRequest) (t *Task, created bool, err error) {
	if err := needID("queue name", queue); err != nil {
		return nil, false, err
	}
	t = new(Task)
	status, err := c.call(ctx, http.MethodPost, c.endpoint("v1", "queues", queue, "tasks"), r, t)
	if err != nil {
		return nil, false, fmt.Errorf("enqueue: %w", err)
	}
	return t, status == http.StatusCreated, nil
}

// EnqueueBatch adds several tasks to queue atomically: all or none.
func (c *Client) EnqueueBatch(ctx context.Context, queue string, rs []EnqueueRequest) ([]Task, error) {
	if err := needID("queue name", queue); err != nil {
		return nil, err
	}
	in := struct {
		Tasks []EnqueueRequest `json:"tasks"`
	}{rs}
	var out struct {
		Tasks []Task `json:"tasks"`
	}
	if _, err := c.call(ctx, http.MethodPost, c.endpoint("v1", "queues", queue, "tasks"), in, &out); err != nil {
		return nil, fmt.Errorf("enqueue batch: %w", err)
	}
	return out.Tasks, nil
}

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
	if _, err := c.call(ctx, http.MethodGet, u, nil, t); err != nil {
		return nil, fmt.Errorf("get task: %w", err)
	}
	return t, nil
}

// ListTasks returns one page of a queue's tasks in creation order.
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
	u.RawQuery = q.Encode()
	page := new(TaskPage)
	if _, err := c.call(ctx, http.MethodGet, u, nil, page); err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	if page.Tasks == nil {
		page.Tasks = []Task{}
	}
	return page, nil
}

// CancelTask cancels an unfinished task and returns it.
func (c *Client) CancelTask(ctx context.Context, id string) (*Task, error) {
	return c.taskAction(ctx, id, "cancel")
}

// RetryTask makes a failed or cancelled task run again and returns it.
func (c *Client) RetryTask(ctx context.Context, id string) (*Task, error) {
	return c.taskAction(ctx, id, "retry")
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
	if _, err := c.call(ctx, http.MethodGet, c.endpoint("v1", "queues"), nil, &out); err != nil {
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
	if _, err := c.call(ctx, http.MethodGet, c.endpoint("v1", "queues", name), nil, q); err != nil {
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
	if _, err := c.call(ctx, http.MethodPatch, c.endpoint("v1", "queues", name), p, q); err != nil {
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
	if _, err := c.call(ctx, http.MethodGet, c.endpoint("v1", "destinations"), nil, &out); err != nil {
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
	if _, err := c.call(ctx, http.MethodGet, c.endpoint("v1", "destinations", name), nil, d); err != nil {
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
	if _, err := c.call(ctx, http.MethodPatch, c.endpoint("v1", "destinations", name), p, d); err != nil {
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
