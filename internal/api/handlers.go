package api

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// openAPIDoc is the hand-written OpenAPI 3.1 document served at
// /openapi.json; openapi_test.go holds the routes and responses to it.
//
//go:embed openapi.json
var openAPIDoc string

// readyTimeout bounds a readiness check so /readyz answers before the
// kubelet's probe gives up.
const readyTimeout = 2 * time.Second

// enqueueReply is a created or replayed task, or a batch of them.
type enqueueReply struct {
	body    any
	created bool
	loc     string
}

func (e enqueueReply) MarshalJSON() ([]byte, error) { return marshal(e.body) }

func (e enqueueReply) httpStatus() int {
	if e.created {
		return http.StatusCreated
	}
	return http.StatusOK // every task was an idempotent replay
}

func (e enqueueReply) location() string { return e.loc }

type taskListJSON struct {
	Tasks      []taskJSON `json:"tasks"`
	NextCursor string     `json:"next_cursor"`
}

type batchJSON struct {
	Tasks []taskJSON `json:"tasks"`
}

type queueListJSON struct {
	Queues []queueJSON `json:"queues"`
}

type statusJSON struct {
	Status  string `json:"status"`
	Version string `json:"version,omitempty"`
}

// enqueue: POST /v1/queues/{queue}/tasks, one task or {"tasks":[…]}.
func (s *server) enqueue(r *http.Request) (enqueueReply, error) {
	queue := r.PathValue("queue")
	if msg := checkQueueName(queue); msg != "" {
		return enqueueReply{}, invalidField("queue", "%s", msg)
	}
	if err := requireJSON(r); err != nil {
		return enqueueReply{}, err
	}
	keys := r.Header.Values("Idempotency-Key")
	if len(keys) > 1 {
		return enqueueReply{}, invalidField("Idempotency-Key", "give the header at most once")
	}
	env := decodeEnv{
		queue:        queue,
		now:          s.cfg.Now(),
		maxBodyBytes: s.cfg.MaxBodyBytes,
		maxBatch:     s.cfg.MaxBatch,
		checkTarget:  s.cfg.CheckTarget,
	}
	if len(keys) == 1 {
		env.headerKey = keys[0]
	}
	body, err := readBody(r)
	if err != nil {
		return enqueueReply{}, err
	}
	tasks, batch, err := decodeEnqueue(body, env)
	if err != nil {
		return enqueueReply{}, err
	}
	for i := range tasks {
		id, err := uuid.NewV7()
		if err != nil {
			return enqueueReply{}, fmt.Errorf("enqueue: new task id: %w", err)
		}
		tasks[i].ID = id.String()
	}
	res, err := s.enqueueTraced(r, queue, tasks)
	var refused *store.IdempotencyError
	if errors.As(err, &refused) {
		return enqueueReply{}, idempotencyRefusal(refused, batch, env.headerKey != "")
	}
	if err != nil {
		return enqueueReply{}, fmt.Errorf("enqueue %d tasks to %s: %w", len(tasks), queue, err)
	}
	if len(res) != len(tasks) {
		return enqueueReply{}, fmt.Errorf("enqueue: store returned %d results for %d tasks", len(res), len(tasks))
	}
	created := false
	out := make([]taskJSON, len(res))
	for i, e := range res {
		created = created || !e.Existing
		out[i] = toTaskJSON(e.Task, redactedView)
		out[i].IdempotentReplay = &e.Existing
	}
	if !batch {
		return enqueueReply{body: out[0], created: created, loc: "/v1/tasks/" + out[0].ID}, nil
	}
	return enqueueReply{body: batchJSON{Tasks: out}, created: created}, nil
}

