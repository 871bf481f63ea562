package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestListFilters: each filter through the query string, the bounded scan
// surfacing as short pages with a cursor, and bad values answered 422
// naming the parameter.
func TestListFilters(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		var items []string
		for i := range 40 {
			host := []string{"a.example", "B.example:8443"}[i%2]
			items = append(items, fmt.Sprintf(`{"target":{"url":"https://%s/%d"},"priority":%d,"idempotency_key":"k%d"}`, host, i, i%10, i))
		}
		created := decode[batchJSON](t, want(t, e.do("POST", "/v1/queues/f/tasks", `{"tasks":[`+strings.Join(items, ",")+`]}`), http.StatusCreated))

		// follow lists every page of a query and counts the pages.
		follow := func(query string) (ids []string, pages int) {
			cursor := ""
			for pages = 1; pages < 100; pages++ {
				l := decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/f/tasks?"+query+"&cursor="+cursor, ""), http.StatusOK))
				for _, tk := range l.Tasks {
					ids = append(ids, tk.ID)
				}
				if l.NextCursor == "" {
					return ids, pages
				}
				cursor = l.NextCursor
			}
			t.Fatalf("%s: paging does not end", query)
			return nil, 0
		}
		ids, _ := follow("priority=3&limit=100")
		if len(ids) != 4 || ids[0] != created.Tasks[3].ID {
			t.Errorf("priority=3: %v", ids)
		}
		ids, _ = follow("target_host=b.EXAMPLE&priority=3")
		if len(ids) != 4 {
			t.Errorf("target_host=b.EXAMPLE&priority=3: %d tasks, want 4", len(ids))
		}
		ids, _ = follow("target_host=a.example&priority=3")
		if len(ids) != 0 {
			t.Errorf("target_host=a.example&priority=3: %d tasks, want 0", len(ids))
		}
		ids, _ = follow("idempotency_key=k17")
		if len(ids) != 1 || ids[0] != created.Tasks[17].ID {
			t.Errorf("idempotency_key=k17: %v", ids)
		}
		first, err := time.Parse(time.RFC3339Nano, created.Tasks[0].CreatedAt)
		if err != nil {
			t.Fatal(err)
		}
		ids, _ = follow("created_after=" + first.Add(-time.Second).UTC().Format(time.RFC3339) + "&created_before=2999-01-01T00:00:00Z")
		if len(ids) != 40 {
			t.Errorf("created range around the batch (from %v): %d tasks, want 40", first, len(ids))
		}
		ids, _ = follow("created_before=2000-01-01T00:00:00Z")
		if len(ids) != 0 {
			t.Errorf("created_before=2000: %d tasks", len(ids))
		}
		ids, _ = follow("run_after=2000-01-01T00:00:00Z&run_before=2999-01-01T00:00:00%2B02:00")
		if len(ids) != 40 {
			t.Errorf("run range: %d tasks, want 40", len(ids))
		}
		// A page of 1 scans 10 tasks: priority 9 (tasks 9, 19, 29, 39)
		// comes in pages, the scans between them bounded.
		ids, pages := follow("priority=9&limit=1")
		if len(ids) != 4 || pages < 4 {
			t.Errorf("priority=9&limit=1: %d tasks in %d pages", len(ids), pages)
		}
		l := decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/f/tasks?priority=0&limit=1&cursor="+encodeCursor(created.Tasks[0].ID), ""), http.StatusOK))
		if len(l.Tasks) != 1 || l.Tasks[0].ID != created.Tasks[10].ID {
			t.Errorf("priority=0 after task 0: %+v", l)
		}
		l = decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/f/tasks?priority=0&target_host=b.example&limit=1&cursor="+encodeCursor(created.Tasks[0].ID), ""), http.StatusOK))
		if len(l.Tasks) != 0 || l.NextCursor != encodeCursor(created.Tasks[10].ID) {
			t.Errorf("an empty scanned page: %d tasks, cursor %q; want none, continuing after task 10", len(l.Tasks), l.NextCursor)
		}
		// An unknown queue is still 404 with filters.
		wantProblem(t, e.do("GET", "/v1/queues/nope/tasks?priority=1", ""), http.StatusNotFound, "nope")

		for q, field := range map[string]string{
			"priority=10": "priority", "priority=x": "priority", "priority=-1": "priority",
			"target_host=": "target_host", "target_host=http://a/": "target_host", "target_host=a:80": "target_host",
			"idempotency_key=": "idempotency_key", "idempotency_key=%01": "idempotency_key",
			"created_after=yesterday": "created_after", "created_before=2026-01-01": "created_before",
			"run_after=1": "run_after", "run_before=x": "run_before",
			"created_after=2026-01-02T00:00:00Z&created_before=2026-01-01T00:00:00Z": "created_before",
			"run_after=2026-01-02T00:00:00Z&run_before=2026-01-02T00:00:00Z":         "run_before",
		} {
			wantField(t, e.do("GET", "/v1/queues/f/tasks?"+q, ""), field)
		}
		want(t, e.do("GET", "/v1/queues/f/tasks?target_host=[::1]", ""), http.StatusOK)
	})
}

