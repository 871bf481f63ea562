package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestOpenAPIRoutes walks the routes and the document both ways: every
// registered route is documented, every documented operation is registered
// and served by the mux under that pattern, and path parameters agree.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	d := loadOpenAPI(t)
	e := newEnv(t, openSQLite(t))

	registered := map[string]bool{}
	for _, rt := range routes() {
		method, path, ok := strings.Cut(rt.pattern, " ")
		if !ok {
			t.Fatalf("pattern %q has no method", rt.pattern)
		}
		registered[rt.pattern] = true
		op, ok := d.operation(method, path)
		if !ok {
			t.Errorf("route %s is not in openapi.json", rt.pattern)
			continue
		}
		// The mux serves this pattern for a concrete request.
		concrete := concretePath(path)
		if _, got := e.srv.mux.Handler(httptest.NewRequest(method, concrete, nil)); got != rt.pattern {
			t.Errorf("mux serves %s %s with %q, want %q", method, concrete, got, rt.pattern)
		}
		// Path parameters: those in the template are documented (on the
		// path item or the operation), and no others.
		inPath := regexp.MustCompile(`\{([a-z]+)\}`).FindAllStringSubmatch(path, -1)
		var want []string
		for _, m := range inPath {
			want = append(want, m[1])
		}
		var documented []string
		item := d.root["paths"].(map[string]any)[path].(map[string]any)
		for _, src := range []any{item["parameters"], op["parameters"]} {
			ps, _ := src.([]any)
			for _, p := range ps {
				pm, err := d.deref(p.(map[string]any))
				if err != nil {
					t.Fatal(err)
				}
				if pm["in"] == "path" {
					documented = append(documented, pm["name"].(string))
					if pm["required"] != true {
						t.Errorf("%s: path parameter %v is not required", rt.pattern, pm["name"])
					}
				}
			}
		}
		sort.Strings(want)
		sort.Strings(documented)
		if !slices.Equal(want, documented) {
			t.Errorf("%s: path parameters %v, documented %v", rt.pattern, want, documented)
		}
		// The role a route needs is documented as x-spool-role.
		if role, _ := op["x-spool-role"].(string); rt.role != auth.None && role != rt.role.String() {
			t.Errorf("%s: needs role %s in code, x-spool-role %q in the document", rt.pattern, rt.role, role)
		} else if rt.role == auth.None && role != "" {
			t.Errorf("%s: public, but documents x-spool-role %q", rt.pattern, role)
		}
		// Public routes are exactly those documented without security.
		sec, hasSec := op["security"].([]any)
		if public := hasSec && len(sec) == 0; public != (rt.role == auth.None) {
			t.Errorf("%s: public=%v in code, %v in the document", rt.pattern, rt.role == auth.None, public)
		}
	}
	for path, item := range d.root["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			pattern := strings.ToUpper(method) + " " + path
			if !registered[pattern] {
				t.Errorf("openapi.json documents %s, which is not registered", pattern)
			}
			// And the mux really routes it.
			concrete := concretePath(path)
			if _, got := e.srv.mux.Handler(httptest.NewRequest(strings.ToUpper(method), concrete, nil)); got != pattern {
				t.Errorf("documented %s is served by %q", pattern, got)
			}
		}
	}
}