// enqueueTraced runs Store.Enqueue inside the enqueue span and stores that span's
// context with every task, so each delivery continues the caller's trace:
// caller → API request → enqueue → delivery. An idempotent replay returns
// the original task, which keeps the original's traceparent.
func (s *server) enqueueTraced(r *http.Request, queue string, tasks []store.NewTask) ([]store.Enqueued, error) {
	attrs := []attribute.KeyValue{
		attribute.String("spool.queue", queue),
		attribute.Int("spool.task.count", len(tasks)),
	}
	if len(tasks) == 1 {
		attrs = append(attrs, attribute.String("spool.task.id", tasks[0].ID))
	}
	ctx, span := s.tracer.Start(traceContext(r), "spool.enqueue",
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	defer span.End()
	tp := traceParent(ctx)
	for i := range tasks {
		tasks[i].TraceParent = tp
	}
	res, err := s.cfg.Store.Enqueue(ctx, tasks)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "store enqueue failed")
		return nil, err
	}
	existing := 0
	for _, e := range res {
		if e.Existing {
			existing++
		}
	}
	span.SetAttributes(attribute.Int("spool.task.existing", existing))
	return res, nil
}

// requireJSON refuses a body declared as anything but JSON (415). A body
// sent without a chosen type is accepted and parsed strictly as JSON
// anyway: no Content-Type at all, or curl -d's default of
// application/x-www-form-urlencoded, which is what "curl -d '{…}'" sends
// when the user forgets -H 'Content-Type: application/json'. (Accepting
// it opens no cross-site hole: a browser form cannot set the bearer key,
// and a urlencoded form body is not JSON.)
func requireJSON(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && mt == "application/x-www-form-urlencoded" && len(params) == 0 {
		return nil
	}
	ok := err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
	if cs, has := params["charset"]; ok && has && !strings.EqualFold(cs, "utf-8") {
		ok = false
	}
	if !ok {
		return &apiError{status: http.StatusUnsupportedMediaType,
			detail: fmt.Sprintf("Content-Type must be application/json (UTF-8), got %s", quoteInput(ct))}
	}
	return nil
}

// readJSONBody is requireJSON then readBody, for the PATCH handlers.
func readJSONBody(r *http.Request) ([]byte, error) {
	if err := requireJSON(r); err != nil {
		return nil, err
	}
	return readBody(r)
}

// readBody reads the (already size-limited) body. A declared length
// (limitBody has checked it against the limit) is read into a buffer of
// exactly that size: io.ReadAll's doubling would allocate about twice the
// body, and keep up to a quarter more than it holds.
func readBody(r *http.Request) ([]byte, error) {
	var b []byte
	var err error
	if n := r.ContentLength; n > 0 {
		b = make([]byte, n)
		_, err = io.ReadFull(r.Body, b)
	} else {
		b, err = io.ReadAll(r.Body)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(mbe.Limit)
		}
		return nil, badRequest("could not read the request body")
	}
	return b, nil
}

// taskID returns the canonical form of a task id from the path, or a 404:
// a string that is not a UUID names no task, and must not reach a driver
// whose column type would reject it with an internal error.
func taskID(r *http.Request) (string, error) {
	raw := r.PathValue("id")
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		return "", notFound("no task with id %s", quoteInput(raw))
	}
	return id.String(), nil
}

// getTask: GET /v1/tasks/{id}?view=. Other query parameters are ignored,
// as they always were.
func (s *server) getTask(r *http.Request) (taskJSON, error) {
	id, err := taskID(r)
	if err != nil {
		return taskJSON{}, err
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return taskJSON{}, badRequest("malformed query string: %s", err.Error())
	}
	if len(query["view"]) > 1 {
		return taskJSON{}, invalidField("view", "give the parameter at most once")
	}
	v, ok := parseView(query.Get("view"))
	if !ok {
		return taskJSON{}, invalidField("view", badView, quoteInput(query.Get("view")))
	}
	if err := allowView(r, v); err != nil {
		return taskJSON{}, err
	}
	t, err := s.cfg.Store.GetTask(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return taskJSON{}, notFound("no task with id %q", id)
	}
	if err != nil {
		return taskJSON{}, fmt.Errorf("get task %s: %w", id, err)
	}
	return toTaskJSON(t, v), nil
}

// listAttempts: GET /v1/tasks/{id}/attempts, the task's attempt history,
// oldest first.
func (s *server) listAttempts(r *http.Request) (attemptListJSON, error) {
	id, err := taskID(r)
	if err != nil {
		return attemptListJSON{}, err
	}
	as, err := s.cfg.Store.ListAttempts(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return attemptListJSON{}, notFound("no task with id %q", id)
	}
	if err != nil {
		return attemptListJSON{}, fmt.Errorf("list attempts of task %s: %w", id, err)
	}
	out := attemptListJSON{Attempts: make([]attemptJSON, len(as))}
	for i, a := range as {
		out.Attempts[i] = toAttemptJSON(a)
	}
	return out, nil
}