// TestBulk: bulk cancel and retry by ids (a result per id, wrong states
// and strangers reported, not failed), by state in a loop until more is
// false, and the bodies refused.
func TestBulk(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		var items []string
		for i := range 12 {
			items = append(items, fmt.Sprintf(`{"target":{"url":"http://h/%d"}}`, i))
		}
		created := decode[batchJSON](t, want(t, e.do("POST", "/v1/queues/b/tasks", `{"tasks":[`+strings.Join(items, ",")+`]}`), http.StatusCreated)).Tasks
		stranger := e.enqueueOne("other", `{"target":{"url":"http://h/"}}`)
		const missing = "01890a5d-ac96-774b-bcce-b302099a8057"

		// Cancel 0..7 by ids, with a stranger and an unknown id.
		body := `{"ids":[`
		for _, tk := range created[:8] {
			body += `"` + tk.ID + `",`
		}
		body += `"` + stranger.ID + `","` + strings.ToUpper(missing) + `"]}`
		r := decode[bulkJSON](t, want(t, e.do("POST", "/v1/queues/b/tasks/cancel", body), http.StatusOK))
		if r.Count != 8 || len(r.Results) != 10 || r.More || r.NextCursor != "" {
			t.Fatalf("bulk cancel: %+v", r)
		}
		for i, res := range r.Results[:8] {
			if res.ID != created[i].ID || res.State != string(task.Cancelled) || res.Error != nil {
				t.Errorf("result %d: %+v", i, res)
			}
		}
		for _, res := range r.Results[8:] {
			if res.State != "" || res.Error == nil || res.Error.Status != http.StatusNotFound || !strings.Contains(res.Error.Detail, "queue \"b\"") {
				t.Errorf("stranger or unknown: %+v", res)
			}
		}
		// Again: 409 per id, naming the state.
		r = decode[bulkJSON](t, want(t, e.do("POST", "/v1/queues/b/tasks/cancel", `{"ids":["`+created[0].ID+`"]}`), http.StatusOK))
		if r.Count != 0 || r.Results[0].Error == nil || r.Results[0].Error.Status != http.StatusConflict ||
			r.Results[0].State != "cancelled" || !strings.Contains(r.Results[0].Error.Detail, "cancelled") {
			t.Errorf("cancel a cancelled task: %+v", r)
		}

		// Retry every cancelled task, three per request, until done.
		moved, cursor := 0, ""
		for call := 0; ; call++ {
			if call > 5 {
				t.Fatal("the sweep does not end")
			}
			b := `{"state":"cancelled","limit":3`
			if cursor != "" {
				b += `,"cursor":"` + cursor + `"`
			}
			r = decode[bulkJSON](t, want(t, e.do("POST", "/v1/queues/b/tasks/retry", b+"}"), http.StatusOK))
			moved += r.Count
			if r.Results != nil {
				t.Errorf("a sweep answered results: %+v", r)
			}
			if !r.More {
				if r.NextCursor != "" {
					t.Errorf("no more but a cursor: %+v", r)
				}
				break
			}
			cursor = r.NextCursor
		}
		if moved != 8 {
			t.Errorf("the sweep retried %d, want 8", moved)
		}
		q := decode[queueJSON](t, want(t, e.do("GET", "/v1/queues/b", ""), http.StatusOK))
		if q.Counts[task.Available] != 12 || q.Counts[task.Cancelled] != 0 {
			t.Errorf("counts after the sweep: %v", q.Counts)
		}
		// Cancel every available task in one request.
		r = decode[bulkJSON](t, want(t, e.do("POST", "/v1/queues/b/tasks/cancel", `{"state":"available"}`), http.StatusOK))
		if r.Count != 12 || r.More {
			t.Errorf("cancel every available: %+v", r)
		}
		// An unknown queue: 404, by ids or by state.
		wantProblem(t, e.do("POST", "/v1/queues/nope/tasks/retry", `{"state":"failed"}`), http.StatusNotFound, "nope")
		wantProblem(t, e.do("POST", "/v1/queues/nope/tasks/retry", `{"ids":["`+missing+`"]}`), http.StatusNotFound, "nope")

		many := make([]string, store.MaxBulk+1)
		for i := range many {
			many[i] = fmt.Sprintf(`"01890a5d-ac96-774b-bcce-%012x"`, i)
		}
		for b, field := range map[string]string{
			`{}`:            "ids",
			`{"ids":[]}`:    "ids",
			`{"ids":"x"}`:   "ids",
			`{"ids":["x"]}`: "ids[0]",
			`{"ids":[1]}`:   "ids[0]",
			`{"ids":["` + missing + `","` + missing + `"]}`: "ids[1]",
			`{"ids":[` + strings.Join(many, ",") + `]}`:     "ids",
			`{"ids":["` + missing + `"],"state":"failed"}`:  "state",
			`{"ids":["` + missing + `"],"limit":5}`:         "ids",
			`{"state":"succeeded"}`:                         "state",
			`{"state":"available"}`:                         "state",
			`{"state":"failed","limit":0}`:                  "limit",
			`{"state":"failed","cursor":"!!"}`:              "cursor",
			`{"state":"failed","extra":1}`:                  "extra",
			`[]`:                                            "",
		} {
			wantField(t, e.do("POST", "/v1/queues/b/tasks/retry", b), field)
		}
		wantField(t, e.do("POST", "/v1/queues/b/tasks/cancel", `{"state":"failed"}`), "state")
	})
}

