package api

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// What the dashboard (internal/ui) shares with the API, so that a task
// enqueued or a queue changed from a form is judged by the same code and
// refused with the same words as one sent to /v1.

// EnqueueOptions is what decoding a task needs besides its body.
type EnqueueOptions struct {
	// MaxBodyBytes bounds the task's JSON; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// CheckTarget refuses a literal private or metadata target early, as
	// Config.CheckTarget does; nil = no check.
	CheckTarget func(*url.URL) error
	// Now checks an explicit run_at; nil = time.Now.
	Now func() time.Time
}

// DecodeTask validates the JSON of one task as POST
// /v1/queues/{queue}/tasks does (a batch is refused: the dashboard
// enqueues one task at a time) and returns it without an id.
func DecodeTask(queue string, body []byte, o EnqueueOptions) (store.NewTask, error) {
	if msg := checkQueueName(queue); msg != "" {
		return store.NewTask{}, invalidField("queue", "%s", msg)
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if int64(len(body)) > o.MaxBodyBytes {
		return store.NewTask{}, tooLarge(o.MaxBodyBytes)
	}
	tasks, batch, err := decodeEnqueue(body, decodeEnv{queue: queue, now: o.Now(), maxBodyBytes: o.MaxBodyBytes,
		maxBatch: 1, checkTarget: o.CheckTarget})
	if err != nil {
		return store.NewTask{}, err
	}
	if batch || len(tasks) != 1 {
		return store.NewTask{}, invalidField("tasks", "give one task, not a batch")
	}
	return tasks[0], nil
}

// DecodeQueuePatch validates a PATCH /v1/queues/{queue} body.
func DecodeQueuePatch(body []byte) (task.QueuePatch, error) { return decodePatch(body) }

// CheckQueueName returns why name is not a valid queue name, or "".
func CheckQueueName(name string) string { return checkQueueName(name) }

// IdempotencyRefusal is the API's refusal of a single enqueue the store
// refused for its idempotency key (an error Problem understands).
func IdempotencyRefusal(e *store.IdempotencyError) error { return idempotencyRefusal(e, false, false) }

// FieldProblem is one invalid field of a refused request.
type FieldProblem struct {
	Field  string
	Detail string
}

// Problem is how the API would describe an error to a client: its status,
// detail and invalid fields.
type Problem struct {
	Status int
	Detail string
	Fields []FieldProblem
}

// ProblemOf describes err as the API would answer it when err is a
// problem the client can act on (a validation error from DecodeTask, say);
// false for anything else, which callers treat as internal.
func ProblemOf(err error) (Problem, bool) {
	var ae *apiError
	if !errors.As(err, &ae) {
		return Problem{}, false
	}
	p := Problem{Status: ae.status, Detail: ae.detail}
	if p.Status == 0 {
		p.Status = http.StatusInternalServerError
	}
	for _, f := range ae.fields {
		p.Fields = append(p.Fields, FieldProblem(f))
	}
	return p, true
}

// ListFilters reads the task-list filters of GET /v1/queues/{queue}/tasks
// (priority, target_host, idempotency_key, created_after, created_before,
// run_after, run_before) from q into p, refusing bad values with the API's
// words; other parameters are left alone.
func ListFilters(q url.Values, p *store.ListParams) error {
	c := &collector{}
	for _, name := range []string{"priority", "target_host", "idempotency_key", "created_after", "created_before", "run_after", "run_before"} {
		if v := q.Get(name); v != "" {
			listFilter(c, p, name, v)
		}
	}
	checkRange(c, "created_after", "created_before", p.CreatedAfter, p.CreatedBefore)
	checkRange(c, "run_after", "run_before", p.RunAfter, p.RunBefore)
	return c.err()
}
