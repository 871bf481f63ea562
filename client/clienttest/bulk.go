package clienttest

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// filters are a task list's filters, as the API documents them.
type filters struct {
	priority                    *int
	host, key                   string
	createdAfter, createdBefore time.Time
	runAfter, runBefore         time.Time
}

func parseFilters(q url.Values) (filters, []fieldError) {
	var (
		f    filters
		errs []fieldError
	)
	for name, vs := range q {
		v := vs[0]
		at := func(dst *time.Time) {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				errs = append(errs, fieldError{name, "must be an RFC 3339 time"})
			}
			*dst = t
		}
		switch name {
		case "priority":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 9 {
				errs = append(errs, fieldError{name, "must be 0-9"})
			}
			f.priority = &n
		case "target_host":
			if v == "" || strings.ContainsAny(v, "/:") {
				errs = append(errs, fieldError{name, "must be a host"})
			}
			f.host = strings.ToLower(v)
		case "idempotency_key":
			f.key = v
		case "created_after":
			at(&f.createdAfter)
		case "created_before":
			at(&f.createdBefore)
		case "run_after":
			at(&f.runAfter)
		case "run_before":
			at(&f.runBefore)
		case "state", "limit", "cursor", "view":
		default:
			errs = append(errs, fieldError{name, "unknown query parameter"})
		}
	}
	return f, errs
}

// rows reports whether f filters on columns the server reads row by row.
func (f filters) rows() bool {
	return f.priority != nil || f.host != "" || !f.runAfter.IsZero() || !f.runBefore.IsZero()
}

func (f filters) match(t *Task) bool {
	u, _ := url.Parse(t.Target.URL)
	switch {
	case f.priority != nil && t.Priority != *f.priority:
		return false
	case f.host != "" && (u == nil || strings.ToLower(u.Hostname()) != f.host):
		return false
	case f.key != "" && (t.IdempotencyKey == nil || *t.IdempotencyKey != f.key):
		return false
	case !f.createdAfter.IsZero() && t.CreatedAt.Before(f.createdAfter),
		!f.createdBefore.IsZero() && !t.CreatedAt.Before(f.createdBefore),
		!f.runAfter.IsZero() && t.RunAt.Before(f.runAfter),
		!f.runBefore.IsZero() && !t.RunAt.Before(f.runBefore):
		return false
	}
	return true
}

type bulkBody struct {
	IDs    []string `json:"ids,omitempty"`
	State  string   `json:"state,omitempty"`
	Cursor string   `json:"cursor,omitempty"`
	Limit  int      `json:"limit,omitempty"`
}

type bulkResult struct {
	ID    string         `json:"id"`
	State string         `json:"state,omitempty"`
	Error map[string]any `json:"error"`
}

// bulk serves POST /v1/queues/{queue}/tasks/cancel and …/retry: ids, or a
// state swept up to limit tasks from a cursor.
func (s *Server) bulk(action string) http.HandlerFunc {
	allowed := func(st string) bool { return !final(st) }
	to := "cancelled"
	if action == "retry" {
		allowed = func(st string) bool { return st == "failed" || st == "cancelled" }
		to = "available"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		var b bulkBody
		if !readPatch(w, r, &b) {
			return
		}
		switch {
		case (len(b.IDs) == 0) == (b.State == ""):
			problem(w, http.StatusUnprocessableEntity, "invalid body", []fieldError{{"ids", "give ids or state"}})
			return
		case len(b.IDs) > 1000:
			problem(w, http.StatusUnprocessableEntity, "invalid body", []fieldError{{"ids", "at most 1000"}})
			return
		case b.State != "" && !allowed(b.State) && slices.Contains(states, b.State) || b.State != "" && !slices.Contains(states, b.State):
			problem(w, http.StatusUnprocessableEntity, "invalid body", []fieldError{{"state", "not allowed"}})
			return
		case b.Limit < 0 || b.Limit > 1000:
			problem(w, http.StatusUnprocessableEntity, "invalid body", []fieldError{{"limit", "must be 1-1000"}})
			return
		}
		name := r.PathValue("queue")
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.queues[name]; !ok {
			problem(w, http.StatusNotFound, fmt.Sprintf("no queue named %q", name), nil)
			return
		}
		now := time.Now().UTC()
		change := func(t *Task) {
			if to == "cancelled" {
				t.State, t.UpdatedAt, t.FinishedAt = to, now, &now
			} else {
				t.State, t.UpdatedAt, t.FinishedAt, t.RunAt, t.Attempt = to, now, nil, now, 0
			}
		}
		out := map[string]any{"count": 0, "more": false, "next_cursor": ""}
		count := 0
		if b.IDs != nil {
			results := make([]bulkResult, len(b.IDs))
			for i, id := range b.IDs {
				t, ok := s.tasks[id]
				results[i].ID = id
				switch {
				case !ok || t.Queue != name:
					results[i].Error = map[string]any{"type": "about:blank", "title": "Not Found", "status": 404,
						"detail": fmt.Sprintf("no task with id %q in queue %q", id, name)}
				case !allowed(t.State):
					results[i].State = t.State
					results[i].Error = map[string]any{"type": "about:blank", "title": "Conflict", "status": 409,
						"detail": fmt.Sprintf("cannot %s task %s: it is %s", action, id, t.State)}
				default:
					change(t)
					results[i].State = t.State
					count++
				}
			}
			out["results"] = results
		} else {
			after := ""
			if b.Cursor != "" {
				raw, err := base64.RawURLEncoding.DecodeString(b.Cursor)
				if err != nil {
					problem(w, http.StatusUnprocessableEntity, "invalid body", []fieldError{{"cursor", "not a cursor"}})
					return
				}
				after = string(raw)
			}
			limit := b.Limit
			if limit == 0 {
				limit = 1000
			}
			last := ""
			for _, id := range s.order {
				t := s.tasks[id]
				if t.Queue != name || t.State != b.State || id <= after {
					continue
				}
				if count == limit {
					out["more"], out["next_cursor"] = true, base64.RawURLEncoding.EncodeToString([]byte(last))
					break
				}
				change(t)
				count++
				last = id
			}
		}
		out["count"] = count
		writeJSON(w, http.StatusOK, out)
	}
}
