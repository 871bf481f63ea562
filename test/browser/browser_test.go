package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/spoolhq/spool/internal/spooltest"
)

const (
	adminKey = "browser-admin-key-0123456789"
	readKey  = "browser-read-key-0123456789"
)

var (
	spoolBin  string
	chromium  string
	skipWhy   string
	browser   context.Context // one Chromium for the package
	apiBase   string          // http://127.0.0.1:port of the one spool serve
	targetURL string          // the test receiver
	failures  atomic.Int64    // requests the receiver answered 500
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	chromium = findChromium()
	if chromium == "" {
		if os.Getenv("SPOOL_TEST_REQUIRE_CHROMIUM") == "1" {
			fmt.Fprintln(os.Stderr, "browser tests: no Chromium found (install Debian's chromium or set SPOOL_CHROMIUM) and SPOOL_TEST_REQUIRE_CHROMIUM=1")
			return 1
		}
		skipWhy = "no Chromium found: install Debian's chromium package (or set SPOOL_CHROMIUM) to run the dashboard's browser tests"
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "spool-browser-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if spoolBin, err = spooltest.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(1280, 860), chromedp.Flag("disable-dev-shm-usage", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "start %s: %v\n", chromium, err)
		return 1
	}
	browser = ctx
	return m.Run()
}

func findChromium() string {
	if p := os.Getenv("SPOOL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// server starts one spool serve for the calling test (SQLite, two keys)
// and a receiver that answers /fail with 500 and anything else with 204.
func server(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail") {
			failures.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"error":"the receiver is down for maintenance"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	targetURL = recv.URL
	addr := spooltest.FreeAddr(t)
	apiBase = "http://" + addr
	p := spooltest.Start(t, "spool", spoolBin, []string{
		"SPOOL_HTTP_ADDR=" + addr, "SPOOL_ADMIN_ADDR=", "SPOOL_DATA_DIR=" + t.TempDir(), "SPOOL_DATABASE_URL=", "DATABASE_URL=",
		"SPOOL_API_KEYS=" + adminKey + ":admin," + readKey + ":read", "SPOOL_INSECURE_UNSIGNED=true",
		"SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "SPOOL_POLL_INTERVAL=100ms", "SPOOL_RETRY_MIN_BACKOFF=50ms",
		"SPOOL_RETRY_MAX_BACKOFF=100ms", "SPOOL_DRAIN_DELAY=0s", "SPOOL_LOG_LEVEL=warn",
		"SPOOL_UI_TRACE_URL=https://jaeger.example.com/trace/{trace_id}",
	}, "serve")
	p.WaitHTTP(t, apiBase+"/readyz", 20*time.Second)
}

// tab opens a new tab of the package's browser, bounded by timeout.
func tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 45*time.Second)
	t.Cleanup(cancelT)
	return ctx
}

func do(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		fatal(t, ctx, err)
	}
}

// get runs one action that returns a value.
func get[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		fatal(t, ctx, err)
	}
	return v
}

func fatal(t *testing.T, ctx context.Context, err error) {
	t.Helper()
	shot(t, ctx, "failure")
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main") ? document.querySelector("main").innerText : ""`))
	t.Fatalf("%v\nat %s:\n%s", err, loc, body)
}

// css is a CSS selector (the first match).
func css(s string) chromedp.CSS { return chromedp.CSS(s) }

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return get(t, ctx, chromedp.Text(css(sel)))
}

func count(t *testing.T, ctx context.Context, sel string) int {
	t.Helper()
	return get(t, ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// shot saves a screenshot of the viewport in the test's artifact directory
// and, with SPOOL_SCREENSHOTS_DIR set, there too.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(t.ArtifactDir(), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("save screenshot: %v", err)
	}
	t.Logf("screenshot: %s", p)
	if dir := os.Getenv("SPOOL_SCREENSHOTS_DIR"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
			t.Errorf("save screenshot: %v", err)
		}
	}
}

// signIn signs the tab's browser in with key. The browser's cookies are
// cleared first: every test's server has the same keys, so an earlier
// test's session (cookies ignore the port) would be valid here, and the
// sign-in page would send it straight on.
func signIn(t *testing.T, ctx context.Context, key string) {
	t.Helper()
	clearCookies(t, ctx)
	do(t, ctx,
		chromedp.Navigate(apiBase+"/ui/signin"),
		chromedp.WaitVisible(css("#key")),
		chromedp.SendKeys(css("#key"), key),
		chromedp.Click(css("form button[type=submit]")),
		chromedp.WaitVisible(css("p.flash")),
	)
}