// parseView reads ?view=: redacted (the default) or full.
func parseView(value string) (view, bool) {
	switch value {
	case "", "redacted":
		return redactedView, true
	case "full":
		return fullView, true
	}
	return redactedView, false
}

const badView = "must be redacted or full, got %s"

// allowView refuses a full view (target header values) to all but admin keys.
func allowView(r *http.Request, v view) error {
	if role := auth.RoleFrom(r.Context()); v == fullView && !role.Allows(auth.Admin) {
		return forbidden(role, auth.Admin, "view=full (target header values)")
	}
	return nil
}

// listTaskParams are the query parameters of a task list.
const listTaskParams = "state, limit, cursor, view, priority, target_host, idempotency_key, " +
	"created_after, created_before, run_after, run_before"

// listTasks: GET /v1/queues/{queue}/tasks?state=&limit=&cursor=&view= and
// the filters (priority, target_host, idempotency_key, created_after,
// created_before, run_after, run_before).
func (s *server) listTasks(r *http.Request) (taskListJSON, error) {
	queue := r.PathValue("queue")
	if checkQueueName(queue) != "" {
		return taskListJSON{}, notFound("no queue named %s", quoteInput(queue))
	}
	p := store.ListParams{Queue: queue}
	view := redactedView
	var cursor string
	c, err := pageQuery(r, &p.Limit, &cursor, listTaskParams, func(c *collector, name, v string) bool {
		switch name {
		case "state":
			if v == "" {
				return true
			}
			st, err := task.ParseState(v)
			if err != nil {
				c.add(name, "must be one of %s, got %s", stateNames(), quoteInput(v))
				return true
			}
			p.State = st
			return true
		case "view":
			var ok bool
			if view, ok = parseView(v); !ok {
				c.add(name, badView, quoteInput(v))
			}
			return true
		}
		return listFilter(c, &p, name, v)
	})
	if err != nil {
		return taskListJSON{}, err
	}
	if cursor != "" {
		after, ok := decodeCursor(cursor)
		if !ok {
			c.add("cursor", "is not a cursor this server issued; pass next_cursor from the previous page unchanged")
		}
		p.After = after
	}
	checkRange(c, "created_after", "created_before", p.CreatedAfter, p.CreatedBefore)
	checkRange(c, "run_after", "run_before", p.RunAfter, p.RunBefore)
	if err := c.err(); err != nil {
		return taskListJSON{}, err
	}
	if err := allowView(r, view); err != nil {
		return taskListJSON{}, err
	}
	page, err := s.cfg.Store.ListTasks(r.Context(), p)
	if err != nil {
		return taskListJSON{}, fmt.Errorf("list tasks of %s: %w", queue, err)
	}
	if len(page.Tasks) == 0 && page.Next == "" {
		// The store answers an unknown queue with an empty list; a typo in
		// the queue name deserves a 404. Only checked on empty pages, so a
		// long listing does not pay for the queue's counts on every page.
		if err := s.queueExists(r, queue); err != nil {
			return taskListJSON{}, err
		}
	}
	out := taskListJSON{Tasks: toTaskList(page.Tasks, view)}
	if page.Next != "" {
		// A full page may have a successor, and a filtered page whose
		// scan reached its bound continues where the scan stopped.
		out.NextCursor = encodeCursor(page.Next)
	}
	return out, nil
}

// queueExists answers 404 for a queue the store does not know.
func (s *server) queueExists(r *http.Request, queue string) error {
	if _, err := s.cfg.Store.GetQueue(r.Context(), queue); errors.Is(err, store.ErrNotFound) {
		return notFound("no queue named %q", queue)
	} else if err != nil {
		return fmt.Errorf("get queue %s: %w", queue, err)
	}
	return nil
}

