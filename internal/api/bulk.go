package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// bulkJSON answers a bulk cancel or retry. Given ids, Results has one
// entry per id, in order; given a state, More and NextCursor tell the
// client whether to call again and from where.
type bulkJSON struct {
	Count      int              `json:"count"` // tasks changed
	Results    []bulkResultJSON `json:"results,omitempty"`
	More       bool             `json:"more"`
	NextCursor string           `json:"next_cursor"`
}

// bulkResultJSON is what a bulk change did to one id: State is the task's
// state after the call (absent when there is no such task), Error null
// when the task changed and otherwise a problem-like object (404: not a
// task of this queue; 409: its state does not allow the change).
type bulkResultJSON struct {
	ID    string      `json:"id"`
	State string      `json:"state,omitempty"`
	Error *bulkErrorJ `json:"error"`
}

type bulkErrorJ struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// bulkRequest is a decoded bulk body: ids, or a state with where to start
// and how many.
type bulkRequest struct {
	ids   []string
	state task.State
	after string
	limit int
}

// bulkOp is the cancel or the retry, as the bulk handlers need them.
type bulkOp struct {
	name    string // "cancel", "retry"
	states  []task.State
	byIDs   func(ctx context.Context, queue string, ids []string) ([]store.BulkResult, error)
	byState func(ctx context.Context, p store.SweepParams) (store.Sweep, error)
	rule    string
}

func (s *server) cancelOp() bulkOp {
	return bulkOp{"cancel", []task.State{task.Scheduled, task.Available, task.Running, task.Retrying},
		s.cfg.Store.CancelTasks, s.cfg.Store.CancelState, "only unfinished tasks can be cancelled"}
}

func (s *server) retryOp() bulkOp {
	return bulkOp{"retry", []task.State{task.Failed, task.Cancelled},
		s.cfg.Store.RetryTasks, s.cfg.Store.RetryState, "only failed or cancelled tasks can be retried"}
}

// bulkCancel: POST /v1/queues/{queue}/tasks/cancel.
func (s *server) bulkCancel(r *http.Request) (bulkJSON, error) { return s.bulk(r, s.cancelOp()) }

// bulkRetry: POST /v1/queues/{queue}/tasks/retry.
func (s *server) bulkRetry(r *http.Request) (bulkJSON, error) { return s.bulk(r, s.retryOp()) }

// bulk applies op to the ids given, or to the next tasks in a state: at
// most store.MaxBulk tasks per request, whatever the queue holds.
func (s *server) bulk(r *http.Request, op bulkOp) (bulkJSON, error) {
	queue := r.PathValue("queue")
	if checkQueueName(queue) != "" {
		return bulkJSON{}, notFound("no queue named %s", quoteInput(queue))
	}
	body, err := readJSONBody(r)
	if err != nil {
		return bulkJSON{}, err
	}
	req, err := decodeBulk(body, op)
	if err != nil {
		return bulkJSON{}, err
	}
	if req.ids == nil {
		sw, err := op.byState(r.Context(), store.SweepParams{Queue: queue, State: req.state, After: req.after, Limit: req.limit})
		if err != nil {
			return bulkJSON{}, fmt.Errorf("%s %s tasks of %s: %w", op.name, req.state, queue, err)
		}
		if sw.Changed == 0 && !sw.More {
			if err := s.queueExists(r, queue); err != nil {
				return bulkJSON{}, err
			}
		}
		out := bulkJSON{Count: sw.Changed, More: sw.More}
		if sw.More {
			out.NextCursor = encodeCursor(sw.Last)
		}
		return out, nil
	}
	res, err := op.byIDs(r.Context(), queue, req.ids)
	if err != nil {
		return bulkJSON{}, fmt.Errorf("%s tasks of %s: %w", op.name, queue, err)
	}
	out := bulkJSON{Results: make([]bulkResultJSON, len(res))}
	found := false
	for i, br := range res {
		rj := bulkResultJSON{ID: br.ID, State: string(br.State)}
		switch {
		case br.Err == nil:
			out.Count++
			found = true
		case errors.Is(br.Err, store.ErrNotFound):
			rj.Error = bulkError(http.StatusNotFound, fmt.Sprintf("no task with id %q in queue %q", br.ID, queue))
		case errors.Is(br.Err, store.ErrConflict):
			found = true
			rj.Error = bulkError(http.StatusConflict, fmt.Sprintf("cannot %s task %s: it is %s; %s", op.name, br.ID, br.State, op.rule))
		default:
			return bulkJSON{}, fmt.Errorf("%s task %s: %w", op.name, br.ID, br.Err)
		}
		out.Results[i] = rj
	}
	if !found {
		if err := s.queueExists(r, queue); err != nil {
			return bulkJSON{}, err
		}
	}
	return out, nil
}

