package ui_test

import (
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/ui"
)

// TestSecurityHeaders: every answer, pages, assets and errors alike, carries
// the strict CSP and the other headers.
func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser()
	for _, p := range []string{"/ui/", "/ui/static/ui.css", "/ui/static/ui.js", "/ui/nowhere", "/ui/tasks/nope"} {
		r := b.get(p)
		if got := r.header.Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'none'") || !strings.Contains(got, "script-src 'self'") ||
			strings.Contains(got, "unsafe-inline") || !strings.Contains(got, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", p, got)
		}
		if r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("%s: headers %v", p, r.header)
		}
	}
	if r := b.get("/ui/static/"); r.status != http.StatusNotFound {
		t.Errorf("static directory listing: %d", r.status)
	}
	if r := b.get("/ui"); r.status != http.StatusMovedPermanently || r.header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d %s", r.status, r.header.Get("Location"))
	}
}

// TestOpenMode: without keys the dashboard is as open as the API (admin),
// but a change still needs the CSRF token.
func TestOpenMode(t *testing.T) {
	e := newEnv(t, nil)
	tk := e.enqueue("emails")
	b := e.browser()
	r := b.get("/ui/")
	if r.status != 200 || !strings.Contains(r.body, "emails") || strings.Contains(r.body, "Sign out") {
		t.Fatalf("overview: %d\n%s", r.status, r.body)
	}
	if r := b.do("POST", "/ui/tasks/"+tk.ID+"/cancel", url.Values{}); r.status != http.StatusForbidden {
		t.Errorf("cancel without token: %d", r.status)
	}
	if got := e.task(tk.ID).State; got != task.Available {
		t.Fatalf("state after refused cancel: %s", got)
	}
	if r := b.post("/ui/tasks/"+tk.ID, "/ui/tasks/"+tk.ID+"/cancel", nil); r.status != http.StatusSeeOther {
		t.Errorf("cancel with token: %d", r.status)
	}
	if got := e.task(tk.ID).State; got != task.Cancelled {
		t.Errorf("state after cancel: %s", got)
	}
	if r := b.get("/ui/signin"); r.status != http.StatusSeeOther {
		t.Errorf("sign-in page in open mode: %d, want a redirect to the overview", r.status)
	}
}

