package ui_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/api"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func TestOverview(t *testing.T) {
	e := newEnv(t, nil)
	e.enqueue("emails")
	e.enqueue("emails")
	e.enqueue("reports")
	e.failAll()
	for range 8 {
		e.enqueue("emails")
	}
	e.finishAll(store.Succeeded)
	e.enqueue("emails")
	if _, err := e.st.UpdateQueue(context.Background(), "reports", task.QueuePatch{Paused: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.UpdateDestination(context.Background(), "https://example.com:443", task.DestinationPatch{MaxConcurrency: ptr(7)}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// The first view starts the chart's reading in the background; a view
	// after it shows the chart.
	r := e.browser().get("/ui/")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(r.body, "<svg") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		r = e.browser().get("/ui/")
	}
	row := between(r.body, `<tr id="q-emails">`, `</tr>`)
	for _, want := range []string{`data-count="failed">2<`, `data-count="available">1<`, `running`, `<svg`, `<rect class="bad"`, `10 done, 20.0% failed`} {
		if !strings.Contains(row, want) {
			t.Errorf("emails row lacks %q:\n%s", want, row)
		}
	}
	if row := between(r.body, `<tr id="q-reports">`, `</tr>`); !strings.Contains(row, "paused") {
		t.Errorf("reports row is not paused:\n%s", row)
	}
	if !strings.Contains(r.body, "https://example.com:443") || !strings.Contains(r.body, ">7<") {
		t.Errorf("destination with its ceiling missing:\n%s", r.body)
	}
	// The live fragment is the region alone.
	f := e.browser().get("/ui/?fragment=live")
	if f.status != 200 || strings.Contains(f.body, "<html") || !strings.Contains(f.body, `id="q-emails"`) {
		t.Errorf("fragment: %d\n%s", f.status, f.body)
	}
}

func TestQueuePage(t *testing.T) {
	e := newEnv(t, nil)
	var ids []string
	for range 3 {
		ids = append(ids, e.enqueue("emails").ID)
	}
	e.failAll()
	for range 60 {
		ids = append(ids, e.enqueue("emails").ID)
	}
	e.enqueue("other")
	b := e.browser()

	r := b.get("/ui/queues/emails?state=failed")
	if r.status != 200 || strings.Count(r.body, `id="sel-`) != 3 {
		t.Fatalf("failed tab: %d, %d rows", r.status, strings.Count(r.body, `id="sel-`))
	}
	// Pages keep their place: 50 a page, the next page's link carries the cursor.
	r = b.get("/ui/queues/emails")
	if n := strings.Count(r.body, `id="sel-`); n != 50 {
		t.Errorf("first page: %d rows", n)
	}
	next := regexp.MustCompile(`href="/ui/queues/emails\?after=([0-9a-f-]+)" rel="next"`).FindStringSubmatch(r.body)
	if next == nil || next[1] != ids[49] {
		t.Fatalf("next link: %v, want after=%s", next, ids[49])
	}
	r = b.get("/ui/queues/emails?after=" + next[1])
	if n := strings.Count(r.body, `id="sel-`); n != 13 || !strings.Contains(r.body, ids[50]) || strings.Contains(r.body, `id="sel-`+ids[49]) {
		t.Errorf("second page: %d rows", n)
	}
	// Search by id: a task of this queue opens; another queue's is not found.
	r = b.get("/ui/queues/emails?id=" + ids[5])
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/tasks/"+ids[5] {
		t.Errorf("search: %d %s", r.status, r.header.Get("Location"))
	}
	if r = b.get("/ui/queues/emails?id=nope"); r.status != 200 || !strings.Contains(r.body, "No task nope in this queue") {
		t.Errorf("search for nothing: %d", r.status)
	}
	// Filters, with the API's words for a bad one; the page links keep them.
	e.enqueue("emails", func(n *store.NewTask) { n.Priority = 1; n.Target.URL = "https://other.example.net/x" })
	r = b.get("/ui/queues/emails?priority=1")
	if n := strings.Count(r.body, `id="sel-`); n != 1 || !strings.Contains(r.body, "other.example.net") {
		t.Errorf("priority filter: %d rows", n)
	}
	r = b.get("/ui/queues/emails?target_host=OTHER.example.net&state=available")
	if n := strings.Count(r.body, `id="sel-`); n != 1 || !strings.Contains(r.body, `href="/ui/queues/emails?state=failed&amp;target_host=OTHER.example.net"`) {
		t.Errorf("host filter: %d rows, or the tabs lost the filter", n)
	}
	r = b.get("/ui/queues/emails?created_after=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04")))
	if n := strings.Count(r.body, `id="sel-`); r.status != 200 || n != 0 {
		t.Errorf("created_after an hour ahead: %d, %d rows", r.status, n)
	}
	r = b.get("/ui/queues/emails?priority=12&run_after=yesterday")
	if body := html.UnescapeString(r.body); r.status != http.StatusUnprocessableEntity || !strings.Contains(body, "<code>priority</code>: must be an integer from 0 to 9") ||
		!strings.Contains(body, "<code>run_after</code>: must be an RFC 3339 time") {
		t.Errorf("bad filters: %d", r.status)
	}
	if r = b.get("/ui/queues/emails?state=bogus"); r.status != http.StatusBadRequest {
		t.Errorf("unknown state: %d", r.status)
	}
	if r = b.get("/ui/queues/nosuch"); r.status != http.StatusNotFound {
		t.Errorf("unknown queue: %d", r.status)
	}
}

