// Package clienttest is an in-memory stand-in for Spool's HTTP API, written
// from the documented wire shapes (JSON names, status codes, RFC 9457
// errors), so the client, the CLI and applications built on the client can
// be tested without a Spool server or a database, as net/http/httptest
// stands in for a web server. FailNext and DropNext inject the failures
// the client's retries exist for.
//
// It is deliberately separate from internal/api: its structs spell every
// JSON name out again, and it rejects unknown request fields, so a client
// that drifts from the documented shapes fails its tests. It does no
// delivery; the real server is tested elsewhere.
package clienttest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// States in lifecycle order, as the API names them.
var states = []string{"scheduled", "available", "running", "retrying", "succeeded", "failed", "cancelled"}

func final(s string) bool { return s == "succeeded" || s == "failed" || s == "cancelled" }

type target struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers,omitempty"`
}

// Task is the fake's task record, in the API's JSON shape.
type Task struct {
	ID             string     `json:"id"`
	Queue          string     `json:"queue"`
	State          string     `json:"state"`
	Attempt        int        `json:"attempt"`
	MaxAttempts    int        `json:"max_attempts"`
	Priority       int        `json:"priority"`
	RunAt          time.Time  `json:"run_at"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	FinishedAt     *time.Time `json:"finished_at"`
	Target         target     `json:"target"`
	LastError      *string    `json:"last_error"`
	LastStatus     *int       `json:"last_status"`
	Timeout        string     `json:"timeout"`
	ContentType    string     `json:"content_type"`
	IdempotencyKey *string    `json:"idempotency_key"`
	// PayloadSize is not in the documented shape: it stands for any field
	// a newer server adds, which clients must tolerate and pass through.
	PayloadSize int `json:"payload_size"`
	// IdempotentReplay is sent in enqueue answers only.
	IdempotentReplay *bool `json:"idempotent_replay,omitempty"`

	payload     []byte // kept for tests
	fingerprint string // the request under its idempotency key, to tell a replay from a conflict
}

type queue struct {
	Name          string           `json:"name"`
	Concurrency   int              `json:"concurrency"`
	RateLimit     float64          `json:"rate_limit"`
	MaxAttempts   int              `json:"max_attempts"`
	Timeout       string           `json:"timeout"`
	Paused        bool             `json:"paused"`
	Weight        int              `json:"weight"`
	RetryStatuses []string         `json:"retry_statuses"`
	Counts        map[string]int64 `json:"counts"`
	CreatedAt     time.Time        `json:"created_at"`
	UpdatedAt     time.Time        `json:"updated_at"`
}

// Destination is the fake's destination record, in the API's JSON shape.
// The fake has no dispatcher: tests set the shared state with SetDestination.
type Destination struct {
	Destination         string     `json:"destination"`
	Limit               float64    `json:"limit"`
	LimitState          string     `json:"limit_state"`
	MaxConcurrency      int        `json:"max_concurrency"`
	RateLimit           float64    `json:"rate_limit"`
	InFlight            int        `json:"in_flight"`
	Replicas            int        `json:"replicas"`
	Breaker             string     `json:"breaker"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	OpenUntil           *time.Time `json:"open_until"`
	Cooldown            string     `json:"cooldown"`
	HoldUntil           *time.Time `json:"hold_until"`
	SuccessRate         float64    `json:"success_rate"`
	Latency             string     `json:"latency"`
	RecentSuccesses     int64      `json:"recent_successes"`
	RecentFailures      int64      `json:"recent_failures"`
	CreatedAt           time.Time  `json:"created_at"`
	UpdatedAt           time.Time  `json:"updated_at"`
}

// Attempt is one delivery attempt, in the API's JSON shape. The fake has no
// dispatcher: tests add attempts with AddAttempt.
type Attempt struct {
	Attempt         int               `json:"attempt"`
	StartedAt       *time.Time        `json:"started_at"`
	FinishedAt      time.Time         `json:"finished_at"`
	Duration        *string           `json:"duration"`
	Outcome         string            `json:"outcome"`
	Status          *int              `json:"status"`
	Error           *AttemptError     `json:"error"`
	ResponseExcerpt *string           `json:"response_excerpt"`
	ResponseHeaders map[string]string `json:"response_headers"`
	Replica         *string           `json:"replica"`
	TraceID         *string           `json:"trace_id"`
}