// documentedStatuses lists "METHOD /path status" for every response in the
// document.
func documentedStatuses(d *openAPIDocument) []string {
	var out []string
	for path, item := range d.root["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			for status := range op.(map[string]any)["responses"].(map[string]any) {
				out = append(out, strings.ToUpper(method)+" "+path+" "+status)
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIResponses exercises every documented status of every
// operation, on each store, and checks each response against its schema
// (testEnv.do does that for every request of every test). At the end every
// documented (operation, status) must have been produced at least once, so
// the document cannot promise a response the code never gives.
func TestOpenAPIResponses(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st, func(c *Config) { c.MaxBodyBytes = 2048 })
		unavailable := newEnv(t, faultStore{Store: st, err: store.ErrUnavailable})
		broken := newEnv(t, faultStore{Store: st, err: errors.New("disk on fire")})
		const missing = "01890a5d-ac96-774b-bcce-b302099a8057"
		valid := `{"target":{"url":"http://h/"}}`
		big := `{"target":{"url":"http://h/"},"payload":"` + strings.Repeat("x", 3000) + `"}`
		noAuth := []string{"Authorization", ""}
		reader := []string{"Authorization", "Bearer " + readerKey}

		// enqueue
		tk := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", valid, "Idempotency-Key", "cov"), 201))
		want(t, e.do("POST", "/v1/queues/q/tasks", valid, "Idempotency-Key", "cov"), 200)
		want(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[`+valid+`,`+valid+`]}`), 201)
		want(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[{"target":{"url":"http://h/"},"idempotency_key":"cov"}]}`), 200)
		want(t, e.do("POST", "/v1/queues/q/tasks", `{`), 400)
		want(t, e.do("POST", "/v1/queues/q/tasks", valid, noAuth...), 401)
		want(t, e.do("POST", "/v1/queues/q/tasks", valid, reader...), 403)
		want(t, e.do("POST", "/v1/queues/q/tasks", big), 413)
		want(t, e.do("POST", "/v1/queues/q/tasks", valid, "Content-Type", "text/plain"), 415)
		want(t, e.do("POST", "/v1/queues/q/tasks", `{}`), 422)
		gone := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", valid, "Idempotency-Key", "gone"), 201))
		want(t, e.do("POST", "/v1/tasks/"+gone.ID+"/cancel", ""), 200)
		time.Sleep(2 * time.Millisecond) // finished before the prune's now
		if n, err := st.Prune(t.Context(), 0, 1000); err != nil || n != 1 {
			t.Fatalf("Prune = %d, %v; want 1", n, err)
		}
		want(t, e.do("POST", "/v1/queues/q/tasks", valid, "Idempotency-Key", "gone"), 409) // pruned, still reserved
		// list tasks
		want(t, e.do("GET", "/v1/queues/q/tasks?limit=1", ""), 200)
		want(t, e.do("GET", "/v1/queues/q/tasks?cursor=%", ""), 400)
		want(t, e.do("GET", "/v1/queues/q/tasks", "", noAuth...), 401)
		want(t, e.do("GET", "/v1/queues/q/tasks?view=full", "", reader...), 403)
		want(t, e.do("GET", "/v1/queues/none/tasks", ""), 404)
		want(t, e.do("GET", "/v1/queues/q/tasks?limit=0", ""), 422)
		want(t, e.do("GET", "/v1/queues/q/tasks?priority=5&target_host=h&created_after=2020-01-01T00:00:00Z&run_before=2999-01-01T00:00:00Z", ""), 200)
		want(t, e.do("GET", "/v1/queues/q/tasks?priority=10", ""), 422)
		// bulk cancel, retry
		for _, op := range []string{"cancel", "retry"} {
			path := "/v1/queues/q/tasks/" + op
			ids := `{"ids":["` + tk.ID + `","` + missing + `"]}`
			want(t, e.do("POST", path, ids), 200)
			want(t, e.do("POST", path, `{"state":"`+map[string]string{"cancel": "available", "retry": "failed"}[op]+`","limit":10}`), 200)
			want(t, e.do("POST", path, `{`), 400)
			want(t, e.do("POST", path, ids, noAuth...), 401)
			want(t, e.do("POST", path, ids, reader...), 403)
			want(t, e.do("POST", "/v1/queues/none/tasks/"+op, ids), 404)
			want(t, e.do("POST", path, `{"ids":["`+tk.ID+`"],"x":"`+strings.Repeat("x", 3000)+`"}`), 413)
			want(t, e.do("POST", path, ids, "Content-Type", "text/plain"), 415)
			want(t, e.do("POST", path, `{}`), 422)
		}
		// get task
		want(t, e.do("GET", "/v1/tasks/"+tk.ID, ""), 200)
		want(t, e.do("GET", "/v1/tasks/"+tk.ID, "", noAuth...), 401)
		want(t, e.do("GET", "/v1/tasks/"+tk.ID+"?view=full", "", reader...), 403)
		want(t, e.do("GET", "/v1/tasks/"+missing, ""), 404)
		want(t, e.do("GET", "/v1/tasks/"+tk.ID+"?view=all", ""), 422)
		// attempts (a task with a history is in attempts_test.go)
		want(t, e.do("GET", "/v1/tasks/"+tk.ID+"/attempts", ""), 200)
		want(t, e.do("GET", "/v1/tasks/"+tk.ID+"/attempts", "", noAuth...), 401)
		want(t, e.do("GET", "/v1/tasks/"+missing+"/attempts", ""), 404)
		// cancel, retry
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/cancel", ""), 200)
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/cancel", ""), 409)
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/cancel", "", noAuth...), 401)
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/cancel", "", reader...), 403)
		want(t, e.do("POST", "/v1/tasks/"+missing+"/cancel", ""), 404)
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/retry", ""), 200)
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/retry", ""), 409)
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/retry", "", noAuth...), 401)
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/retry", "", reader...), 403)
		want(t, e.do("POST", "/v1/tasks/"+missing+"/retry", ""), 404)
		// queues
		want(t, e.do("GET", "/v1/queues", ""), 200)
		want(t, e.do("GET", "/v1/queues", "", noAuth...), 401)
		want(t, e.do("GET", "/v1/queues/q", ""), 200)
		want(t, e.do("GET", "/v1/queues/q", "", noAuth...), 401)
		want(t, e.do("GET", "/v1/queues/none", ""), 404)
		want(t, e.do("PATCH", "/v1/queues/q", `{"concurrency":3}`), 200)
		want(t, e.do("PATCH", "/v1/queues/q", `{"concurrency":3`), 400)
		want(t, e.do("PATCH", "/v1/queues/q", `{"concurrency":3}`, noAuth...), 401)
		want(t, e.do("PATCH", "/v1/queues/q", `{"concurrency":3}`, reader...), 403)
		want(t, e.do("PATCH", "/v1/queues/q", `{"paused":true,"x":"`+strings.Repeat("x", 3000)+`"}`), 413)
		want(t, e.do("PATCH", "/v1/queues/q", `{"concurrency":3}`, "Content-Type", "text/plain"), 415)
		want(t, e.do("PATCH", "/v1/queues/q", `{}`), 422)
		for _, op := range []string{"pause", "resume"} {
			want(t, e.do("POST", "/v1/queues/q/"+op, ""), 200)
			want(t, e.do("POST", "/v1/queues/q/"+op, "", noAuth...), 401)
			want(t, e.do("POST", "/v1/queues/q/"+op, "", reader...), 403)
			want(t, e.do("POST", "/v1/queues/-q/"+op, ""), 422)
		}
		// destinations
		want(t, e.do("GET", "/v1/destinations", ""), 200)
		want(t, e.do("GET", "/v1/destinations", "", noAuth...), 401)
		want(t, e.do("PATCH", "/v1/destinations/"+testDestination, `{"max_concurrency":3}`), 200)
		want(t, e.do("PATCH", "/v1/destinations/ftp%3A%2F%2Fh", `{"max_concurrency":3}`), 400)
		want(t, e.do("PATCH", "/v1/destinations/"+testDestination, `{"max_concurrency":3}`, noAuth...), 401)
		want(t, e.do("PATCH", "/v1/destinations/"+testDestination, `{"max_concurrency":3}`, reader...), 403)
		want(t, e.do("PATCH", "/v1/destinations/"+testDestination, `{"rate_limit":1,"x":"`+strings.Repeat("x", 3000)+`"}`), 413)
		want(t, e.do("PATCH", "/v1/destinations/"+testDestination, `{"max_concurrency":3}`, "Content-Type", "text/plain"), 415)
		want(t, e.do("PATCH", "/v1/destinations/"+testDestination, `{}`), 422)
		want(t, e.do("GET", "/v1/destinations/"+testDestination, ""), 200)
		want(t, e.do("GET", "/v1/destinations/not-a-destination", ""), 400)
		want(t, e.do("GET", "/v1/destinations/"+testDestination, "", noAuth...), 401)
		want(t, e.do("GET", "/v1/destinations/http%3A%2F%2Fnone.example", ""), 404)
		// schedules
		sched := `{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"},"payload":{"n":1}}}`
		fileSched := schedule.Schedule{Name: "from-file", Spec: schedule.Spec{Every: time.Minute}, Queue: "q",
			Task: schedule.Template{Target: task.Target{URL: "http://h/"}}, Source: schedule.SourceFile}
		if _, _, err := st.PutSchedule(context.Background(), fileSched); err != nil {
			t.Fatal(err)
		}
		want(t, e.do("PUT", "/v1/schedules/s", sched), 201)
		want(t, e.do("PUT", "/v1/schedules/s", sched), 200)
		want(t, e.do("PUT", "/v1/schedules/s", `{`), 400)
		want(t, e.do("PUT", "/v1/schedules/s", sched, noAuth...), 401)
		want(t, e.do("PUT", "/v1/schedules/s", sched, reader...), 403)
		want(t, e.do("PUT", "/v1/schedules/from-file", sched), 409)
		want(t, e.do("PUT", "/v1/schedules/s", big), 413)
		want(t, e.do("PUT", "/v1/schedules/s", sched, "Content-Type", "text/plain"), 415)
		want(t, e.do("PUT", "/v1/schedules/s", `{"cron":"61 * * * *","queue":"q","task":{"target":{"url":"http://h/"}}}`), 422)
		want(t, e.do("GET", "/v1/schedules?limit=1", ""), 200)
		want(t, e.do("GET", "/v1/schedules", "", noAuth...), 401)
		want(t, e.do("GET", "/v1/schedules?limit=0", ""), 422)
		want(t, e.do("GET", "/v1/schedules/s", ""), 200)
		want(t, e.do("GET", "/v1/schedules/s", "", noAuth...), 401)
		want(t, e.do("GET", "/v1/schedules/none", ""), 404)
		want(t, e.do("POST", "/v1/schedules/s/trigger", ""), 201)
		want(t, e.do("POST", "/v1/schedules/s/trigger", "", noAuth...), 401)
		want(t, e.do("POST", "/v1/schedules/s/trigger", "", reader...), 403)
		want(t, e.do("POST", "/v1/schedules/none/trigger", ""), 404)
		for _, op := range []string{"pause", "resume"} {
			want(t, e.do("POST", "/v1/schedules/s/"+op, ""), 200)
			want(t, e.do("POST", "/v1/schedules/s/"+op, "", noAuth...), 401)
			want(t, e.do("POST", "/v1/schedules/s/"+op, "", reader...), 403)
			want(t, e.do("POST", "/v1/schedules/none/"+op, ""), 404)
			want(t, e.do("POST", "/v1/schedules/from-file/"+op, ""), 409)
		}
		want(t, e.do("DELETE", "/v1/schedules/s", ""), 200)
		want(t, e.do("DELETE", "/v1/schedules/s", "", noAuth...), 401)
		want(t, e.do("DELETE", "/v1/schedules/s", "", reader...), 403)
		want(t, e.do("DELETE", "/v1/schedules/s", ""), 404)
		want(t, e.do("DELETE", "/v1/schedules/from-file", ""), 409)
		// health and the document
		want(t, e.do("GET", "/livez", "", noAuth...), 200)
		want(t, e.do("GET", "/readyz", "", noAuth...), 200)
		want(t, unavailable.do("GET", "/readyz", "", noAuth...), 503)
		want(t, e.do("GET", "/openapi.json", "", noAuth...), 200)
		// 500 and 503 on every route that reaches the store.
		for _, rq := range storeRequests() {
			want(t, unavailable.do(rq[0], rq[1], rq[2]), 503)
			want(t, broken.do(rq[0], rq[1], rq[2]), 500)
		}

		seen := map[string]bool{}
		for _, env := range []*testEnv{e, unavailable, broken} {
			env.mu.Lock()
			for k := range env.seen {
				seen[k] = true
			}
			env.mu.Unlock()
		}
		for _, s := range documentedStatuses(e.doc) {
			if !seen[s] {
				t.Errorf("documented but never produced: %s", s)
			}
		}
		if t.Failed() {
			var got []string
			for k := range seen {
				got = append(got, k)
			}
			sort.Strings(got)
			t.Logf("produced:\n%s", strings.Join(got, "\n"))
		}
	})
}

// TestOpenAPIDocument checks the document's frame: version, a unique
// operationId per operation, and a problem schema for every error status.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	d := loadOpenAPI(t)
	if d.root["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v", d.root["openapi"])
	}
	ids := map[string]string{}
	for _, s := range documentedStatuses(d) {
		parts := strings.Fields(s)
		method, path, status := parts[0], parts[1], parts[2]
		op, _ := d.operation(method, path)
		id, _ := op["operationId"].(string)
		if id == "" {
			t.Errorf("%s %s has no operationId", method, path)
		} else if prev, dup := ids[id]; dup && prev != method+" "+path {
			t.Errorf("operationId %s is used by %s and %s %s", id, prev, method, path)
		}
		ids[id] = method + " " + path
		if status[0] == '4' || status[0] == '5' {
			var code int
			fmt.Sscan(status, &code)
			if _, err := d.responseSchema(method, path, code, "application/problem+json"); err != nil {
				t.Errorf("error response without a problem schema: %v", err)
			}
		}
	}
	if _, ok := d.operation(http.MethodGet, "/livez"); !ok {
		t.Error("no /livez")
	}
}
