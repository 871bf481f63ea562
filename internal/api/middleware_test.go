package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// faultStore wraps a real store and makes the calls the API uses fail (or
// panic) on demand: the way to reach the 500 and 503 paths without
// breaking a database that other tests share.
type faultStore struct {
	store.Store
	err   error
	panic any
}

func (f faultStore) fail() error {
	if f.panic != nil {
		panic(f.panic)
	}
	return f.err
}

func (f faultStore) Ping(context.Context) error { return f.fail() }
func (f faultStore) Enqueue(context.Context, []store.NewTask) ([]store.Enqueued, error) {
	return nil, f.fail()
}
func (f faultStore) GetTask(context.Context, string) (task.Task, error) { return task.Task{}, f.fail() }
func (f faultStore) ListTasks(context.Context, store.ListParams) (store.TaskPage, error) {
	return store.TaskPage{}, f.fail()
}
func (f faultStore) CancelTasks(context.Context, string, []string) ([]store.BulkResult, error) {
	return nil, f.fail()
}
func (f faultStore) RetryTasks(context.Context, string, []string) ([]store.BulkResult, error) {
	return nil, f.fail()
}
func (f faultStore) CancelState(context.Context, store.SweepParams) (store.Sweep, error) {
	return store.Sweep{}, f.fail()
}
func (f faultStore) RetryState(context.Context, store.SweepParams) (store.Sweep, error) {
	return store.Sweep{}, f.fail()
}
func (f faultStore) ListAttempts(context.Context, string) ([]task.Attempt, error) {
	return nil, f.fail()
}
func (f faultStore) CancelTask(context.Context, string) (task.Task, error) {
	return task.Task{}, f.fail()
}
func (f faultStore) RetryTask(context.Context, string) (task.Task, error) {
	return task.Task{}, f.fail()
}
func (f faultStore) GetQueue(context.Context, string) (task.Queue, error) {
	return task.Queue{}, f.fail()
}
func (f faultStore) ListQueues(context.Context) ([]task.Queue, error) { return nil, f.fail() }
func (f faultStore) UpdateQueue(context.Context, string, task.QueuePatch) (task.Queue, error) {
	return task.Queue{}, f.fail()
}

func (f faultStore) PutSchedule(context.Context, schedule.Schedule) (schedule.Schedule, bool, error) {
	return schedule.Schedule{}, false, f.fail()
}
func (f faultStore) GetSchedule(context.Context, string) (schedule.Schedule, error) {
	return schedule.Schedule{}, f.fail()
}
func (f faultStore) ListSchedules(context.Context, store.ScheduleListParams) ([]schedule.Schedule, error) {
	return nil, f.fail()
}
func (f faultStore) DeleteSchedule(context.Context, string, schedule.Source) error { return f.fail() }
func (f faultStore) SetSchedulePaused(context.Context, string, bool, schedule.Source) (schedule.Schedule, error) {
	return schedule.Schedule{}, f.fail()
}

func (f faultStore) ListDestinations(context.Context, time.Duration) ([]task.Destination, error) {
	return nil, f.fail()
}
func (f faultStore) GetDestination(context.Context, string, time.Duration) (task.Destination, error) {
	return task.Destination{}, f.fail()
}
func (f faultStore) UpdateDestination(context.Context, string, task.DestinationPatch, time.Duration) (task.Destination, error) {
	return task.Destination{}, f.fail()
}

