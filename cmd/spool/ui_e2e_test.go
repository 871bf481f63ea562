package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestDashboardServed: the dashboard shares the API's port behind its keys
// (a sign-in redirect, never a page, without a session), counts in the HTTP
// metrics under its route patterns, and SPOOL_UI=false leaves /ui/ to the
// API's 404.
func TestDashboardServed(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(url string) (int, http.Header, string) {
		resp, err := noRedirect.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	on := startServe(t, "serve", serveOpts{dataDir: t.TempDir()}, key)
	st, h, _ := get("http://" + on.api + "/ui/queues/emails")
	if st != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/ui/signin?next=") || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("/ui/ without a session: %d %v", st, h)
	}
	if st, _, body := get("http://" + on.api + "/ui/signin"); st != http.StatusOK || !strings.Contains(body, `name="key"`) {
		t.Errorf("sign-in page: %d", st)
	}
	if st, _, _ := get("http://" + on.api + "/livez"); st != http.StatusOK {
		t.Errorf("the API beside the dashboard: %d", st)
	}
	if _, _, metrics := get("http://" + on.admin + "/metrics"); !strings.Contains(metrics, `route="GET /ui/queues/{queue}"`) {
		t.Error("no HTTP metrics under the dashboard's route pattern")
	}

	off := startServe(t, "serve", serveOpts{dataDir: t.TempDir(), env: []string{"SPOOL_UI=false"}}, key)
	if st, h, _ := get("http://" + off.api + "/ui/"); st != http.StatusNotFound || !strings.Contains(h.Get("Content-Type"), "problem+json") {
		t.Errorf("SPOOL_UI=false: /ui/ %d %s", st, h.Get("Content-Type"))
	}
}