// AttemptError is an attempt's error, in the API's JSON shape.
type AttemptError struct {
	Class   string `json:"class"`
	Message string `json:"message"`
}

// Request is what the fake received last, for assertions on the wire form.
type Request struct {
	Method string
	Path   string // escaped path
	Query  string
	Header http.Header
	Body   []byte
}

// Server is the fake API. Embed-free fields are guarded by mu.
type Server struct {
	*httptest.Server
	apiKey string

	mu     sync.Mutex
	seq    int
	tasks  map[string]*Task
	order  []string // ids in creation order
	queues map[string]*queue
	dests  map[string]*Destination
	idem   map[string]string // queue + "\x00" + key -> id
	last   Request
	ready  bool
	scheds map[string]*Schedule
	tries  map[string][]Attempt // task id -> attempts, oldest first

	requests   int    // API requests received
	failN      int    // answer the next failN requests with failStatus
	failStatus int    //
	failAfter  string // Retry-After of those answers
	dropN      int    // handle the next dropN requests and lose their answers
}

// New starts a fake API on 127.0.0.1 requiring apiKey ("" = no auth) and
// closes it when the test ends.
func New(t testing.TB, apiKey string) *Server {
	s := Start(apiKey)
	t.Cleanup(s.Close)
	return s
}

// Start is New for code without a testing.TB (examples, other harnesses):
// the caller closes the server.
func Start(apiKey string) *Server {
	s := &Server{
		apiKey: apiKey,
		tasks:  make(map[string]*Task),
		queues: make(map[string]*queue),
		dests:  make(map[string]*Destination),
		idem:   make(map[string]string),
		ready:  true,
		scheds: make(map[string]*Schedule),
		tries:  make(map[string][]Attempt),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("POST /v1/queues/{queue}/tasks", s.auth(s.enqueue))
	mux.HandleFunc("GET /v1/queues/{queue}/tasks", s.auth(s.list))
	mux.HandleFunc("POST /v1/queues/{queue}/tasks/cancel", s.auth(s.bulk("cancel")))
	mux.HandleFunc("POST /v1/queues/{queue}/tasks/retry", s.auth(s.bulk("retry")))
	mux.HandleFunc("GET /v1/tasks/{id}", s.auth(s.getTask))
	mux.HandleFunc("GET /v1/tasks/{id}/attempts", s.auth(s.listAttempts))
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", s.auth(s.cancel))
	mux.HandleFunc("POST /v1/tasks/{id}/retry", s.auth(s.retry))
	mux.HandleFunc("GET /v1/queues", s.auth(s.listQueues))
	mux.HandleFunc("GET /v1/queues/{queue}", s.auth(s.getQueue))
	mux.HandleFunc("PATCH /v1/queues/{queue}", s.auth(s.patchQueue))
	mux.HandleFunc("GET /v1/destinations", s.auth(s.listDestinations))
	mux.HandleFunc("GET /v1/destinations/{destination}", s.auth(s.getDestination))
	mux.HandleFunc("PATCH /v1/destinations/{destination}", s.auth(s.patchDestination))
	mux.HandleFunc("GET /v1/schedules", s.auth(s.listSchedules))
	mux.HandleFunc("PUT /v1/schedules/{name}", s.auth(s.putSchedule))
	mux.HandleFunc("GET /v1/schedules/{name}", s.auth(s.getSchedule))
	mux.HandleFunc("DELETE /v1/schedules/{name}", s.auth(s.deleteSchedule))
	mux.HandleFunc("POST /v1/schedules/{name}/trigger", s.auth(s.triggerSchedule))
	mux.HandleFunc("POST /v1/schedules/{name}/pause", s.auth(s.pauseSchedule(true)))
	mux.HandleFunc("POST /v1/schedules/{name}/resume", s.auth(s.pauseSchedule(false)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		problem(w, http.StatusNotFound, "no such route "+r.Method+" "+r.URL.Path, nil)
	})
	s.Server = httptest.NewServer(s.record(mux))
	return s
}

// FailNext makes the next n requests answer status (429 or 503, say) as
// problem+json, with Retry-After: retryAfter when it is not "", without
// doing anything else: as the real server refuses a request it has not
// acted on.
func (s *Server) FailNext(n, status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failStatus, s.failAfter = n, status, retryAfter
}

// DropNext makes the next n requests take effect and then lose their
// answer: the connection is closed before a byte is written, as when the
// network fails after the server committed.
func (s *Server) DropNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropN = n
}