// TestAccessRules: no key, wrong key, read, write and admin keys.
func TestAccessRules(t *testing.T) {
	e := newEnv(t, testKeys)
	tk := e.enqueue("emails")
	page := "/ui/tasks/" + tk.ID

	anon := e.browser()
	for _, p := range []string{"/ui/", "/ui/queues/emails", page, "/ui/enqueue"} {
		r := anon.get(p)
		if r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/ui/signin?next=") {
			t.Errorf("GET %s without a session: %d %s", p, r.status, r.header.Get("Location"))
		}
	}
	if r := anon.do("POST", page+"/cancel", url.Values{}); r.status != http.StatusSeeOther {
		t.Errorf("POST without a session: %d", r.status)
	}
	if r := anon.get("/ui/?fragment=live"); r.status != http.StatusUnauthorized {
		t.Errorf("live fragment without a session: %d, want 401", r.status)
	}

	wrong := e.browser()
	r := wrong.signIn("not-a-key")
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "not valid") {
		t.Errorf("wrong key: %d", r.status)
	}
	if strings.Contains(r.body, "not-a-key") {
		t.Error("the sign-in page echoes the key")
	}
	if r.header.Get("Set-Cookie") != "" {
		t.Errorf("wrong key got a cookie: %s", r.header.Get("Set-Cookie"))
	}

	reader := e.browser()
	r = reader.signIn(readKey)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/" {
		t.Fatalf("sign in: %d %s", r.status, r.header.Get("Location"))
	}
	ck := r.header.Get("Set-Cookie")
	for _, want := range []string{"spool_session=", "HttpOnly", "SameSite=Strict", "Path=/ui/", "Max-Age="} {
		if !strings.Contains(ck, want) {
			t.Errorf("cookie %q lacks %s", ck, want)
		}
	}
	if strings.Contains(ck, readKey) || strings.Contains(ck, "Secure") {
		t.Errorf("cookie holds the key or is Secure over plain HTTP: %q", ck)
	}
	r = reader.get(page)
	if r.status != 200 || !strings.Contains(r.body, "[redacted]") || strings.Contains(r.body, "receiver-secret") {
		t.Errorf("read key's task page: %d; values must be redacted", r.status)
	}
	if strings.Contains(r.body, `action="/ui/tasks/`+tk.ID+`/cancel"`) {
		t.Error("read key is offered the cancel button")
	}
	if r := reader.post(page, page+"/cancel", nil); r.status != http.StatusForbidden || !strings.Contains(r.body, "read role") {
		t.Errorf("read key cancels: %d", r.status)
	}
	if r := reader.post("/ui/queues/emails", "/ui/queues/emails/pause", nil); r.status != http.StatusForbidden {
		t.Errorf("read key pauses: %d", r.status)
	}
	if r := reader.post("/ui/enqueue", "/ui/enqueue", url.Values{"queue": {"emails"}, "url": {"https://example.com/"}}); r.status != http.StatusForbidden {
		t.Errorf("read key enqueues: %d", r.status)
	}
	if got := e.task(tk.ID).State; got != task.Available {
		t.Fatalf("a read key changed the task: %s", got)
	}

	writer := e.browser()
	writer.signIn(writeKey)
	if r := writer.get(page); strings.Contains(r.body, "receiver-secret") {
		t.Error("write key sees header values")
	}
	if r := writer.post(page, page+"/cancel", nil); r.status != http.StatusSeeOther {
		t.Errorf("write key cancels: %d %s", r.status, r.body)
	}
	if got := e.task(tk.ID).State; got != task.Cancelled {
		t.Errorf("after the write key's cancel: %s", got)
	}

	admin := e.browser()
	admin.signIn(adminKey)
	if r := admin.get(page); !strings.Contains(r.body, "Bearer receiver-secret") {
		t.Error("admin key does not see header values")
	}

	// Sign-out clears the cookie.
	r = admin.do("POST", "/ui/signout", url.Values{})
	if r.status != http.StatusSeeOther || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("sign out: %d %s", r.status, r.header.Get("Set-Cookie"))
	}
	if r := admin.get("/ui/"); r.status != http.StatusSeeOther {
		t.Errorf("after sign-out: %d", r.status)
	}
}

// TestSessionExpiry: a cookie past its expiry sends to sign-in saying so.
func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, testKeys, func(c *ui.Config) { c.SessionTTL = time.Hour })
	b := e.browser()
	b.signIn(readKey)
	if r := b.get("/ui/"); r.status != 200 {
		t.Fatalf("fresh session: %d", r.status)
	}
	e.clock.Add(59 * time.Minute)
	if r := b.get("/ui/"); r.status != 200 {
		t.Fatalf("session at 59m: %d", r.status)
	}
	e.clock.Add(2 * time.Minute)
	// The browser would have dropped the cookie (Max-Age); send it anyway,
	// as a client that ignores Max-Age would.
	r := b.get("/ui/queues/x?state=failed")
	if r.status != http.StatusSeeOther || !strings.Contains(r.header.Get("Location"), "expired=1") ||
		!strings.Contains(r.header.Get("Location"), url.QueryEscape("/ui/queues/x?state=failed")) {
		t.Errorf("expired session: %d %s", r.status, r.header.Get("Location"))
	}
}