// listFilter parses one of a task list's filters into p; it reports
// whether name is one.
func listFilter(c *collector, p *store.ListParams, name, v string) bool {
	timeParam := func(dst *time.Time) {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			c.add(name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z, got %s", quoteInput(v))
			return
		}
		*dst = t
	}
	switch name {
	case "priority":
		n, err := strconv.Atoi(v)
		if err != nil || n < task.MinPriority || n > task.MaxPriority {
			c.add(name, "must be an integer from %d to %d, got %s", task.MinPriority, task.MaxPriority, quoteInput(v))
			break
		}
		p.Priority = &n
	case "target_host":
		h := strings.ToLower(v)
		if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
			h = h[1 : len(h)-1] // an IPv6 literal as URLs write it
		}
		_, ipErr := netip.ParseAddr(h)
		if h == "" || len(h) > 255 || strings.ContainsAny(h, "/?#@[] \t") || strings.Contains(h, ":") && ipErr != nil {
			c.add(name, "must be a host name or IP address (no scheme, port or path), got %s", quoteInput(v))
			break
		}
		p.TargetHost = h
	case "idempotency_key":
		if msg := checkIdempotencyKey(v); v == "" || msg != "" {
			c.add(name, "%s", cmp.Or(msg, "must not be empty"))
			break
		}
		p.IdempotencyKey = v
	case "created_after":
		timeParam(&p.CreatedAfter)
	case "created_before":
		timeParam(&p.CreatedBefore)
	case "run_after":
		timeParam(&p.RunAfter)
	case "run_before":
		timeParam(&p.RunBefore)
	default:
		return false
	}
	return true
}

// checkRange refuses a range whose end is not after its start.
func checkRange(c *collector, from, to string, a, b time.Time) {
	if !a.IsZero() && !b.IsZero() && !b.After(a) {
		c.add(to, "must be after %s", from)
	}
}

func stateNames() string {
	names := make([]string, len(task.States))
	for i, st := range task.States {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
}

// pageQuery parses a list's query string: limit (into *limit, default
// DefaultListLimit) and cursor (raw, into *cursor) for every list; other
// parameters go to extra, which reports whether it knows the name (known
// lists them all for the message). Problems are gathered in the returned
// collector; a query string that does not parse is a 400.
func pageQuery(r *http.Request, limit *int, cursor *string, known string, extra func(c *collector, name, v string) bool) (*collector, error) {
	*limit = DefaultListLimit
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("malformed query string: %s", err.Error())
	}
	c := &collector{}
	for _, name := range slices.Sorted(maps.Keys(query)) {
		vs := query[name]
		if len(vs) != 1 {
			c.add(name, "give the parameter at most once")
			continue
		}
		v := vs[0]
		switch {
		case name == "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxListLimit {
				c.add(name, "must be an integer from 1 to %d, got %s", MaxListLimit, quoteInput(v))
				break
			}
			*limit = n
		case name == "cursor":
			*cursor = v
		case extra == nil || !extra(c, name, v):
			c.add(name, "unknown query parameter; known: %s", known)
		}
	}
	return c, nil
}