// Requests returns how many requests the fake received, failed and
// dropped ones included.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Tasks returns how many tasks the fake stores, in every queue.
func (s *Server) Tasks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tasks)
}

// Last returns the last request received.
func (s *Server) Last() Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// SetReady makes /readyz answer 200 (true) or 503 (false).
func (s *Server) SetReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = ready
}

// SetState forces a task's state, as delivery would (e.g. to "failed").
func (s *Server) SetState(id, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tasks[id]; ok {
		t.State = state
		if state == "failed" {
			msg, code := "target answered 500", 500
			t.LastError, t.LastStatus = &msg, &code
		}
	}
}

// AddAttempt appends a to task id's attempts, as the dispatcher would
// record one. A nil ResponseHeaders is sent as {}.
func (s *Server) AddAttempt(id string, a Attempt) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.ResponseHeaders == nil {
		a.ResponseHeaders = map[string]string{}
	}
	s.tries[id] = append(s.tries[id], a)
}

func (s *Server) listAttempts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := r.PathValue("id")
	if _, ok := s.tasks[id]; !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("task %q not found", id), nil)
		return
	}
	as := s.tries[id]
	if as == nil {
		as = []Attempt{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"attempts": as})
}

// SetDestination stores d as the dispatcher would leave it (limit,
// breaker, figures); d.Destination must be a normalized name.
func (s *Server) SetDestination(d Destination) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dests[d.Destination] = &d
}

// Payload returns the stored payload bytes of a task.
func (s *Server) Payload(id string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.tasks[id]; ok {
		return t.payload
	}
	return nil
}

func (s *Server) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			problem(w, http.StatusRequestEntityTooLarge, "body too large", nil)
			return
		}
		s.mu.Lock()
		s.last = Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
		s.requests++
		fail, status, after := s.failN > 0, s.failStatus, s.failAfter
		if fail {
			s.failN--
		}
		drop := !fail && s.dropN > 0
		if drop {
			s.dropN--
		}
		s.mu.Unlock()
		if fail {
			if after != "" {
				w.Header().Set("Retry-After", after)
			}
			problem(w, status, "injected failure", nil)
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if !drop {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(httptest.NewRecorder(), r)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
			}
		}
	})
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.apiKey != "" && r.Header.Get("Authorization") != "Bearer "+s.apiKey {
			problem(w, http.StatusUnauthorized, "missing or invalid API key", nil)
			return
		}
		h(w, r)
	}
}

type fieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func problem(w http.ResponseWriter, status int, detail string, fields []fieldError) {
	problemExt(w, status, detail, fields, nil)
}

