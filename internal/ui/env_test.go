package ui_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/ui"
)

const (
	readKey  = "read-key-0123456789"
	writeKey = "write-key-0123456789"
	adminKey = "admin-key-0123456789"
)

var testKeys = []auth.Key{{Secret: readKey, Role: auth.Read}, {Secret: writeKey, Role: auth.Write}, {Secret: adminKey, Role: auth.Admin}}

func openSQLite(t testing.TB) store.Store {
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

// clock is a settable clock for session expiry.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }
func newClock() *clock               { return &clock{now: time.Now()} }

// env is one dashboard over one store, served by httptest.
type env struct {
	t     *testing.T
	st    store.Store
	srv   *httptest.Server
	clock *clock
}

func newEnv(t *testing.T, keys []auth.Key, mod ...func(*ui.Config)) *env {
	t.Helper()
	st := openSQLite(t)
	c := newClock()
	cfg := ui.Config{Store: st, APIKeys: keys, Now: c.Now, TraceURL: "https://jaeger.example.com/trace/{trace_id}"}
	for _, m := range mod {
		m(&cfg)
	}
	h, err := ui.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, st: st, srv: srv, clock: c}
}

// browser is a client with its own cookies that does not follow redirects.
type browser struct {
	e *env
	c *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values, hdr ...string) resp {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer r.Body.Close()
	bb, _ := io.ReadAll(r.Body)
	return resp{status: r.StatusCode, header: r.Header, body: string(bb)}
}

func (b *browser) get(path string) resp { b.e.t.Helper(); return b.do("GET", path, nil) }

// post sends a form with the CSRF token of page (read from it first).
func (b *browser) post(page, path string, form url.Values) resp {
	b.e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", b.csrf(page))
	return b.do("POST", path, form)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) csrf(page string) string {
	b.e.t.Helper()
	r := b.get(page)
	m := csrfRE.FindStringSubmatch(r.body)
	if m == nil {
		b.e.t.Fatalf("no CSRF token on %s (status %d)", page, r.status)
	}
	return m[1]
}

func (b *browser) signIn(key string) resp {
	b.e.t.Helper()
	return b.do("POST", "/ui/signin", url.Values{"key": {key}, "next": {"/ui/"}})
}

// enqueue stores a task directly.
func (e *env) enqueue(queue string, mod ...func(*store.NewTask)) task.Task {
	e.t.Helper()
	nt := store.NewTask{ID: newID(e.t), Queue: queue, Target: task.Target{URL: "https://example.com/hook",
		Headers: map[string]string{"Authorization": "Bearer receiver-secret"}},
		Payload: []byte(`{"order":42,"items":["a","b"]}`), ContentType: "application/json", Priority: 5,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	for _, m := range mod {
		m(&nt)
	}
	res, err := e.st.Enqueue(context.Background(), []store.NewTask{nt})
	if err != nil {
		e.t.Fatal(err)
	}
	return res[0].Task
}

// failAll leases every due task and fails it.
func (e *env) failAll() { e.t.Helper(); e.finishAll(store.Fail) }

// finishAll leases every due task and ends its attempt with o.
func (e *env) finishAll(o store.Outcome) {
	e.t.Helper()
	ctx := context.Background()
	ls, err := e.st.Lease(ctx, store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
	if err != nil {
		e.t.Fatal(err)
	}
	var cs []store.Completion
	for _, l := range ls {
		cs = append(cs, store.Completion{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: o,
			LastError: "HTTP 400", LastStatus: 400})
	}
	if _, err := e.st.Complete(ctx, cs); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) task(id string) task.Task {
	e.t.Helper()
	t, err := e.st.GetTask(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return t
}

func newID(t testing.TB) string {
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}