func TestQueueActions(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	var failed []string
	for range 3 {
		failed = append(failed, e.enqueue("emails").ID)
	}
	e.failAll()
	a, c := e.enqueue("emails"), e.enqueue("emails")
	b := e.browser()
	page := "/ui/queues/emails"

	r := b.post(page, page+"/pause", nil)
	if r.status != http.StatusSeeOther {
		t.Fatalf("pause: %d %s", r.status, r.body)
	}
	if q, _ := e.st.GetQueue(ctx, "emails"); !q.Paused {
		t.Error("not paused")
	}
	if r := b.get(r.header.Get("Location")); !strings.Contains(r.body, "Queue paused") {
		t.Error("no flash after pause")
	}
	b.post(page, page+"/resume", nil)
	if q, _ := e.st.GetQueue(ctx, "emails"); q.Paused {
		t.Error("not resumed")
	}

	// Bulk cancel of two selected tasks; a failed one in the selection is skipped.
	r = b.post(page, page+"/bulk", url.Values{"action": {"cancel"}, "id": {a.ID, c.ID, failed[0]}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("bulk cancel: %d %s", r.status, r.body)
	}
	for _, id := range []string{a.ID, c.ID} {
		if got := e.task(id).State; got != task.Cancelled {
			t.Errorf("%s after bulk cancel: %s", id, got)
		}
	}
	if flash := b.get(r.header.Get("Location")).body; !strings.Contains(flash, "Cancelled 2 of 3 selected tasks. 1 were skipped") {
		t.Errorf("bulk flash: %s", between(flash, `<main`, `</h1>`))
	}
	r = b.post(page, page+"/bulk", url.Values{"action": {"retry"}, "id": {a.ID}})
	if got := e.task(a.ID).State; r.status != http.StatusSeeOther || got != task.Available {
		t.Errorf("bulk retry: %d, %s", r.status, got)
	}
	many := url.Values{"action": {"cancel"}}
	for range 101 {
		many.Add("id", "x")
	}
	if r := b.post(page, page+"/bulk", many); r.status != http.StatusUnprocessableEntity {
		t.Errorf("101 ids: %d", r.status)
	}

	// Retry every failed task.
	r = b.post(page, page+"/retry-failed", nil)
	if r.status != http.StatusSeeOther {
		t.Fatalf("retry failed: %d", r.status)
	}
	for _, id := range failed {
		if got := e.task(id).State; got != task.Available {
			t.Errorf("%s after retry-failed: %s", id, got)
		}
	}

	// Settings: a change is saved; a bad value is refused with the API's words.
	form := url.Values{"concurrency": {"4"}, "rate_limit": {"0"}, "max_attempts": {"25"}, "timeout": {"30s"}, "weight": {"1"},
		"retry_statuses": {task.DefaultRetryStatuses.String()}}
	if r := b.post(page, page+"/settings", form); r.status != http.StatusSeeOther {
		t.Fatalf("settings: %d %s", r.status, between(r.body, `class="error"`, `</div>`))
	}
	if q, _ := e.st.GetQueue(ctx, "emails"); q.Concurrency != 4 {
		t.Errorf("concurrency: %d", q.Concurrency)
	}
	form.Set("weight", "5000")
	form.Set("concurrency", "4")
	r = b.post(page, page+"/settings", form)
	_, apiErr := api.DecodeQueuePatch([]byte(`{"weight": 5000}`))
	p, _ := api.ProblemOf(apiErr)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(html.UnescapeString(r.body), p.Fields[0].Detail) {
		t.Errorf("bad weight: %d; want the API's %q", r.status, p.Fields[0].Detail)
	}
}

// TestTaskAttempts: a task with three attempts shows them, newest first,
// with status, duration, error, excerpt and trace link.
func TestTaskAttempts(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tk := e.enqueue("emails")
	excerpt := `{"error":"busy"}`
	for i, st := range []int{503, 500, 200} {
		ls, err := e.st.Lease(ctx, store.LeaseRequest{Limit: 1, Shared: 1, LeaseFor: time.Minute})
		if err != nil || len(ls) != 1 {
			t.Fatalf("lease %d: %v %d", i, err, len(ls))
		}
		start := time.Now()
		a := &task.Attempt{TaskID: tk.ID, Attempt: ls[0].Task.Attempt, StartedAt: start, FinishedAt: start.Add(42 * time.Millisecond),
			Duration: 42 * time.Millisecond, Status: st, Replica: "replica-a", TraceID: "0af7651916cd43dd8448eb211c80319c"}
		c := store.Completion{LeaseRef: store.LeaseRef{TaskID: tk.ID, Token: ls[0].Token}, Outcome: store.Retry, LastStatus: st,
			LastError: "HTTP " + strconv.Itoa(st), Attempt: a}
		if st == 200 {
			c.Outcome, c.LastError, a.Outcome = store.Succeeded, "", task.AttemptSucceeded
		} else {
			a.Outcome, a.ErrorClass, a.ErrorMessage, a.ResponseExcerpt = task.AttemptRetry, task.ErrorHTTPStatus, "HTTP "+strconv.Itoa(st), &excerpt
		}
		if _, err := e.st.Complete(ctx, []store.Completion{c}); err != nil {
			t.Fatal(err)
		}
	}
	r := e.browser().get("/ui/tasks/" + tk.ID)
	body := html.UnescapeString(r.body)
	if n := strings.Count(body, `<li class="attempt">`); n != 3 {
		t.Fatalf("%d attempts shown", n)
	}
	i3, i2, i1 := strings.Index(body, "<strong>Attempt 3</strong>"), strings.Index(body, "<strong>Attempt 2</strong>"), strings.Index(body, "<strong>Attempt 1</strong>")
	if i3 < 0 || !(i3 < i2 && i2 < i1) {
		t.Errorf("attempts not newest first: %d %d %d", i3, i2, i1)
	}
	for _, want := range []string{"HTTP 503", "HTTP 200", "in 42ms", "http_status: HTTP 500", excerpt, "replica replica-a",
		`href="https://jaeger.example.com/trace/0af7651916cd43dd8448eb211c80319c"`, `class="pill at-succeeded"`} {
		if !strings.Contains(body, want) {
			t.Errorf("attempts lack %q", want)
		}
	}
}

func TestTaskPage(t *testing.T) {
	e := newEnv(t, nil)
	tk := e.enqueue("emails")
	bin := e.enqueue("emails", func(n *store.NewTask) {
		n.Payload, n.ContentType, n.TraceParent = []byte{0x00, 0xff, 0x10, 'A'}, "application/octet-stream", ""
	})
	b := e.browser()
	r := b.get("/ui/tasks/" + tk.ID)
	body := html.UnescapeString(r.body)
	for _, want := range []string{
		"{\n  \"order\": 42,", // pretty-printed JSON
		`href="https://jaeger.example.com/trace/4bf92f3577b34da6a3ce929d0e0e4736"`,
		`Authorization: Bearer $SPOOL_API_KEY`,
		"/v1/queues/emails/tasks",
		`action="/ui/tasks/` + tk.ID + `/cancel"`,
		`href="/ui/enqueue?from=` + tk.ID + `"`,
		"available",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("task page lacks %q", want)
		}
	}
	// The curl command, run through a shell's quoting, is a body the API accepts.
	curl := between(body, `<pre class="code" id="curl" tabindex="0">`, `</pre>`)
	m := regexp.MustCompile(`(?s)-d '(.*)'</pre>`).FindStringSubmatch(curl)
	if m == nil {
		t.Fatalf("curl: %s", curl)
	}
	doc := strings.ReplaceAll(m[1], `'\''`, `'`)
	nt, err := api.DecodeTask("emails", []byte(doc), api.EnqueueOptions{})
	if err != nil || string(nt.Payload) != `{"order":42,"items":["a","b"]}` || nt.Target.URL != tk.Target.URL {
		t.Errorf("curl body %s: %v %+v", doc, err, nt)
	}
	r = b.get("/ui/tasks/" + bin.ID)
	if !strings.Contains(r.body, "00000000  00 ff 10 41") || strings.Contains(r.body, "Open the trace") {
		t.Errorf("binary payload: no hex dump, or a trace link without a trace:\n%s", between(r.body, "Payload", "</section>"))
	}

	// Retry and cancel with their flash messages.
	r = b.post("/ui/tasks/"+tk.ID, "/ui/tasks/"+tk.ID+"/retry", nil)
	if r.status != http.StatusSeeOther || !strings.Contains(b.get(r.header.Get("Location")).body, "Not retried") {
		t.Errorf("retry of an available task: %d", r.status)
	}
	b.post("/ui/tasks/"+tk.ID, "/ui/tasks/"+tk.ID+"/cancel", nil)
	r = b.post("/ui/tasks/"+tk.ID, "/ui/tasks/"+tk.ID+"/retry", nil)
	if got := e.task(tk.ID).State; got != task.Available || !strings.Contains(b.get(r.header.Get("Location")).body, "Task retried") {
		t.Errorf("retry of a cancelled task: %s", got)
	}
	if r := b.get("/ui/tasks/nope"); r.status != http.StatusNotFound {
		t.Errorf("unknown task: %d", r.status)
	}
}

