package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestDestinations is the round trip through the real store: PATCH
// creates and changes the ceilings, GET and the list show what the store
// holds, the dispatcher's shared state included.
func TestDestinations(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		e := newEnv(t, st)
		r := want(t, e.do("GET", "/v1/destinations", ""), http.StatusOK)
		if strings.TrimSpace(string(r.Body)) != `{"destinations":[]}` {
			t.Errorf("no destinations: %s", r.Body)
		}

		// PATCH creates the destination, named as the dispatcher names it:
		// the default port filled in.
		api := "https://api.example.com:443"
		d := decode[destinationJSON](t, want(t, e.do("PATCH", "/v1/destinations/https%3A%2F%2Fapi.example.com", `{"max_concurrency":8}`), http.StatusOK))
		if d.Destination != api || d.MaxConcurrency != 8 || d.RateLimit != 0 || d.LimitState != limitSlowStart ||
			d.Breaker != task.BreakerClosed || d.ConsecutiveFailures != 0 || d.OpenUntil != nil || d.HoldUntil != nil ||
			d.Cooldown != "0s" || d.Latency != "0s" || d.SuccessRate != 1 || d.Replicas != 0 || d.InFlight != 0 {
			t.Errorf("created: %+v", d)
		}
		if sinceNow(t, d.CreatedAt) > time.Minute || sinceNow(t, d.UpdatedAt) > time.Minute {
			t.Errorf("created_at %s, updated_at %s: not now", d.CreatedAt, d.UpdatedAt)
		}
		// Each field alone, null as absent, the bounds, 0 as none.
		for _, c := range []struct {
			body string
			conc int
			rate float64
		}{
			{`{"rate_limit":2.5}`, 8, 2.5},
			{`{"max_concurrency":0,"rate_limit":null}`, 0, 2.5},
			{`{"max_concurrency":100000,"rate_limit":1000000}`, 100000, 1e6},
			{`{"max_concurrency":3,"rate_limit":0}`, 3, 0},
		} {
			d := decode[destinationJSON](t, want(t, e.do("PATCH", "/v1/destinations/"+url.PathEscape(api), c.body), http.StatusOK))
			if d.Destination != api || d.MaxConcurrency != c.conc || d.RateLimit != c.rate {
				t.Errorf("PATCH %s → max_concurrency %d rate_limit %v, want %d %v", c.body, d.MaxConcurrency, d.RateLimit, c.conc, c.rate)
			}
		}
		// merge-patch+json is JSON too.
		want(t, e.do("PATCH", "/v1/destinations/"+url.PathEscape(api), `{"rate_limit":0.5}`, "Content-Type", "application/merge-patch+json"), http.StatusOK)

		// The dispatcher's shared state, written the way replicas write it.
		b := "http://b.example:8080"
		now := time.Now()
		_, err := st.SyncDestinations(ctx, "replica-1", destinationLive,
			[]store.DestinationReport{{Name: b, InFlight: 3, Successes: 9, Failures: 1, Latency: 12 * time.Millisecond}},
			func(d *task.Destination, _ store.DestinationReport, _ time.Time) bool { d.Limit = 12.5; return true })
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		_, err = st.ChangeDestination(ctx, b, func(d *task.Destination, _ time.Time) bool {
			d.Breaker, d.OpenUntil, d.Cooldown, d.Failures = task.BreakerOpen, now.Add(time.Minute), 30*time.Second, 5
			d.LimitDecreasedAt, d.HoldUntil = now, now.Add(2*time.Minute)
			return true
		})
		if err != nil {
			t.Fatalf("change: %v", err)
		}
		// Any URL on the destination names it; the host's case does not matter.
		for _, name := range []string{
			url.PathEscape(b),
			"http%3A%2F%2Fb.example%3A8080",
			"http%3A%2F%2FB.Example%3A8080%2Fhooks%2F1%3Fa%3D1",
			url.PathEscape("http://b.example:8080/x?y=z"),
		} {
			r := want(t, e.do("GET", "/v1/destinations/"+name, ""), http.StatusOK)
			d := decode[destinationJSON](t, r)
			if d.Destination != b || d.Limit != 12.5 || d.LimitState != limitLearned || d.Breaker != task.BreakerOpen ||
				d.ConsecutiveFailures != 5 || d.Cooldown != "30s" || d.InFlight != 3 || d.Replicas != 1 ||
				d.RecentSuccesses != 9 || d.RecentFailures != 1 || d.SuccessRate != 0.9 || d.Latency != "12ms" {
				t.Errorf("GET %s: %+v", name, d)
			}
			if d.OpenUntil == nil || d.HoldUntil == nil {
				t.Fatalf("GET %s: open_until %v, hold_until %v; want both set", name, d.OpenUntil, d.HoldUntil)
			}
			if at := sinceNow(t, *d.OpenUntil); at < 50*time.Second || at > 70*time.Second {
				t.Errorf("open_until %s is %s away, want ~1m", *d.OpenUntil, at)
			}
			if at := sinceNow(t, *d.HoldUntil); at < 110*time.Second || at > 130*time.Second {
				t.Errorf("hold_until %s is %s away, want ~2m", *d.HoldUntil, at)
			}
		}

		// The list, by name, agrees with GET; nulls are JSON nulls.
		l := decode[destinationListJSON](t, want(t, e.do("GET", "/v1/destinations", ""), http.StatusOK))
		if len(l.Destinations) != 2 || l.Destinations[0].Destination != b || l.Destinations[1].Destination != api {
			t.Fatalf("list: %+v", l)
		}
		if l.Destinations[1].MaxConcurrency != 3 || l.Destinations[1].RateLimit != 0.5 || l.Destinations[0].InFlight != 3 {
			t.Errorf("list: %+v", l)
		}
		var raw struct {
			Destinations []map[string]json.RawMessage `json:"destinations"`
		}
		if err := json.Unmarshal(e.do("GET", "/v1/destinations", "").Body, &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"open_until", "hold_until"} {
			if string(raw.Destinations[1][k]) != "null" {
				t.Errorf("%s of a closed destination = %s, want null", k, raw.Destinations[1][k])
			}
		}

		// A Retry-After hold that has passed is not reported; the breaker
		// closing clears open_until.
		_, err = st.ChangeDestination(ctx, b, func(d *task.Destination, _ time.Time) bool {
			d.Breaker, d.HoldUntil = task.BreakerClosed, now.Add(-time.Second)
			return true
		})
		if err != nil {
			t.Fatalf("change: %v", err)
		}
		d = decode[destinationJSON](t, want(t, e.do("GET", "/v1/destinations/"+url.PathEscape(b), ""), http.StatusOK))
		if d.HoldUntil != nil || d.OpenUntil != nil || d.Breaker != task.BreakerClosed {
			t.Errorf("after the hold and the breaker: %+v", d)
		}

		// Unknown: 404 naming the normalized destination.
		wantProblem(t, e.do("GET", "/v1/destinations/https%3A%2F%2Fnope.example", ""), http.StatusNotFound, `"https://nope.example:443"`)
	})
}