// problemExt is problem with extension members.
func problemExt(w http.ResponseWriter, status int, detail string, fields []fieldError, ext map[string]any) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	p := map[string]any{
		"type":   "about:blank",
		"title":  http.StatusText(status),
		"status": status,
		"detail": detail,
	}
	if fields != nil {
		p["errors"] = fields
	}
	maps.Copy(p, ext)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if !ready {
		problem(w, http.StatusServiceUnavailable, "shutting down", nil)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

type enqueueBody struct {
	Target *struct {
		URL     string            `json:"url"`
		Method  string            `json:"method"`
		Headers map[string]string `json:"headers"`
	} `json:"target"`
	Payload        json.RawMessage `json:"payload"`
	PayloadBase64  *string         `json:"payload_base64"`
	ContentType    string          `json:"content_type"`
	Delay          string          `json:"delay"`
	RunAt          string          `json:"run_at"`
	Priority       *int            `json:"priority"`
	MaxAttempts    *int            `json:"max_attempts"`
	Timeout        string          `json:"timeout"`
	IdempotencyKey string          `json:"idempotency_key"`
}

// readPatch decodes a PATCH body into p strictly, answering 400 (and
// returning false) when it does not fit.
func readPatch(w http.ResponseWriter, r *http.Request, p any) bool {
	data, _ := io.ReadAll(r.Body)
	if err := strictDecode(data, p); err != nil {
		problem(w, http.StatusBadRequest, "malformed patch: "+err.Error(), nil)
		return false
	}
	return true
}

func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// validate turns a request into a task (without id) or field errors.
func (s *Server) validate(q *queue, b enqueueBody, prefix string, now time.Time) (*Task, []fieldError) {
	var errs []fieldError
	bad := func(f, d string) { errs = append(errs, fieldError{prefix + f, d}) }
	t := &Task{
		State:       "available",
		MaxAttempts: q.MaxAttempts,
		Priority:    5,
		RunAt:       now,
		CreatedAt:   now,
		UpdatedAt:   now,
		Timeout:     q.Timeout,
		ContentType: "application/json",
	}
	if b.Target == nil || b.Target.URL == "" {
		bad("target.url", "required")
	} else {
		t.Target = target{URL: b.Target.URL, Method: b.Target.Method, Headers: b.Target.Headers}
		if t.Target.Method == "" {
			t.Target.Method = "POST"
		}
	}
	if len(b.Payload) > 0 && b.PayloadBase64 != nil {
		bad("payload", "payload and payload_base64 are exclusive")
	}
	if len(b.Payload) > 0 {
		t.payload = b.Payload
	}
	if b.PayloadBase64 != nil {
		p, err := base64.StdEncoding.DecodeString(*b.PayloadBase64)
		if err != nil {
			bad("payload_base64", "not valid base64")
		}
		t.payload = p
		t.ContentType = "application/octet-stream"
	}
	t.PayloadSize = len(t.payload)
	if b.ContentType != "" {
		t.ContentType = b.ContentType
	}
	if b.Delay != "" && b.RunAt != "" {
		bad("delay", "delay and run_at are exclusive")
	}
	if b.Delay != "" {
		d, err := time.ParseDuration(b.Delay)
		if err != nil || d < 0 {
			bad("delay", "must be a non-negative Go duration")
		} else if d > 0 {
			t.RunAt, t.State = now.Add(d), "scheduled"
		}
	}
	if b.RunAt != "" {
		at, err := time.Parse(time.RFC3339Nano, b.RunAt)
		if err != nil {
			bad("run_at", "must be RFC 3339")
		} else if at.After(now) {
			t.RunAt, t.State = at, "scheduled"
		}
	}
	if b.Priority != nil {
		if *b.Priority < 0 || *b.Priority > 9 {
			bad("priority", "must be 0-9")
		}
		t.Priority = *b.Priority
	}
	if b.MaxAttempts != nil {
		if *b.MaxAttempts < 1 || *b.MaxAttempts > 1000 {
			bad("max_attempts", "must be 1-1000")
		}
		t.MaxAttempts = *b.MaxAttempts
	}
	if b.Timeout != "" {
		d, err := time.ParseDuration(b.Timeout)
		if err != nil || d <= 0 {
			bad("timeout", "must be a positive Go duration")
		}
		t.Timeout = b.Timeout
	}
	if b.IdempotencyKey != "" {
		k := b.IdempotencyKey
		t.IdempotencyKey = &k
		b.IdempotencyKey = ""
		fp, _ := json.Marshal(b) // map keys sorted: headers in any order match
		t.fingerprint = string(fp)
	}
	return t, errs
}

// queueLocked returns the queue, creating it with defaults.
func (s *Server) queueLocked(name string, now time.Time) *queue {
	q, ok := s.queues[name]
	if !ok {
		q = &queue{Name: name, MaxAttempts: 25, Timeout: "30s", Weight: 1,
			RetryStatuses: []string{"408", "425", "429", "500-599", "timeout", "connection"}, CreatedAt: now, UpdatedAt: now}
		s.queues[name] = q
	}
	return q
}

func (s *Server) insertLocked(t *Task) {
	s.seq++
	t.ID = fmt.Sprintf("0190a000-0000-7000-8000-%012d", s.seq)
	s.tasks[t.ID] = t
	s.order = append(s.order, t.ID)
	if t.IdempotencyKey != nil {
		s.idem[t.Queue+"\x00"+*t.IdempotencyKey] = t.ID
	}
}

// shown is t as the API answers with it: target header values replaced by
// "[redacted]" unless full (?view=full; the fake's one key is admin).
func (t *Task) shown(full bool) *Task {
	c := *t
	if !full && len(t.Target.Headers) > 0 {
		c.Target.Headers = make(map[string]string, len(t.Target.Headers))
		for name := range t.Target.Headers {
			c.Target.Headers[name] = "[redacted]"
		}
	}
	return &c
}

func shown(ts []*Task, full bool) []*Task {
	out := make([]*Task, len(ts))
	for i, t := range ts {
		out[i] = t.shown(full)
	}
	return out
}

// replayLocked finds the task stored earlier under t's idempotency key:
// (task, false) for the same request, (task, true) for a conflicting one,
// (nil, false) when the key is new or t has none.
func (s *Server) replayLocked(queue string, t *Task) (*Task, bool) {
	if t.IdempotencyKey == nil {
		return nil, false
	}
	id, ok := s.idem[queue+"\x00"+*t.IdempotencyKey]
	if !ok {
		return nil, false
	}
	old := s.tasks[id]
	return old, old.fingerprint != t.fingerprint
}

func answered(t *Task, replay bool) *Task {
	c := t.shown(false)
	c.IdempotentReplay = &replay
	return c
}

func keyConflict(w http.ResponseWriter, field string, old *Task) {
	problemExt(w, http.StatusUnprocessableEntity, "idempotency key already used for another request",
		[]fieldError{{field, "already used for another request"}},
		map[string]any{"idempotency_key": *old.IdempotencyKey, "task_id": old.ID})
}

func (s *Server) enqueue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	data, _ := io.ReadAll(r.Body)
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		problem(w, http.StatusBadRequest, "malformed JSON: "+err.Error(), nil)
		return
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queueLocked(name, now)

	if _, batch := probe["tasks"]; batch {
		var b struct {
			Tasks []enqueueBody `json:"tasks"`
		}
		if err := strictDecode(data, &b); err != nil {
			problem(w, http.StatusBadRequest, "malformed batch: "+err.Error(), nil)
			return
		}
		var all []fieldError
		var ts []*Task
		for i, eb := range b.Tasks {
			t, errs := s.validate(q, eb, fmt.Sprintf("tasks[%d].", i), now)
			all = append(all, errs...)
			t.Queue = name
			ts = append(ts, t)
		}
		if len(all) > 0 {
			problem(w, http.StatusUnprocessableEntity, "invalid tasks", all)
			return
		}
		out := make([]*Task, len(ts))
		for i, t := range ts {
			old, conflict := s.replayLocked(name, t)
			if conflict {
				keyConflict(w, fmt.Sprintf("tasks[%d].idempotency_key", i), old)
				return // nothing stored: the batch is atomic
			}
			if old != nil {
				out[i] = answered(old, true)
			}
		}
		for i, t := range ts {
			if out[i] == nil {
				s.insertLocked(t)
				out[i] = answered(t, false)
			}
		}
		writeJSON(w, http.StatusCreated, map[string]any{"tasks": out})
		return
	}

	var b enqueueBody
	if err := strictDecode(data, &b); err != nil {
		problem(w, http.StatusBadRequest, "malformed task: "+err.Error(), nil)
		return
	}
	if h := r.Header.Get("Idempotency-Key"); h != "" && b.IdempotencyKey == "" {
		b.IdempotencyKey = h
	}
	t, errs := s.validate(q, b, "", now)
	if len(errs) > 0 {
		problem(w, http.StatusUnprocessableEntity, "invalid task", errs)
		return
	}
	field := "idempotency_key"
	if r.Header.Get("Idempotency-Key") != "" {
		field = "Idempotency-Key"
	}
	if old, conflict := s.replayLocked(name, t); conflict {
		keyConflict(w, field, old)
		return
	} else if old != nil {
		writeJSON(w, http.StatusOK, answered(old, true))
		return
	}
	t.Queue = name
	s.insertLocked(t)
	writeJSON(w, http.StatusCreated, answered(t, false))
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[r.PathValue("id")]
	if !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("task %q not found", r.PathValue("id")), nil)
		return
	}
	writeJSON(w, http.StatusOK, t.shown(r.URL.Query().Get("view") == "full"))
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	q := r.URL.Query()
	state := q.Get("state")
	if state != "" && !slices.Contains(states, state) {
		problem(w, http.StatusUnprocessableEntity, "invalid query", []fieldError{{"state", "unknown state " + strconv.Quote(state)}})
		return
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			problem(w, http.StatusUnprocessableEntity, "invalid query", []fieldError{{"limit", "must be 1-1000"}})
			return
		}
		limit = n
	}
	cursor := q.Get("cursor")
	f, fields := parseFilters(q)
	if len(fields) > 0 {
		problem(w, http.StatusUnprocessableEntity, "invalid query", fields)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []*Task{}
	next := ""
	scanned := 0
	for _, id := range s.order {
		t := s.tasks[id]
		if t.Queue != name || (state != "" && t.State != state) || (cursor != "" && id <= cursor) {
			continue
		}
		if len(out) == limit {
			next = out[len(out)-1].ID
			break
		}
		// As the server does, a page with row filters examines at most
		// 10 × limit tasks and then ends where it stopped.
		if f.rows() && scanned == 10*limit {
			next = s.order[slices.Index(s.order, id)-1]
			break
		}
		scanned++
		if f.match(t) {
			out = append(out, t)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tasks": shown(out, q.Get("view") == "full"), "next_cursor": next})
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[r.PathValue("id")]
	if !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("task %q not found", r.PathValue("id")), nil)
		return
	}
	if final(t.State) {
		problem(w, http.StatusConflict, fmt.Sprintf("task is %s; only unfinished tasks can be cancelled", t.State), nil)
		return
	}
	now := time.Now().UTC()
	t.State, t.UpdatedAt, t.FinishedAt = "cancelled", now, &now
	writeJSON(w, http.StatusOK, t.shown(false))
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[r.PathValue("id")]
	if !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("task %q not found", r.PathValue("id")), nil)
		return
	}
	if t.State != "failed" && t.State != "cancelled" {
		problem(w, http.StatusConflict, fmt.Sprintf("task is %s; only failed or cancelled tasks can be retried", t.State), nil)
		return
	}
	now := time.Now().UTC()
	t.State, t.UpdatedAt, t.FinishedAt, t.RunAt = "available", now, nil, now
	writeJSON(w, http.StatusOK, t.shown(false))
}