// TestEnqueueForm: a task from the form is stored; a bad one is refused
// with the same status and words as the API gives the same request.
func TestEnqueueForm(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	form := url.Values{"queue": {"emails"}, "url": {"https://example.com/hook"}, "method": {"PUT"}, "headers": {"X-Token: abc\nX-Other: 1"},
		"payload_kind": {"json"}, "payload": {`{"a": [1, 2]}`}, "priority": {"2"}, "delay": {"1h"}, "max_attempts": {"3"},
		"timeout": {"10s"}, "idempotency_key": {"k-1"}}
	r := b.post("/ui/enqueue", "/ui/enqueue", form)
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/ui/tasks/") {
		t.Fatalf("enqueue: %d %s", r.status, between(r.body, `class="error"`, `</div>`))
	}
	tk := e.task(strings.TrimPrefix(r.header.Get("Location"), "/ui/tasks/"))
	if tk.Queue != "emails" || tk.Target.Method != "PUT" || tk.Target.Headers["X-Token"] != "abc" || tk.Priority != 2 ||
		tk.MaxAttempts != 3 || tk.State != task.Scheduled || string(tk.Payload) != `{"a": [1, 2]}` || tk.IdempotencyKey != "k-1" {
		t.Errorf("stored: %+v", tk)
	}
	// The same form again is the same request: the same task.
	r = b.post("/ui/enqueue", "/ui/enqueue", form)
	if r.header.Get("Location") != "/ui/tasks/"+tk.ID {
		t.Errorf("idempotent replay: %s", r.header.Get("Location"))
	}
	form.Set("priority", "3")
	r = b.post("/ui/enqueue", "/ui/enqueue", form)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(html.UnescapeString(r.body), `idempotency key "k-1" was already used`) {
		t.Errorf("key reused: %d", r.status)
	}

	// Refusals match the API's, field and words.
	apiH, err := api.New(api.Config{Store: e.st})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		form url.Values
		body string
	}{
		{url.Values{"queue": {"emails"}, "url": {"ftp://example.com/"}}, `{"target":{"url":"ftp://example.com/"}}`},
		{url.Values{"queue": {"emails"}, "url": {"https://example.com/"}, "priority": {"12"}}, `{"target":{"url":"https://example.com/"},"priority":12}`},
		{url.Values{"queue": {"emails"}, "url": {"https://example.com/"}, "timeout": {"soon"}}, `{"target":{"url":"https://example.com/"},"timeout":"soon"}`},
		{url.Values{"queue": {"emails"}, "url": {"https://example.com/"}, "delay": {"1h"}, "run_at": {"2030-01-01T00:00:00Z"}},
			`{"target":{"url":"https://example.com/"},"delay":"1h","run_at":"2030-01-01T00:00:00Z"}`},
	} {
		c.form.Set("payload_kind", "json")
		r := b.post("/ui/enqueue", "/ui/enqueue", c.form)
		rec := httptest.NewRecorder()
		apiH.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/queues/emails/tasks", strings.NewReader(c.body)))
		var prob struct {
			Status int `json:"status"`
			Errors []struct{ Field, Detail string }
		}
		if err := json.NewDecoder(rec.Body).Decode(&prob); err != nil || len(prob.Errors) == 0 {
			t.Fatalf("API answer to %s: %v %+v", c.body, err, prob)
		}
		page := html.UnescapeString(r.body)
		if r.status != prob.Status {
			t.Errorf("%s: status %d, API %d", c.body, r.status, prob.Status)
		}
		for _, fe := range prob.Errors {
			if !strings.Contains(page, "<code>"+fe.Field+"</code>: "+fe.Detail) {
				t.Errorf("%s: the page lacks the API's %s: %s", c.body, fe.Field, fe.Detail)
			}
		}
		if !strings.Contains(page, `value="`+c.form.Get("url")+`"`) {
			t.Errorf("%s: the form lost its values", c.body)
		}
	}
	// What only the form can get wrong.
	r = b.post("/ui/enqueue", "/ui/enqueue", url.Values{"queue": {"emails"}, "url": {"https://example.com/"}, "headers": {"no colon"}, "payload_kind": {"json"}, "payload": {"{oops"}})
	if body := html.UnescapeString(r.body); r.status != http.StatusUnprocessableEntity || !strings.Contains(body, `line 1 is not "Name: value"`) ||
		!strings.Contains(body, "is not valid JSON") {
		t.Errorf("form errors: %d", r.status)
	}
	// Text payloads are sent as they are.
	r = b.post("/ui/enqueue", "/ui/enqueue", url.Values{"queue": {"texts"}, "url": {"https://example.com/"}, "payload_kind": {"text"}, "payload": {"hello\nworld"}})
	if tt := e.task(strings.TrimPrefix(r.header.Get("Location"), "/ui/tasks/")); string(tt.Payload) != "hello\nworld" || !strings.HasPrefix(tt.ContentType, "text/plain") {
		t.Errorf("text payload: %q %q", tt.Payload, tt.ContentType)
	}

	// "Enqueue a copy" prefills the form.
	r = b.get("/ui/enqueue?from=" + tk.ID)
	body := html.UnescapeString(r.body)
	for _, want := range []string{`value="emails"`, `value="https://example.com/hook"`, `<option selected>PUT</option>`, "X-Token: abc", `"a": [`} {
		if !strings.Contains(body, want) {
			t.Errorf("copy form lacks %q", want)
		}
	}
}