// TestDestinationBadRequests: every refusal is a problem with the right
// status, and a refused PATCH changes and creates nothing.
func TestDestinationBadRequests(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		path := "/v1/destinations/" + testDestination
		want(t, e.do("PATCH", path, `{"max_concurrency":7,"rate_limit":1.5}`), http.StatusOK)

		// Names that are no destination: 400 naming the parameter, on GET and PATCH.
		for _, name := range []string{
			"not-a-destination",
			"ftp%3A%2F%2Fh.example",
			"https%3A%2F%2F",
			"https%3A",
			"%20",
			"https%3A%2F%2Fh.example%3A0",
			"https%3A%2F%2Fh.example%3A65536",
			"https%3A%2F%2Fh.example%3Ahttp",
			"mailto%3Aa%40h.example",
			url.PathEscape("https://h.example/" + strings.Repeat("x", maxURLBytes)),
		} {
			for _, method := range []string{"GET", "PATCH"} {
				p := wantProblem(t, e.do(method, "/v1/destinations/"+name, `{"max_concurrency":1}`), http.StatusBadRequest, "destination")
				if len(p.Errors) != 1 || p.Errors[0].Field != "destination" {
					t.Errorf("%s %s: errors %+v, want one naming destination", method, name, p.Errors)
				}
			}
		}

		// Bad patches, as PATCH /v1/queues/{queue} answers them.
		for body, field := range map[string]string{
			`{"max_concurrency":-1}`: "max_concurrency", `{"max_concurrency":100001}`: "max_concurrency",
			`{"max_concurrency":1.5}`: "max_concurrency", `{"max_concurrency":"4"}`: "max_concurrency",
			`{"max_concurrency":1e400}`: "max_concurrency", `{"max_concurrency":99999999999999999999999}`: "max_concurrency",
			`{"rate_limit":-0.1}`: "rate_limit", `{"rate_limit":1000000.5}`: "rate_limit", `{"rate_limit":1e400}`: "rate_limit",
			`{"rate_limit":true}`: "rate_limit", `{"rate_limit":"1"}`: "rate_limit",
			`{"concurrency":4}`: "concurrency", `{"max_concurrency":1,"max_concurrency":2}`: "max_concurrency",
		} {
			wantField(t, e.do("PATCH", path, body), field)
		}
		p := wantField(t, e.do("PATCH", path, `{"max_concurrency":-1,"rate_limit":-1,"paused":true}`), "paused")
		if len(p.Errors) != 3 {
			t.Errorf("errors = %+v, want all three named", p.Errors)
		}
		wantProblem(t, e.do("PATCH", path, `{}`), http.StatusUnprocessableEntity, "at least one", "max_concurrency")
		wantProblem(t, e.do("PATCH", path, `{"rate_limit":null}`), http.StatusUnprocessableEntity, "at least one")
		wantProblem(t, e.do("PATCH", path, `[]`), http.StatusUnprocessableEntity, "object")
		wantProblem(t, e.do("PATCH", path, ``), http.StatusBadRequest, "empty")
		wantProblem(t, e.do("PATCH", path, `{"rate_limit":1`), http.StatusBadRequest, "malformed")
		wantProblem(t, e.do("PATCH", path, `rate_limit=1`, "Content-Type", "application/x-www-form-urlencoded"), http.StatusBadRequest, "malformed JSON")

		// Nothing refused changed the destination or created another.
		l := decode[destinationListJSON](t, want(t, e.do("GET", "/v1/destinations", ""), http.StatusOK))
		if len(l.Destinations) != 1 || l.Destinations[0].MaxConcurrency != 7 || l.Destinations[0].RateLimit != 1.5 {
			t.Errorf("after refused requests: %+v", l)
		}

		// No DELETE: 405 listing what is allowed.
		r := e.do("DELETE", path, "")
		wantProblem(t, r, http.StatusMethodNotAllowed)
		if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "PATCH") {
			t.Errorf("Allow = %q", allow)
		}
	})
}