// FuzzBulkBody sends arbitrary bodies to the bulk routes on the real
// SQLite store: never a 5xx; a refusal is a 400 or 422 problem; an answer
// has a result per id given, and never changes more than MaxBulk tasks.
func FuzzBulkBody(f *testing.F) {
	for _, s := range []string{
		`{"ids":["01890a5d-ac96-774b-bcce-b302099a8057"]}`, `{"ids":[]}`, `{"ids":null}`, `{"ids":["x"]}`,
		`{"state":"failed"}`, `{"state":"available","limit":1}`, `{"state":"failed","cursor":"` + encodeCursor("01890a5d-ac96-774b-bcce-b302099a8057") + `"}`,
		`{"state":"failed","limit":1001}`, `{"ids":["01890a5d-ac96-774b-bcce-b302099a8057"],"state":"failed"}`, `[]`, `null`, `{`, `{"ids":[1,2]}`,
		`{"state":"failed","state":"cancelled"}`, `{"ids":["01890A5D-AC96-774B-BCCE-B302099A8057","01890a5d-ac96-774b-bcce-b302099a8057"]}`,
	} {
		f.Add(s)
	}
	st := openFuzzSQLite(f)
	h, err := New(Config{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	seedQueue(f, st)
	f.Fuzz(func(t *testing.T, body string) {
		for _, op := range []string{"cancel", "retry"} {
			req := httptest.NewRequest("POST", "/v1/queues/q/tasks/"+op, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusOK:
				var r bulkJSON
				if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
					t.Fatalf("%s %s: 200 with an unreadable body: %v", op, body, err)
				}
				if r.Count > store.MaxBulk || len(r.Results) > store.MaxBulk || r.Count < 0 {
					t.Fatalf("%s %s: %+v", op, body, r)
				}
			case http.StatusBadRequest, http.StatusUnprocessableEntity:
				if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("%s %s: %d as %q", op, body, rec.Code, ct)
				}
			default:
				t.Fatalf("%s %s: status %d: %s", op, body, rec.Code, rec.Body)
			}
		}
	})
}