// TestTemplatesHaveNoInlineCode: the CSP forbids inline script and style;
// this keeps the templates from relying on them.
func TestTemplatesHaveNoInlineCode(t *testing.T) {
	files, _ := filepath.Glob("templates/*.html")
	if len(files) == 0 {
		t.Fatal("no templates")
	}
	bad := regexp.MustCompile(`(?i)\sstyle=|<style|\son[a-z]+=|javascript:|<script[^>]*>[^<]`)
	script := regexp.MustCompile(`(?i)<script[^>]*>`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := bad.Find(b); m != nil {
			t.Errorf("%s: inline code %q", f, m)
		}
		for _, m := range script.FindAll(b, -1) {
			if !strings.Contains(string(m), `src="/ui/static/`) {
				t.Errorf("%s: a script not from /ui/static/: %q", f, m)
			}
		}
	}
}

func between(s, from, to string) string {
	i := strings.Index(s, from)
	if i < 0 {
		return ""
	}
	s = s[i:]
	if j := strings.Index(s[len(from):], to); j >= 0 {
		return s[:len(from)+j+len(to)]
	}
	return s
}

func ptr[T any](v T) *T { return &v }

var _ = io.Discard

// TestControlsAreLabelled: every visible form control of every page has a
// label (a <label for> naming its id, or aria-label), every button and
// link has text, and the page has one h1 and a lang, for screen readers.
func TestControlsAreLabelled(t *testing.T) {
	e := newEnv(t, nil)
	tk := e.enqueue("emails")
	e.failAll()
	b := e.browser()
	control := regexp.MustCompile(`<(input|select|textarea)\b[^>]*>`)
	attr := func(tag, name string) string {
		m := regexp.MustCompile(`\s` + name + `="([^"]*)"`).FindStringSubmatch(tag)
		if m == nil {
			return ""
		}
		return m[1]
	}
	emptyButton := regexp.MustCompile(`<button[^>]*>\s*</button>|<a [^>]*>\s*</a>`)
	for _, p := range []string{"/ui/", "/ui/queues/emails", "/ui/queues/emails?state=failed", "/ui/tasks/" + tk.ID, "/ui/enqueue", "/ui/enqueue?from=" + tk.ID} {
		r := b.get(p)
		if r.status != 200 {
			t.Fatalf("%s: %d", p, r.status)
		}
		if strings.Count(r.body, "<h1") != 1 || !strings.Contains(r.body, `<html lang="en">`) {
			t.Errorf("%s: want one h1 and a lang", p)
		}
		for _, tag := range control.FindAllString(r.body, -1) {
			if attr(tag, "type") == "hidden" || attr(tag, "aria-label") != "" {
				continue
			}
			id := attr(tag, "id")
			if attr(tag, "type") == "radio" {
				continue // each radio sits inside its <label>
			}
			if id == "" || !strings.Contains(r.body, `<label for="`+id+`"`) {
				t.Errorf("%s: control without a label: %s", p, tag)
			}
		}
		if m := emptyButton.FindString(r.body); m != "" {
			t.Errorf("%s: a button or link without text: %s", p, m)
		}
	}
}