// Cursors are opaque to clients: base64url of the last id seen, so the
// encoding can change without breaking anyone who passes it back unchanged.
func encodeCursor(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func decodeCursor(c string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 36 {
		return "", false
	}
	id, err := uuid.ParseBytes(b)
	if err != nil {
		return "", false
	}
	return id.String(), true
}

func (s *server) cancelTask(r *http.Request) (taskJSON, error) {
	return s.transition(r, "cancel", s.cfg.Store.CancelTask, "only unfinished tasks can be cancelled")
}

func (s *server) retryTask(r *http.Request) (taskJSON, error) {
	return s.transition(r, "retry", s.cfg.Store.RetryTask, "only failed or cancelled tasks can be retried")
}

// transition applies cancel or retry and explains a conflict with the
// task's current state.
func (s *server) transition(r *http.Request, op string, fn func(context.Context, string) (task.Task, error), rule string) (taskJSON, error) {
	id, err := taskID(r)
	if err != nil {
		return taskJSON{}, err
	}
	t, err := fn(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return taskJSON{}, notFound("no task with id %q", id)
	case errors.Is(err, store.ErrConflict):
		cur, gerr := s.cfg.Store.GetTask(r.Context(), id)
		if gerr != nil {
			return taskJSON{}, conflict("cannot %s task %s in its current state; %s", op, id, rule)
		}
		return taskJSON{}, conflict("cannot %s task %s: it is %s; %s", op, id, cur.State, rule)
	case err != nil:
		return taskJSON{}, fmt.Errorf("%s task %s: %w", op, id, err)
	}
	return toTaskJSON(t, redactedView), nil
}

func (s *server) listQueues(r *http.Request) (queueListJSON, error) {
	qs, err := s.cfg.Store.ListQueues(r.Context())
	if err != nil {
		return queueListJSON{}, fmt.Errorf("list queues: %w", err)
	}
	out := queueListJSON{Queues: make([]queueJSON, len(qs))}
	for i, q := range qs {
		out.Queues[i] = toQueueJSON(q)
	}
	return out, nil
}

func (s *server) getQueue(r *http.Request) (queueJSON, error) {
	name := r.PathValue("queue")
	if checkQueueName(name) != "" {
		return queueJSON{}, notFound("no queue named %s", quoteInput(name))
	}
	q, err := s.cfg.Store.GetQueue(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return queueJSON{}, notFound("no queue named %q", name)
	}
	if err != nil {
		return queueJSON{}, fmt.Errorf("get queue %s: %w", name, err)
	}
	return toQueueJSON(q), nil
}

// patchQueue changes settings; like enqueue it creates a missing queue, so
// a queue can be configured (or paused) before its first task arrives.
func (s *server) patchQueue(r *http.Request) (queueJSON, error) {
	name := r.PathValue("queue")
	if msg := checkQueueName(name); msg != "" {
		return queueJSON{}, invalidField("queue", "%s", msg)
	}
	body, err := readJSONBody(r)
	if err != nil {
		return queueJSON{}, err
	}
	p, err := decodePatch(body)
	if err != nil {
		return queueJSON{}, err
	}
	return s.updateQueue(r, name, p)
}

func (s *server) pauseQueue(r *http.Request) (queueJSON, error)  { return s.setPaused(r, true) }
func (s *server) resumeQueue(r *http.Request) (queueJSON, error) { return s.setPaused(r, false) }

func (s *server) setPaused(r *http.Request, paused bool) (queueJSON, error) {
	name := r.PathValue("queue")
	if msg := checkQueueName(name); msg != "" {
		return queueJSON{}, invalidField("queue", "%s", msg)
	}
	return s.updateQueue(r, name, task.QueuePatch{Paused: &paused})
}

func (s *server) updateQueue(r *http.Request, name string, p task.QueuePatch) (queueJSON, error) {
	q, err := s.cfg.Store.UpdateQueue(r.Context(), name, p)
	if err != nil {
		return queueJSON{}, fmt.Errorf("update queue %s: %w", name, err)
	}
	return toQueueJSON(q), nil
}

// livez answers while the process runs; it checks nothing else, so a
// database blip never gets pods restarted.
func (s *server) livez(*http.Request) (statusJSON, error) {
	return statusJSON{Status: "ok", Version: s.cfg.Version}, nil
}

// readyz answers 200 when the process can serve, else 503 with the reason.
func (s *server) readyz(r *http.Request) (statusJSON, error) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	var err error
	if s.cfg.Ready != nil {
		err = s.cfg.Ready(ctx)
	} else {
		err = s.cfg.Store.Ping(ctx)
	}
	if err == nil {
		return statusJSON{Status: "ok", Version: s.cfg.Version}, nil
	}
	reason := "not ready"
	switch {
	case errors.Is(err, ErrShuttingDown):
		reason = "not ready: shutting down"
	case errors.Is(err, store.ErrNotMigrated):
		reason = "not ready: the database schema is not migrated (run spool migrate)"
	case errors.Is(err, store.ErrUnavailable):
		reason = "not ready: the store is unreachable"
	case errors.Is(err, context.DeadlineExceeded):
		reason = "not ready: the readiness check timed out"
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "not ready",
		slog.String("http.request.id", requestIDFrom(r.Context())),
		slog.String("error.message", err.Error()))
	return statusJSON{}, &apiError{status: http.StatusServiceUnavailable, detail: reason, retryAfter: 1}
}

func (s *server) openAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(openAPIDoc)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, openAPIDoc) // a failed write means the client left
}