// storeRequests reach the store on every /v1 route.
func storeRequests() [][3]string {
	const id = "01890a5d-ac96-774b-bcce-b302099a8057"
	return [][3]string{
		{"POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"}}`},
		{"GET", "/v1/queues/q/tasks", ""},
		{"POST", "/v1/queues/q/tasks/cancel", `{"ids":["` + id + `"]}`},
		{"POST", "/v1/queues/q/tasks/retry", `{"state":"failed"}`},
		{"GET", "/v1/tasks/" + id, ""},
		{"GET", "/v1/tasks/" + id + "/attempts", ""},
		{"POST", "/v1/tasks/" + id + "/cancel", ""},
		{"POST", "/v1/tasks/" + id + "/retry", ""},
		{"GET", "/v1/queues", ""},
		{"GET", "/v1/queues/q", ""},
		{"PATCH", "/v1/queues/q", `{"paused":true}`},
		{"POST", "/v1/queues/q/pause", ""},
		{"POST", "/v1/queues/q/resume", ""},
		{"GET", "/v1/destinations", ""},
		{"GET", "/v1/destinations/" + testDestination, ""},
		{"PATCH", "/v1/destinations/" + testDestination, `{"max_concurrency":4}`},
		{"GET", "/v1/schedules", ""},
		{"PUT", "/v1/schedules/s", `{"every":"1m","queue":"q","task":{"target":{"url":"http://h/"}}}`},
		{"GET", "/v1/schedules/s", ""},
		{"DELETE", "/v1/schedules/s", ""},
		{"POST", "/v1/schedules/s/trigger", ""},
		{"POST", "/v1/schedules/s/pause", ""},
		{"POST", "/v1/schedules/s/resume", ""},
	}
}

const secret = "postgres://spool:hunter2@10.1.2.3/spool"

func TestStoreFailures(t *testing.T) {
	t.Parallel()
	base := openSQLite(t)
	for _, c := range []struct {
		name   string
		fs     faultStore
		code   int
		detail string
	}{
		{"unavailable", faultStore{err: fmt.Errorf("dial %s: %w", secret, store.ErrUnavailable)}, 503, "unavailable"},
		{"internal", faultStore{err: errors.New("syntax error near " + secret)}, 500, "request id"},
		{"panic", faultStore{panic: "boom " + secret}, 500, "request id"},
		{"deadline", faultStore{err: fmt.Errorf("query %s: %w", secret, context.DeadlineExceeded)}, 503, "unavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fs.Store = base
			e := newEnv(t, c.fs)
			for _, rq := range storeRequests() {
				r := e.do(rq[0], rq[1], rq[2])
				p := wantProblem(t, r, c.code, c.detail)
				if strings.Contains(string(r.Body), "hunter2") || strings.Contains(string(r.Body), "10.1.2.3") {
					t.Errorf("%s %s: internal error leaked: %s", rq[0], rq[1], r.Body)
				}
				if c.code == 503 && r.Header.Get("Retry-After") == "" {
					t.Errorf("%s %s: 503 without Retry-After", rq[0], rq[1])
				}
				if c.code == 500 && !strings.Contains(p.Detail, r.Header.Get(requestIDHeader)) {
					t.Errorf("500 detail %q does not give the request id", p.Detail)
				}
			}
			// The operator gets the real error in the log.
			if !strings.Contains(e.logs.String(), "hunter2") {
				t.Errorf("the cause is not logged:\n%s", e.logs.String())
			}
			if c.name == "panic" && !strings.Contains(e.logs.String(), "panic serving request") {
				t.Error("the panic is not logged")
			}
		})
	}
}

// TestAbortHandler: http.ErrAbortHandler is not turned into a 500; it keeps
// aborting the response as net/http defines.
func TestAbortHandler(t *testing.T) {
	t.Parallel()
	e := newEnv(t, faultStore{Store: openSQLite(t), panic: http.ErrAbortHandler})
	defer func() {
		if p := recover(); p != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", p)
		}
	}()
	e.srv.ServeHTTP(httptest.NewRecorder(), e.newReq("GET", "/v1/queues", ""))
	t.Error("ServeHTTP returned")
}

func TestHealth(t *testing.T) {
	t.Parallel()
	base := openSQLite(t)

	e := newEnv(t, base)
	r := want(t, e.do("GET", "/livez", "", "Authorization", ""), http.StatusOK)
	if s := decode[statusJSON](t, r); s.Status != "ok" || s.Version != "v-test" {
		t.Errorf("livez = %s", r.Body)
	}
	want(t, e.do("GET", "/readyz", "", "Authorization", ""), http.StatusOK)
	want(t, e.do("HEAD", "/livez", "", "Authorization", ""), http.StatusOK)

	// Liveness ignores the store; readiness does not.
	down := newEnv(t, faultStore{Store: base, err: fmt.Errorf("ping %s: %w", secret, store.ErrUnavailable)})
	want(t, down.do("GET", "/livez", ""), http.StatusOK)
	r = down.do("GET", "/readyz", "")
	wantProblem(t, r, http.StatusServiceUnavailable, "store is unreachable")
	if r.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	if strings.Contains(string(r.Body), "hunter2") {
		t.Errorf("readyz leaks: %s", r.Body)
	}

	for _, c := range []struct {
		ready  func(context.Context) error
		detail string
	}{
		{func(context.Context) error { return fmt.Errorf("drain: %w", ErrShuttingDown) }, "shutting down"},
		{func(context.Context) error { return errors.New("dial " + secret) }, "not ready"},
		{func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }, "timed out"},
	} {
		e := newEnv(t, base, func(cfg *Config) { cfg.Ready = c.ready })
		start := time.Now()
		r := e.do("GET", "/readyz", "")
		p := wantProblem(t, r, http.StatusServiceUnavailable, c.detail)
		if strings.Contains(p.Detail, "hunter2") {
			t.Errorf("readyz leaks: %s", p.Detail)
		}
		if d := time.Since(start); d > readyTimeout+time.Second {
			t.Errorf("readyz took %s", d)
		}
	}
	ok := newEnv(t, faultStore{Store: base, err: store.ErrUnavailable}, func(cfg *Config) { cfg.Ready = func(context.Context) error { return nil } })
	want(t, ok.do("GET", "/readyz", ""), http.StatusOK)

	// The document is served as embedded, without auth.
	r = want(t, e.do("GET", "/openapi.json", "", "Authorization", ""), http.StatusOK)
	if string(r.Body) != openAPIDoc || r.Header.Get("Content-Type") != "application/json" {
		t.Error("/openapi.json does not serve the embedded document")
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, openSQLite(t))
	if got := e.do("GET", "/livez", "", requestIDHeader, "trace-abc_123").Header.Get(requestIDHeader); got != "trace-abc_123" {
		t.Errorf("incoming id not echoed: %q", got)
	}
	a := e.do("GET", "/livez", "").Header.Get(requestIDHeader)
	b := e.do("GET", "/nope", "").Header.Get(requestIDHeader)
	c := e.do("GET", "/livez", "", requestIDHeader, "bad id\twith tab").Header.Get(requestIDHeader)
	d := e.do("GET", "/livez", "", requestIDHeader, strings.Repeat("x", 129)).Header.Get(requestIDHeader)
	for _, id := range []string{a, b, c, d} {
		if len(id) != 32 {
			t.Errorf("generated id %q is not 32 hex digits", id)
		}
	}
	if a == b || b == c || c == d {
		t.Error("generated ids repeat")
	}
	if !strings.Contains(e.logs.String(), `"http.request.id":"trace-abc_123"`) {
		t.Error("the request id is not logged")
	}
}

// logLine finds the request log line for method and route.
func logLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Text())
		}
		if m["msg"] == "http request" {
			out = append(out, m)
		}
	}
	return out
}

func TestLoggingAndInstrument(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := map[string][]int{} // route → statuses observed by Instrument
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.Instrument = func(route string, h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sw := &statusWriter{ResponseWriter: w}
				h.ServeHTTP(sw, r)
				mu.Lock()
				seen[route] = append(seen[route], sw.status)
				mu.Unlock()
			})
		}
	})
	tk := e.enqueueOne("q", `{"target":{"url":"http://h/"}}`)
	e.do("GET", "/v1/tasks/"+tk.ID, "")
	e.do("GET", "/v1/tasks/"+tk.ID, "", "Authorization", "Bearer nope")
	e.do("GET", "/v1/no/such/route", "")
	e.do("PUT", "/v1/queues", "")
	e.do("GET", "/livez", "")

	mu.Lock()
	got := fmt.Sprint(seen)
	mu.Unlock()
	wantSeen := fmt.Sprint(map[string][]int{
		"POST /v1/queues/{queue}/tasks": {201},
		"GET /v1/tasks/{id}":            {200, 401},
		"unmatched":                     {404, 405},
		"GET /livez":                    {200},
	})
	if got != wantSeen {
		t.Errorf("Instrument saw %s\nwant %s", got, wantSeen)
	}

	lines := logLines(t, e.logs.String())
	if len(lines) != 6 {
		t.Fatalf("%d request log lines, want 6:\n%s", len(lines), e.logs.String())
	}
	first := lines[0]
	if first["level"] != "INFO" || first["http.request.method"] != "POST" || first["http.route"] != "POST /v1/queues/{queue}/tasks" ||
		first["http.response.status_code"] != float64(201) || first["url.path"] != "/v1/queues/q/tasks" {
		t.Errorf("log line: %v", first)
	}
	if _, ok := first["event.duration"].(float64); !ok {
		t.Errorf("no duration in %v", first)
	}
	if lines[2]["http.response.status_code"] != float64(401) {
		t.Errorf("401 line: %v", lines[2])
	}
	if lines[5]["level"] != "DEBUG" {
		t.Errorf("health probe logged at %v, want DEBUG", lines[5]["level"])
	}
	if strings.Contains(e.logs.String(), "Bearer") || strings.Contains(e.logs.String(), testKey) || strings.Contains(e.logs.String(), "nope") {
		t.Error("credentials in the log")
	}
}

func TestUnmatched(t *testing.T) {
	t.Parallel()
	e := newEnv(t, openSQLite(t))
	for _, path := range []string{"/", "/v1", "/v1/tasks", "/v1/tasks/", "/v2/queues", "/v1/queues/q/tasks/extra", "/metrics", "/debug/pprof/"} {
		wantProblem(t, e.do("GET", path, ""), http.StatusNotFound, "no route")
	}
	r := e.do("PUT", "/v1/queues", "")
	wantProblem(t, r, http.StatusMethodNotAllowed, "PUT")
	if r.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow = %q", r.Header.Get("Allow"))
	}
	// Path-cleaning redirects go through the middleware too.
	r = e.do("GET", "/v1//queues", "")
	if r.Code != http.StatusTemporaryRedirect || r.Header.Get("Location") != "/v1/queues" {
		t.Errorf("/v1//queues: %d %v", r.Code, r.Header)
	}
	r = e.do("DELETE", "/v1/queues/q/tasks", "")
	if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow = %q", allow)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	st := openSQLite(t)
	for name, cfg := range map[string]Config{
		"no store":       {},
		"empty key":      {Store: st, APIKeys: []auth.Key{{Secret: "a", Role: auth.Admin}, {Secret: "", Role: auth.Read}}},
		"key, no role":   {Store: st, APIKeys: []auth.Key{{Secret: "a"}}},
		"negative body":  {Store: st, MaxBodyBytes: -1},
		"negative batch": {Store: st, MaxBatch: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	h, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	s := h.(*server)
	if s.cfg.MaxBodyBytes != DefaultMaxBodyBytes || s.cfg.MaxBatch != DefaultMaxBatch || s.cfg.Now == nil || s.log == nil {
		t.Errorf("defaults not applied: %+v", s.cfg)
	}
}

// TestCheckTarget: the optional SSRF pre-check refuses at enqueue, naming
// the field and the reason, and sees every task of a batch.
func TestCheckTarget(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var asked []string
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.CheckTarget = func(u *url.URL) error {
			mu.Lock()
			asked = append(asked, u.Hostname())
			mu.Unlock()
			if u.Hostname() == "169.254.169.254" {
				return errors.New("169.254.169.254 is a link-local address")
			}
			return nil
		}
	})
	p := wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://169.254.169.254/latest"}}`), "target.url")
	if !strings.Contains(p.Detail, "link-local") {
		t.Errorf("detail %q does not give the reason", p.Detail)
	}
	wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[{"target":{"url":"http://ok/"}},{"target":{"url":"http://169.254.169.254/"}}]}`), "tasks[1].target.url")
	want(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://example.com/"}}`), http.StatusCreated)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(asked) != "[169.254.169.254 ok 169.254.169.254 example.com]" {
		t.Errorf("CheckTarget asked about %v", asked)
	}
}

// TestClock: an explicit run_at is bounded from Config.Now. (A delay is
// not measured from it: TestDelayIgnoresTheAPIClock.)
func TestClock(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	e := newEnv(t, openSQLite(t), func(c *Config) { c.Now = func() time.Time { return now } })
	wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"},"run_at":"2031-05-08T07:08:09Z"}`), "run_at")
	want(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"},"run_at":"2031-05-06T07:08:09Z"}`), http.StatusCreated)
}