// withCountsLocked returns a copy of q with counts by state, zeros included.
func (s *Server) withCountsLocked(q *queue) queue {
	c := *q
	c.Counts = make(map[string]int64, len(states))
	for _, st := range states {
		c.Counts[st] = 0
	}
	for _, t := range s.tasks {
		if t.Queue == q.Name {
			c.Counts[t.State]++
		}
	}
	return c
}

func (s *Server) listQueues(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.queues))
	for n := range s.queues {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]queue, 0, len(names))
	for _, n := range names {
		out = append(out, s.withCountsLocked(s.queues[n]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"queues": out})
}

func (s *Server) getQueue(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[r.PathValue("queue")]
	if !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("queue %q not found", r.PathValue("queue")), nil)
		return
	}
	writeJSON(w, http.StatusOK, s.withCountsLocked(q))
}

func (s *Server) patchQueue(w http.ResponseWriter, r *http.Request) {
	var p struct {
		Concurrency   *int      `json:"concurrency"`
		RateLimit     *float64  `json:"rate_limit"`
		MaxAttempts   *int      `json:"max_attempts"`
		Timeout       *string   `json:"timeout"`
		Paused        *bool     `json:"paused"`
		Weight        *int      `json:"weight"`
		RetryStatuses *[]string `json:"retry_statuses"`
	}
	if !readPatch(w, r, &p) {
		return
	}
	var errs []fieldError
	if p.Concurrency != nil && *p.Concurrency < 0 {
		errs = append(errs, fieldError{"concurrency", "must be >= 0"})
	}
	if p.RateLimit != nil && *p.RateLimit < 0 {
		errs = append(errs, fieldError{"rate_limit", "must be >= 0"})
	}
	if p.MaxAttempts != nil && (*p.MaxAttempts < 1 || *p.MaxAttempts > 1000) {
		errs = append(errs, fieldError{"max_attempts", "must be 1-1000"})
	}
	if p.Timeout != nil {
		if d, err := time.ParseDuration(*p.Timeout); err != nil || d <= 0 {
			errs = append(errs, fieldError{"timeout", "must be a positive Go duration"})
		}
	}
	if p.Weight != nil && (*p.Weight < 1 || *p.Weight > 1000) {
		errs = append(errs, fieldError{"weight", "must be 1-1000"})
	}
	if len(errs) > 0 {
		problem(w, http.StatusUnprocessableEntity, "invalid queue settings", errs)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[r.PathValue("queue")]
	if !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("queue %q not found", r.PathValue("queue")), nil)
		return
	}
	if p.Concurrency != nil {
		q.Concurrency = *p.Concurrency
	}
	if p.RateLimit != nil {
		q.RateLimit = *p.RateLimit
	}
	if p.MaxAttempts != nil {
		q.MaxAttempts = *p.MaxAttempts
	}
	if p.Timeout != nil {
		q.Timeout = *p.Timeout
	}
	if p.Paused != nil {
		q.Paused = *p.Paused
	}
	if p.Weight != nil {
		q.Weight = *p.Weight
	}
	if p.RetryStatuses != nil {
		q.RetryStatuses = *p.RetryStatuses
	}
	q.UpdatedAt = time.Now().UTC()
	writeJSON(w, http.StatusOK, s.withCountsLocked(q))
}