// TestDestinationRouting pins how Go's ServeMux treats the destination in
// the path: it matches the escaped path segment by segment, so %2F stays
// inside {destination} and PathValue unescapes it; a raw "//" is cleaned
// (307) and a raw "/" makes more segments, which no route matches.
func TestDestinationRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, openSQLite(t))
	const dest = "https://api.example.com:443"
	for _, segment := range []string{
		"https%3A%2F%2Fapi.example.com%3A443", // everything escaped
		url.PathEscape(dest),                  // what the client sends: https:%2F%2Fapi.example.com:443
		"https%3a%2f%2fapi.example.com%3a443", // lower-case escapes
		"https%3A%2F%2Fapi.example.com",       // default port
	} {
		req := e.newReq("GET", "/v1/destinations/"+segment, "")
		if _, pattern := e.srv.mux.Handler(req); pattern != "GET /v1/destinations/{destination}" {
			t.Errorf("%s is routed to %q", segment, pattern)
		}
		p := wantProblem(t, e.doReq(req), http.StatusNotFound, `"`+dest+`"`)
		if len(p.Errors) != 0 {
			t.Errorf("%s: 404 with field errors %+v", segment, p.Errors)
		}
	}

	// Unescaped: the mux cleans "//" with a redirect, and the cleaned path
	// has an extra segment, so it names no route (a problem, not a 400).
	r := e.do("GET", "/v1/destinations/"+dest, "")
	if r.Code != http.StatusTemporaryRedirect || r.Header.Get("Location") != "/v1/destinations/https:/api.example.com:443" {
		t.Fatalf("unescaped: %d Location %q, want 307 to the cleaned path", r.Code, r.Header.Get("Location"))
	}
	wantProblem(t, e.do("GET", r.Header.Get("Location"), ""), http.StatusNotFound, "no route")
	wantProblem(t, e.do("GET", "/v1/destinations/http:%2F%2Fh/x", ""), http.StatusNotFound, "no route")
}

// TestDestinationStoreInvalid: a value the store refuses (store.InvalidError)
// is the client's to fix, so a 422 naming the field, not a 500.
func TestDestinationStoreInvalid(t *testing.T) {
	t.Parallel()
	refused := fmt.Errorf("update destination x: %w", &store.InvalidError{Field: "rate_limit", Detail: "2e+06 is not a number in 0..1e+06"})
	e := newEnv(t, faultStore{Store: openSQLite(t), err: refused})
	p := wantField(t, e.do("PATCH", "/v1/destinations/"+testDestination, `{"rate_limit":2}`), "rate_limit")
	if !strings.Contains(p.Detail, "0..1e+06") {
		t.Errorf("detail %q does not carry the store's reason", p.Detail)
	}
}