func clearCookies(t *testing.T, ctx context.Context) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.ClearBrowserCookies, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
}

// waitURL waits until the tab's address contains sub (a navigation that
// a click started has happened).
func waitURL(t *testing.T, ctx context.Context, sub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if loc, err := chromedp.Run(ctx, chromedp.Location()); err == nil && strings.Contains(loc, sub) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fatal(t, ctx, fmt.Errorf("the address never contained %q", sub))
}

// api calls the API with the admin key.
func api(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, apiBase+path, rd)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

type taskJSON struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Attempt int    `json:"attempt"`
}

func enqueue(t *testing.T, queue string, task map[string]any) taskJSON {
	t.Helper()
	var tk taskJSON
	if st := api(t, "POST", "/v1/queues/"+queue+"/tasks", task, &tk); st != http.StatusCreated {
		t.Fatalf("enqueue: %d", st)
	}
	return tk
}

func getTask(t *testing.T, id string) taskJSON {
	t.Helper()
	var tk taskJSON
	api(t, "GET", "/v1/tasks/"+id, nil, &tk)
	return tk
}

func waitState(t *testing.T, id, state string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if getTask(t, id).State == state {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("task %s never reached %s (now %s)", id, state, getTask(t, id).State)
}

func TestSignInAndOverview(t *testing.T) {
	server(t)
	enqueue(t, "emails", map[string]any{"target": map[string]any{"url": targetURL + "/ok"}, "payload": map[string]any{"to": "ada@example.com"}})
	for range 3 {
		enqueue(t, "emails", map[string]any{"target": map[string]any{"url": targetURL + "/fail"}, "max_attempts": 1})
	}
	enqueue(t, "reports", map[string]any{"target": map[string]any{"url": targetURL + "/ok"}, "delay": "1h"})
	api(t, "POST", "/v1/queues/reports/pause", nil, nil)
	ctx := tab(t)
	clearCookies(t, ctx)
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/queues/emails"), chromedp.WaitVisible(css("#key")))
	if loc := get(t, ctx, chromedp.Location()); !strings.Contains(loc, "/ui/signin?next=%2Fui%2Fqueues%2Femails") {
		t.Errorf("unsigned visit went to %s", loc)
	}
	do(t, ctx, chromedp.SendKeys(css("#key"), "wrong-key"), chromedp.Click(css("form button[type=submit]")),
		chromedp.WaitVisible(css(".error")))
	shot(t, ctx, "signin")
	do(t, ctx, chromedp.SendKeys(css("#key"), readKey), chromedp.Click(css("form button[type=submit]")),
		chromedp.WaitVisible(css("p.flash")))
	if loc := get(t, ctx, chromedp.Location()); !strings.HasSuffix(loc, "/ui/queues/emails") {
		t.Errorf("after sign-in: %s, want the page asked for", loc)
	}
	waitState(t, enqueue(t, "emails", map[string]any{"target": map[string]any{"url": targetURL + "/fail"}, "max_attempts": 1}).ID, "failed")
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/"), chromedp.WaitVisible(css("#q-emails")))
	if failed, reports := text(t, ctx, `#q-emails td[data-count="failed"]`), text(t, ctx, "#q-reports"); failed != "4" || !strings.Contains(reports, "paused") {
		t.Errorf("overview: failed %q, reports row %q", failed, reports)
	}
	// A read key is offered no action.
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/queues/emails"), chromedp.WaitVisible(css("h1")))
	if n := count(t, ctx, `form[method=post]:not([action="/ui/signout"])`); n != 0 {
		t.Errorf("a read key sees %d action forms", n)
	}
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/"), chromedp.WaitVisible(css("#q-emails")))
	shot(t, ctx, "overview")
	// The same page on a phone, and in the dark theme.
	do(t, ctx, chromedp.EmulateViewport(375, 740, chromedp.EmulateMobile), chromedp.Reload(), chromedp.WaitVisible(css("#q-emails")))
	if get(t, ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)) {
		t.Error("the overview is wider than a 375px phone (tables should scroll inside their box)")
	}
	shot(t, ctx, "overview-phone")
	do(t, ctx, chromedp.EmulateViewport(1280, 860))
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, chromedp.Reload(), chromedp.WaitVisible(css("#q-emails")))
	if bg := get(t, ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).backgroundColor`)); bg != "rgb(20, 22, 26)" {
		t.Errorf("dark theme background %s", bg)
	}
	shot(t, ctx, "overview-dark")
}

func TestFilterQueue(t *testing.T) {
	server(t)
	for i := range 6 {
		enqueue(t, "orders", map[string]any{"target": map[string]any{"url": targetURL + "/ok"}, "priority": i % 3, "delay": "1h"})
	}
	enqueue(t, "orders", map[string]any{"target": map[string]any{"url": "https://billing.example.com/hook"}, "priority": 1, "delay": "1h"})
	ctx := tab(t)
	signIn(t, ctx, adminKey)
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/queues/orders"), chromedp.WaitVisible(css("#f-prio")),
		chromedp.SetValue(css("#f-prio"), "1"),
		chromedp.SendKeys(css("#f-host"), "billing.example.com"),
		chromedp.Click(css(`form[role=search] button[type=submit]`)))
	// The table was there before the click: wait for the filtered page.
	waitURL(t, ctx, "target_host=")
	do(t, ctx, chromedp.WaitVisible(css("table.tasks")))
	loc := get(t, ctx, chromedp.Location())
	if rows := count(t, ctx, "table.tasks tbody tr"); rows != 1 || !strings.Contains(loc, "priority=1") || !strings.Contains(loc, "target_host=billing.example.com") {
		t.Errorf("filtered: %d rows at %s", rows, loc)
	}
	shot(t, ctx, "queue-filtered")
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/queues/orders?priority=1"), chromedp.WaitVisible(css("table.tasks")))
	if rows := count(t, ctx, "table.tasks tbody tr"); rows != 3 {
		t.Errorf("priority 1: %d rows, want 3", rows)
	}
}

func TestTaskAttemptsAndRetry(t *testing.T) {
	server(t)
	tk := enqueue(t, "webhooks", map[string]any{"target": map[string]any{"url": targetURL + "/fail/order-7",
		"headers": map[string]any{"Authorization": "Bearer receiver-token"}}, "payload": map[string]any{"order": 7, "items": []string{"book", "lamp"}},
		"max_attempts": 3})
	waitState(t, tk.ID, "failed")
	ctx := tab(t)
	signIn(t, ctx, adminKey)
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/tasks/"+tk.ID), chromedp.WaitVisible(css("ol.timeline")))
	if n := count(t, ctx, "ol.timeline li.attempt"); n != 3 {
		t.Fatalf("%d attempts shown, want 3", n)
	}
	if timeline := text(t, ctx, "ol.timeline"); !strings.Contains(timeline, "HTTP 500") || !strings.Contains(timeline, "Attempt 3") {
		t.Errorf("timeline: %s", timeline)
	}
	if curl := get(t, ctx, chromedp.TextContent(css("#curl"))); !strings.Contains(curl, "$SPOOL_API_KEY") || strings.Contains(curl, adminKey) {
		t.Errorf("curl: %s", curl)
	}
	shot(t, ctx, "task")
	do(t, ctx, chromedp.Click(css(`form[action$="/retry"] button`)), chromedp.WaitVisible(css("p.flash")))
	if flash := text(t, ctx, "p.flash"); !strings.Contains(flash, "Task retried") {
		t.Errorf("flash: %q", flash)
	}
	if got := getTask(t, tk.ID); got.State == "failed" && got.Attempt == 3 {
		t.Errorf("the task was not retried: %+v", got)
	}
}

func TestBulkCancel(t *testing.T) {
	server(t)
	var ids []string
	for range 4 {
		ids = append(ids, enqueue(t, "digest", map[string]any{"target": map[string]any{"url": targetURL + "/ok"}, "delay": "1h"}).ID)
	}
	ctx := tab(t)
	signIn(t, ctx, adminKey)
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/queues/digest"), chromedp.WaitVisible(css("table.tasks")),
		chromedp.Click(css("#sel-"+ids[0])), chromedp.Click(css("#sel-"+ids[2])))
	shot(t, ctx, "queue-selected")
	do(t, ctx, chromedp.Click(css(`#bulk button[value=cancel]`)), chromedp.WaitVisible(css("p.flash")))
	if flash := text(t, ctx, "p.flash"); !strings.Contains(flash, "Cancelled 2 of 2") {
		t.Errorf("flash: %q", flash)
	}
	for i, id := range ids {
		want := "scheduled"
		if i == 0 || i == 2 {
			want = "cancelled"
		}
		if st := getTask(t, id).State; st != want {
			t.Errorf("task %d: %s, want %s", i, st, want)
		}
	}
}