// destinationName normalizes {destination} as the API documents it: an
// http(s) destination or URL on it, lower-case scheme and host, the
// scheme's default port filled in. ok is false for anything else (400).
func destinationName(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port), true
}

func badDestination(w http.ResponseWriter, raw string) {
	problem(w, http.StatusBadRequest, "destination: not an http(s) destination: "+strconv.Quote(raw),
		[]fieldError{{"destination", "must be a destination such as \"https://api.example.com:443\" or a URL on it"}})
}

func (s *Server) listDestinations(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []*Destination{}
	for _, n := range slices.Sorted(maps.Keys(s.dests)) {
		out = append(out, s.dests[n])
	}
	writeJSON(w, http.StatusOK, map[string]any{"destinations": out})
}

func (s *Server) getDestination(w http.ResponseWriter, r *http.Request) {
	name, ok := destinationName(r.PathValue("destination"))
	if !ok {
		badDestination(w, r.PathValue("destination"))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.dests[name]
	if !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("no destination %q", name), nil)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) patchDestination(w http.ResponseWriter, r *http.Request) {
	name, ok := destinationName(r.PathValue("destination"))
	if !ok {
		badDestination(w, r.PathValue("destination"))
		return
	}
	var p struct {
		MaxConcurrency *int     `json:"max_concurrency"`
		RateLimit      *float64 `json:"rate_limit"`
	}
	if !readPatch(w, r, &p) {
		return
	}
	var errs []fieldError
	if p.MaxConcurrency != nil && (*p.MaxConcurrency < 0 || *p.MaxConcurrency > 100000) {
		errs = append(errs, fieldError{"max_concurrency", "must be 0-100000"})
	}
	if p.RateLimit != nil && (*p.RateLimit < 0 || *p.RateLimit > 1e6) {
		errs = append(errs, fieldError{"rate_limit", "must be 0-1000000"})
	}
	if p.MaxConcurrency == nil && p.RateLimit == nil {
		errs = append(errs, fieldError{"", "the patch changes nothing"})
	}
	if len(errs) > 0 {
		problem(w, http.StatusUnprocessableEntity, "invalid destination settings", errs)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UTC().Truncate(time.Microsecond)
	d, ok := s.dests[name]
	if !ok {
		d = &Destination{Destination: name, LimitState: "slow_start", Breaker: "closed", Cooldown: "0s",
			SuccessRate: 1, Latency: "0s", CreatedAt: now}
		s.dests[name] = d
	}
	if p.MaxConcurrency != nil {
		d.MaxConcurrency = *p.MaxConcurrency
	}
	if p.RateLimit != nil {
		d.RateLimit = *p.RateLimit
	}
	d.UpdatedAt = now
	writeJSON(w, http.StatusOK, d)
}
