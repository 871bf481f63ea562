package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

const testKey = "test-key-0123456789"

// readerKey and writerKey are the env's keys with the read and write roles;
// testKey and "second-key" are admin.
const (
	readerKey = "reader-key-0123456789"
	writerKey = "writer-key-0123456789"
)

// backend opens a fresh, migrated store of one kind for one test.
type backend struct {
	name string
	open func(t *testing.T) store.Store
}

func backends() []backend {
	return []backend{
		{name: "sqlite", open: openSQLite},
		{name: "postgres", open: openPostgres},
	}
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("sqlite migrate: %v", err)
	}
	return st
}

func openPostgres(t *testing.T) store.Store {
	t.Helper()
	ctx := context.Background()
	dsn := testpg.Shared(t).CreateDB(t)
	st, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 4})
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("postgres migrate: %v", err)
	}
	return st
}

// eachStore runs fn as a parallel subtest on each store.
func eachStore(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b.open(t))
		})
	}
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testEnv is one API over one store. Every response it sees is checked
// against openapi.json: the status must be documented for the operation
// and the body must validate against the documented schema.
type testEnv struct {
	t    *testing.T
	srv  *server
	doc  *openAPIDocument
	logs *syncBuffer

	mu   sync.Mutex
	seen map[string]bool // "METHOD /path status"
}

func newEnv(t *testing.T, st store.Store, mod ...func(*Config)) *testEnv {
	t.Helper()
	logs := &syncBuffer{}
	cfg := Config{
		Store: st,
		APIKeys: []auth.Key{{Secret: testKey, Role: auth.Admin}, {Secret: "second-key", Role: auth.Admin},
			{Secret: readerKey, Role: auth.Read}, {Secret: writerKey, Role: auth.Write}},
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Version: "v-test",
	}
	for _, m := range mod {
		m(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &testEnv{t: t, srv: h.(*server), doc: loadOpenAPI(t), logs: logs, seen: map[string]bool{}}
}

// result is a recorded response.
type result struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r result) String() string { return http.StatusText(r.Code) + " " + string(r.Body) }

// do sends a request. hdr holds name/value pairs; the test key is sent
// unless hdr sets Authorization ("" removes it).
func (e *testEnv) do(method, target, body string, hdr ...string) result {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	return e.doReq(req)
}

// doReq serves req and checks the response against the document.
func (e *testEnv) doReq(req *http.Request) result {
	e.t.Helper()
	h, pattern := e.srv.mux.Handler(req)
	if !isRouted(h) {
		pattern = ""
	}
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	res := result{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	e.check(req, pattern, res)
	return res
}

func (e *testEnv) check(req *http.Request, pattern string, res result) {
	e.t.Helper()
	if res.Header.Get(requestIDHeader) == "" {
		e.t.Errorf("%s %s: no %s header", req.Method, req.URL, requestIDHeader)
	}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if res.Code >= 400 && mt != "application/problem+json" {
		e.t.Errorf("%s %s: status %d with Content-Type %q, want application/problem+json", req.Method, req.URL, res.Code, mt)
	}
	if req.Method == http.MethodHead {
		return
	}
	var schema map[string]any
	var err error
	if pattern == "" || res.Code == statusClientClosedRequest {
		// No operation matched: a redirect, or 404/405 as a problem. Or
		// the client went away: a 499 reaches no client, so the document
		// does not list it, but it is still a problem.
		if res.Code < 400 {
			return
		}
		schema = map[string]any{"$ref": "#/components/schemas/Problem"}
	} else {
		method, path, _ := strings.Cut(pattern, " ")
		schema, err = e.doc.responseSchema(method, path, res.Code, mt)
		e.mu.Lock()
		e.seen[pattern+" "+strconv.Itoa(res.Code)] = true
		e.mu.Unlock()
	}
	if err != nil {
		e.t.Errorf("%s %s → %d: %v\nbody: %s", req.Method, req.URL, res.Code, err, res.Body)
		return
	}
	if errs := e.doc.validateJSON(schema, res.Body); len(errs) > 0 {
		e.t.Errorf("%s %s → %d: body does not match the documented schema:\n  %s\nbody: %s",
			req.Method, req.URL, res.Code, strings.Join(errs, "\n  "), res.Body)
	}
}

// decode unmarshals a response body, failing the test on error.
func decode[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r.Body, err)
	}
	return v
}

// want fails the test unless r has status code.
func want(t *testing.T, r result, code int) result {
	t.Helper()
	if r.Code != code {
		t.Fatalf("status %d, want %d; body: %s", r.Code, code, r.Body)
	}
	return r
}

// wantProblem checks r is a problem with status code whose detail contains
// every fragment, and returns it.
func wantProblem(t *testing.T, r result, code int, fragments ...string) problem {
	t.Helper()
	want(t, r, code)
	p := decode[problem](t, r)
	if p.Status != code || p.Title != http.StatusText(code) || p.Type != "about:blank" {
		t.Errorf("problem %+v does not match status %d", p, code)
	}
	for _, f := range fragments {
		if !strings.Contains(p.Detail, f) {
			t.Errorf("detail %q does not contain %q", p.Detail, f)
		}
	}
	return p
}

// wantField checks a 422 names field among its errors.
func wantField(t *testing.T, r result, field string) problem {
	t.Helper()
	p := wantProblem(t, r, http.StatusUnprocessableEntity)
	for _, fe := range p.Errors {
		if fe.Field == field {
			return p
		}
	}
	t.Errorf("422 does not name field %q: %s", field, r.Body)
	return p
}

// enqueueOne enqueues body to queue and returns the created task.
func (e *testEnv) enqueueOne(queue, body string, hdr ...string) taskJSON {
	e.t.Helper()
	r := e.do("POST", "/v1/queues/"+queue+"/tasks", body, hdr...)
	want(e.t, r, http.StatusCreated)
	return decode[taskJSON](e.t, r)
}

// sinceNow reports how far t is from now, absolute.
func sinceNow(t *testing.T, s string) time.Duration {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("parse time %q: %v", s, err)
	}
	d := time.Since(at)
	if d < 0 {
		d = -d
	}
	return d
}

// testDestination is a destination escaped as one path segment, as clients
// send it, for the tests that only need some concrete path.
const testDestination = "https%3A%2F%2Fh.example%3A443"

// concretePath fills a route template's parameters with valid values.
func concretePath(path string) string {
	return strings.NewReplacer("{queue}", "q", "{id}", "01890a5d-ac96-774b-bcce-b302099a8057",
		"{destination}", testDestination).Replace(path)
}