// TestCookieChecks: a tampered cookie, and one whose key was removed from
// the key list, are refused; another replica with the same keys accepts it.
func TestCookieChecks(t *testing.T) {
	e := newEnv(t, testKeys)
	b := e.browser()
	r := b.signIn(writeKey)
	ck := strings.SplitN(strings.TrimPrefix(r.header.Get("Set-Cookie"), "spool_session="), ";", 2)[0]

	with := func(srvURL, value string) int {
		req, _ := http.NewRequest("GET", srvURL+"/ui/", nil)
		req.AddCookie(&http.Cookie{Name: "spool_session", Value: value})
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := with(e.srv.URL, ck); got != 200 {
		t.Fatalf("own cookie: %d", got)
	}
	parts := strings.Split(ck, ".")
	tampered := []string{
		parts[0] + "." + "9999999999" + "." + parts[2], // a later expiry
		strings.Repeat("0", len(parts[0])) + "." + parts[1] + "." + parts[2],
		parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-2] + "AA",
		"garbage", "",
	}
	for _, v := range tampered {
		if got := with(e.srv.URL, v); got != http.StatusSeeOther {
			t.Errorf("tampered cookie %q: %d", v, got)
		}
	}
	other := newEnv(t, testKeys) // another replica: same keys, no shared state
	if got := with(other.srv.URL, ck); got != 200 {
		t.Errorf("another replica refuses the cookie: %d", got)
	}
	revoked := newEnv(t, []auth.Key{{Secret: readKey, Role: auth.Read}})
	if got := with(revoked.srv.URL, ck); got != http.StatusSeeOther {
		t.Errorf("a replica without the key accepts its cookie: %d", got)
	}
}

// TestCSRF: every state-changing request needs this session's token and
// must not come from another site.
func TestCSRF(t *testing.T) {
	e := newEnv(t, testKeys)
	tk := e.enqueue("emails")
	page := "/ui/tasks/" + tk.ID
	b := e.browser()
	b.signIn(writeKey)
	token := b.csrf(page)

	// The token of another session (another sign-in, a second later).
	other := e.browser()
	e.clock.Add(time.Second)
	other.signIn(writeKey)
	otherToken := other.csrf(page)
	if otherToken == token {
		t.Fatal("two sign-ins share a CSRF token")
	}
	cases := []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no token", url.Values{}, nil},
		{"wrong token", url.Values{"csrf": {"x" + token}}, nil},
		{"another session's token", url.Values{"csrf": {otherToken}}, nil},
		{"cross-site fetch", url.Values{"csrf": {token}}, []string{"Sec-Fetch-Site", "cross-site"}},
		{"same-site but other origin", url.Values{"csrf": {token}}, []string{"Sec-Fetch-Site", "same-site"}},
		{"foreign Origin", url.Values{"csrf": {token}}, []string{"Origin", "https://evil.example"}},
	}
	for _, c := range cases {
		if r := b.do("POST", page+"/cancel", c.form, c.hdr...); r.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, r.status)
		}
	}
	if got := e.task(tk.ID).State; got != task.Available {
		t.Fatalf("a refused request changed the task: %s", got)
	}
	origin := e.srv.URL
	if r := b.do("POST", page+"/cancel", url.Values{"csrf": {token}}, "Sec-Fetch-Site", "same-origin", "Origin", origin); r.status != http.StatusSeeOther {
		t.Errorf("same-origin with the token: %d %s", r.status, r.body)
	}
	// The sign-in form has no session yet; a cross-site one is refused.
	if r := e.browser().do("POST", "/ui/signin", url.Values{"key": {writeKey}}, "Sec-Fetch-Site", "cross-site"); r.status != http.StatusForbidden {
		t.Errorf("cross-site sign-in: %d", r.status)
	}
	// GET never changes anything, whatever it asks.
	tk2 := e.enqueue("emails")
	b.get("/ui/tasks/" + tk2.ID + "/cancel")
	if got := e.task(tk2.ID).State; got != task.Available {
		t.Errorf("a GET changed a task: %s", got)
	}
}