func TestEnqueueFromForm(t *testing.T) {
	server(t)
	ctx := tab(t)
	signIn(t, ctx, adminKey)
	// A bad URL first: the API's message, the form kept.
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/enqueue"), chromedp.WaitVisible(css("#e-queue")),
		chromedp.SendKeys(css("#e-queue"), "signups"),
		chromedp.SetAttributeValue(css("#e-url"), "type", "text"), // let the server judge it
		chromedp.SendKeys(css("#e-url"), "ftp://example.com/x"),
		chromedp.SendKeys(css("#e-payload"), `{"user": 12}`),
		chromedp.Click(css(`form.grid button[type=submit]`)),
		chromedp.WaitVisible(css("#errors")))
	if errs := text(t, ctx, "#errors"); !strings.Contains(errs, "target.url") {
		t.Errorf("errors: %s", errs)
	}
	shot(t, ctx, "enqueue-invalid")
	do(t, ctx,
		chromedp.SetValue(css("#e-url"), targetURL+"/ok/signup"),
		chromedp.SetValue(css("#e-delay"), "10m"),
		chromedp.Click(css(`form.grid button[type=submit]`)),
		chromedp.WaitVisible(css("p.flash")))
	loc := get(t, ctx, chromedp.Location())
	if state := text(t, ctx, "#live .pill"); !strings.Contains(loc, "/ui/tasks/") || state != "scheduled" {
		t.Fatalf("after enqueue: %s, state %q", loc, state)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	if getTask(t, id).State != "scheduled" {
		t.Errorf("the API does not see task %s", id)
	}
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/enqueue?from="+id), chromedp.WaitVisible(css("#e-queue")))
	if v := get(t, ctx, chromedp.Value(css("#e-url"))); v != targetURL+"/ok/signup" {
		t.Errorf("the copy's URL: %q", v)
	}
	shot(t, ctx, "enqueue")
}