func bulkError(status int, detail string) *bulkErrorJ {
	return &bulkErrorJ{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail}
}

// decodeBulk reads {"ids": [...]} or {"state": s, "cursor": c, "limit": n}.
func decodeBulk(body []byte, op bulkOp) (bulkRequest, error) {
	req := bulkRequest{limit: store.MaxBulk}
	raw, err := parseJSON(body)
	if err != nil {
		return req, err
	}
	ms, ok, dup := members(raw)
	if !ok {
		return req, invalidField("", "the body must be a JSON object, got %s", kind(raw))
	}
	c := &collector{}
	if dup != "" {
		c.add(dup, "duplicate field")
	}
	var hasIDs, hasState, hasPaging bool
	for _, m := range ms {
		switch m.key {
		case "ids":
			hasIDs = true
			req.ids = decodeIDs(c, m.key, m.val)
		case "state":
			hasState = true
			v, ok := decodeString(c, m.key, m.val)
			if !ok {
				break
			}
			st, err := task.ParseState(v)
			if err != nil || !slices.Contains(op.states, st) {
				c.add(m.key, "must be one of %s (%s), got %s", joinStates(op.states), op.rule, quoteInput(v))
				break
			}
			req.state = st
		case "cursor":
			hasPaging = true
			v, ok := decodeString(c, m.key, m.val)
			if !ok || v == "" {
				break
			}
			after, ok := decodeCursor(v)
			if !ok {
				c.add(m.key, "is not a cursor this server issued; pass next_cursor from the previous answer unchanged")
			}
			req.after = after
		case "limit":
			hasPaging = true
			if n, ok := decodeInt(c, m.key, m.val, 1, store.MaxBulk); ok {
				req.limit = int(n)
			}
		default:
			c.add(m.key, "unknown field; known: ids, or state with cursor and limit")
		}
	}
	switch {
	case hasIDs && hasState:
		c.add("state", "give ids or state, not both")
	case !hasIDs && !hasState:
		c.add("ids", "give ids (the tasks to %s) or state (to %s the queue's tasks in that state)", op.name, op.name)
	case hasIDs && hasPaging:
		c.add("ids", "cursor and limit go with state, not with ids")
	}
	if err := c.err(); err != nil {
		return bulkRequest{}, err
	}
	return req, nil
}

// decodeIDs reads 1 to store.MaxBulk distinct task ids.
func decodeIDs(c *collector, field string, raw json.RawMessage) []string {
	es, ok := elements(raw, store.MaxBulk)
	switch {
	case !ok:
		c.add(field, "must be an array of task ids, got %s", kind(raw))
		return []string{}
	case len(es) == 0:
		c.add(field, "must hold at least one task id")
		return []string{}
	case len(es) > store.MaxBulk:
		c.add(field, "must hold at most %d task ids; send more requests", store.MaxBulk)
		return []string{}
	}
	ids := make([]string, 0, len(es))
	seen := make(map[string]int, len(es))
	for i, e := range es {
		f := fmt.Sprintf("%s[%d]", field, i)
		v, ok := decodeString(c, f, e)
		if !ok {
			continue
		}
		u, err := uuid.Parse(v)
		if err != nil || len(v) != 36 {
			c.add(f, "must be a task id (a UUID), got %s", quoteInput(v))
			continue
		}
		id := u.String()
		if j, dup := seen[id]; dup {
			c.add(f, "repeats %s[%d]", field, j)
			continue
		}
		seen[id] = i
		ids = append(ids, id)
	}
	return ids
}

// joinStates lists states for a message.
func joinStates(sts []task.State) string {
	names := make([]string, len(sts))
	for i, st := range sts {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
}