// TestSignInRedirectStaysOnDashboard: ?next= cannot send anyone elsewhere.
func TestSignInRedirectStaysOnDashboard(t *testing.T) {
	e := newEnv(t, testKeys)
	for next, want := range map[string]string{
		"/ui/queues/a?state=failed": "/ui/queues/a?state=failed",
		"https://evil.example/ui/":  "/ui/",
		"//evil.example/ui/":        "/ui/",
		"/ui/../v1/queues":          "/ui/",
		"/elsewhere":                "/ui/",
		"/ui/\\evil":                "/ui/",
		"/ui/signin?next=/ui/":      "/ui/",
	} {
		r := e.browser().do("POST", "/ui/signin", url.Values{"key": {readKey}, "next": {next}})
		if got := r.header.Get("Location"); got != want {
			t.Errorf("next=%q: Location %q, want %q", next, got, want)
		}
	}
}

// TestSignInPageWhenSignedIn: a signed-in visit to the sign-in page goes on.
func TestSignInPageWhenSignedIn(t *testing.T) {
	e := newEnv(t, testKeys)
	b := e.browser()
	b.signIn(readKey)
	if r := b.get("/ui/signin?next=%2Fui%2Fqueues%2Fa"); r.status != http.StatusSeeOther || r.header.Get("Location") != "/ui/queues/a" {
		t.Errorf("signed in: %d %s", r.status, r.header.Get("Location"))
	}
	if r := e.browser().get("/ui/signin"); r.status != http.StatusOK {
		t.Errorf("signed out: %d", r.status)
	}
}

// TestRequestLog: a line per request with route and status, never the key
// or the cookie.
func TestRequestLog(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	e := newEnv(t, testKeys, func(c *ui.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return logs.Write(p)
		}), &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	b := e.browser()
	r := b.signIn(adminKey)
	cookie := strings.SplitN(strings.TrimPrefix(r.header.Get("Set-Cookie"), "spool_session="), ";", 2)[0]
	b.get("/ui/queues/emails")
	b.get("/ui/?fragment=live") // Debug: not at Info
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if !strings.Contains(out, `"http.route":"GET /ui/queues/{queue}"`) || !strings.Contains(out, `"http.response.status_code":404`) ||
		!strings.Contains(out, `"http.route":"POST /ui/signin"`) {
		t.Errorf("log lacks the requests:\n%s", out)
	}
	if strings.Contains(out, "fragment") || strings.Contains(out, `"url.path":"/ui/","http.response.status_code":200`) {
		t.Errorf("a live refresh logged at Info:\n%s", out)
	}
	if strings.Contains(out, adminKey) || strings.Contains(out, cookie) {
		t.Errorf("the log holds the key or the cookie:\n%s", out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestFailedSignInsAreLimited: an address that keeps sending wrong keys is
// stopped after ten within a minute: the eleventh attempt, even with a
// valid key, is answered 429 with Retry-After and the key is not checked.
// Another address is not affected, and the address may try again once the
// minute has passed.
func TestFailedSignInsAreLimited(t *testing.T) {
	e := newEnv(t, testKeys)
	b := e.browser()
	for i := range 10 {
		if r := b.signIn("wrong-key-" + strings.Repeat("x", i)); r.status != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d: status %d, want 401", i+1, r.status)
		}
	}
	r := b.signIn(writeKey)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "Too many failed sign-ins") {
		t.Fatalf("sign-in after 10 failures: status %d, Retry-After %q; want 429 with Retry-After and a message", r.status, r.header.Get("Retry-After"))
	}
	if r.header.Get("Set-Cookie") != "" {
		t.Error("a limited sign-in set a session cookie")
	}
	// Once the minute has passed, the address may sign in again.
	e.clock.Add(time.Minute)
	if r := b.signIn(writeKey); r.status != http.StatusSeeOther {
		t.Fatalf("sign-in a minute later: status %d, want 303", r.status)
	}
}