func TestLiveCount(t *testing.T) {
	server(t)
	enqueue(t, "live", map[string]any{"target": map[string]any{"url": targetURL + "/ok"}, "delay": "1h"})
	ctx := tab(t)
	signIn(t, ctx, adminKey)
	const n = `a[data-count=scheduled] .n`
	do(t, ctx, chromedp.Navigate(apiBase+"/ui/queues/live"), chromedp.WaitVisible(css(n)),
		// A mark the page would lose if it reloaded.
		chromedp.Evaluate[chromedp.Void](`document.body.dataset.mark = "kept"`))
	if c := text(t, ctx, n); c != "1" {
		t.Fatalf("count %q", c)
	}
	enqueue(t, "live", map[string]any{"target": map[string]any{"url": targetURL + "/ok"}, "delay": "1h"})
	get(t, ctx, chromedp.Poll[bool](`document.querySelector("a[data-count=scheduled] .n").textContent === "2"`, chromedp.WithPollingTimeout(15*time.Second)))
	if mark := get(t, ctx, chromedp.Evaluate[string](`document.body.dataset.mark || ""`)); mark != "kept" {
		t.Error("the page reloaded instead of updating in place")
	}
	shot(t, ctx, "live")
	// The pause switch stops the updates.
	do(t, ctx, chromedp.Click(css("#live-toggle")))
	// Read from the page itself: chromedp's AttributeValue answers from its
	// copy of the DOM, which the browser's attribute events update a moment
	// later (a loaded machine read "false" after the click had set "true").
	if pressed := get(t, ctx, chromedp.Evaluate[string](`document.getElementById("live-toggle").getAttribute("aria-pressed")`)); pressed != "true" {
		t.Fatalf("aria-pressed %q after pausing", pressed)
	}
	enqueue(t, "live", map[string]any{"target": map[string]any{"url": targetURL + "/ok"}, "delay": "1h"})
	time.Sleep(4 * time.Second) // more than one refresh interval
	if c := text(t, ctx, n); c != "2" {
		t.Errorf("paused page changed to %q", c)
	}
	do(t, ctx, chromedp.Click(css("#live-toggle")))
	get(t, ctx, chromedp.Poll[bool](`document.querySelector("a[data-count=scheduled] .n").textContent === "3"`, chromedp.WithPollingTimeout(15*time.Second)))
}
