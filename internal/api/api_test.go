package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

func TestEnqueueAndGet(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)

		// Every field given.
		r := e.do("POST", "/v1/queues/emails/tasks", `{
			"target": {"url": "https://example.com/hook?a=1&b=2", "method": "PUT", "headers": {"x-token": "abc", "Authorization": "Bearer t"}},
			"payload": {"hello": "world", "n": [1, 2.5, 1e3]},
			"content_type": "application/cloudevents+json",
			"delay": "1h",
			"priority": 0,
			"max_attempts": 3,
			"timeout": "10s",
			"idempotency_key": "order-42"
		}`)
		want(t, r, http.StatusCreated)
		full := decode[taskJSON](t, r)
		if got := r.Header.Get("Location"); got != "/v1/tasks/"+full.ID {
			t.Errorf("Location = %q, want /v1/tasks/%s", got, full.ID)
		}
		if full.Queue != "emails" || full.State != task.Scheduled || full.Priority != 0 || full.MaxAttempts != 3 ||
			full.Timeout != "10s" || full.ContentType != "application/cloudevents+json" || full.IdempotencyKey != "order-42" ||
			full.Attempt != 0 || full.FinishedAt != nil || full.LastError != nil || full.LastStatus != nil {
			t.Errorf("task does not reflect the request: %+v", full)
		}
		// Header values are write-only: the answer names them, redacted.
		if full.Target.URL != "https://example.com/hook?a=1&b=2" || full.Target.Method != "PUT" ||
			full.Target.Headers["X-Token"] != Redacted || full.Target.Headers["Authorization"] != Redacted || len(full.Target.Headers) != 2 {
			t.Errorf("target = %+v", full.Target)
		}
		// An admin key sees them with ?view=full.
		shown := decode[taskJSON](t, want(t, e.do("GET", "/v1/tasks/"+full.ID+"?view=full", ""), http.StatusOK))
		if shown.Target.Headers["X-Token"] != "abc" || shown.Target.Headers["Authorization"] != "Bearer t" || len(shown.Target.Headers) != 2 {
			t.Errorf("view=full target = %+v", shown.Target)
		}
		if d := sinceNow(t, full.RunAt); d < 59*time.Minute || d > 61*time.Minute {
			t.Errorf("run_at %s is %s from now, want ~1h", full.RunAt, d)
		}
		if !strings.HasSuffix(full.CreatedAt, "Z") || len(full.CreatedAt) != len("2006-01-02T15:04:05.000000Z") {
			t.Errorf("created_at %q is not UTC RFC 3339 with microseconds", full.CreatedAt)
		}
		if !strings.Contains(string(r.Body), `"https://example.com/hook?a=1&b=2"`) {
			t.Errorf("URL is HTML-escaped in %s", r.Body)
		}

		// The payload is stored byte for byte.
		stored, err := st.GetTask(context.Background(), full.ID)
		if err != nil {
			t.Fatal(err)
		}
		if string(stored.Payload) != `{"hello": "world", "n": [1, 2.5, 1e3]}` {
			t.Errorf("stored payload = %q", stored.Payload)
		}

		// GET returns the same task, without the enqueue's idempotent_replay.
		if full.IdempotentReplay == nil || *full.IdempotentReplay {
			t.Errorf("a new task's idempotent_replay = %v, want false", full.IdempotentReplay)
		}
		full.IdempotentReplay = nil
		got := decode[taskJSON](t, want(t, e.do("GET", "/v1/tasks/"+full.ID, ""), http.StatusOK))
		if fmt.Sprint(got) != fmt.Sprint(full) {
			t.Errorf("GET = %+v\nwant %+v", got, full)
		}
		// The id is accepted in upper case too (UUIDs are case-insensitive).
		want(t, e.do("GET", "/v1/tasks/"+strings.ToUpper(full.ID), ""), http.StatusOK)

		// Only target.url: the defaults.
		min := e.enqueueOne("emails", `{"target":{"url":"http://127.0.0.1:8080/x"}}`)
		if min.State != task.Available || min.Priority != task.DefaultPriority || min.MaxAttempts != task.DefaultMaxAttempts ||
			min.Timeout != "30s" || min.Target.Method != "POST" || min.ContentType != "" || min.IdempotencyKey != "" ||
			len(min.Target.Headers) != 0 {
			t.Errorf("defaults: %+v", min)
		}
		if !strings.Contains(string(e.do("GET", "/v1/tasks/"+min.ID, "").Body), `"headers":{}`) {
			t.Error("empty headers are not {}")
		}
		if d := sinceNow(t, min.RunAt); d > time.Minute {
			t.Errorf("run_at %s is %s from now", min.RunAt, d)
		}
		if min.ID <= full.ID {
			t.Errorf("ids are not time-ordered: %s then %s", full.ID, min.ID)
		}

		// payload → application/json; payload_base64 → octet-stream, decoded.
		j := e.enqueueOne("emails", `{"target":{"url":"http://h/"},"payload":[1,2]}`)
		if j.ContentType != "application/json" {
			t.Errorf("payload content_type = %q", j.ContentType)
		}
		b := e.enqueueOne("emails", `{"target":{"url":"http://h/"},"payload_base64":"AAEC/w=="}`)
		if b.ContentType != "application/octet-stream" {
			t.Errorf("payload_base64 content_type = %q", b.ContentType)
		}
		if bt, _ := st.GetTask(context.Background(), b.ID); string(bt.Payload) != "\x00\x01\x02\xff" {
			t.Errorf("decoded payload = %q", bt.Payload)
		}
		// A string payload is JSON too, stored with its quotes.
		s := e.enqueueOne("emails", `{"target":{"url":"http://h/"},"payload":"hi"}`)
		if st, _ := st.GetTask(context.Background(), s.ID); string(st.Payload) != `"hi"` {
			t.Errorf("string payload stored as %q", st.Payload)
		}

		// null means absent.
		n := e.enqueueOne("emails", `{"target":{"url":"http://h/","method":null,"headers":null},"payload":null,"delay":null,"priority":null,"timeout":null}`)
		if n.Priority != 5 || n.Target.Method != "POST" || n.ContentType != "" || n.State != task.Available {
			t.Errorf("nulls: %+v", n)
		}

		// run_at in the future schedules; in the past means now.
		future := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
		f := e.enqueueOne("emails", `{"target":{"url":"http://h/"},"run_at":"`+future+`"}`)
		if f.State != task.Scheduled || f.RunAt[:19] != future[:19] {
			t.Errorf("run_at future: state %s run_at %s, want scheduled at %s", f.State, f.RunAt, future)
		}
		p := e.enqueueOne("emails", `{"target":{"url":"http://h/"},"run_at":"2001-02-03T04:05:06+01:00"}`)
		if p.State != task.Available || sinceNow(t, p.RunAt) > time.Minute {
			t.Errorf("run_at past: %s at %s, want available now", p.State, p.RunAt)
		}

		// Unknown task: 404; a non-UUID id is unknown too.
		wantProblem(t, e.do("GET", "/v1/tasks/01890a5d-ac96-774b-bcce-b302099a8057", ""), 404, "01890a5d-ac96-774b-bcce-b302099a8057")
		wantProblem(t, e.do("GET", "/v1/tasks/not-a-uuid", ""), 404, "not-a-uuid")
		wantProblem(t, e.do("GET", "/v1/tasks/01890a5dac96774bbcceb302099a8057", ""), 404)
	})
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		body := `{"target":{"url":"http://h/a"}}`

		// By header: 201, then 200 with the same task.
		first := want(t, e.do("POST", "/v1/queues/q/tasks", body, "Idempotency-Key", "k1"), http.StatusCreated)
		again := want(t, e.do("POST", "/v1/queues/q/tasks", body, "Idempotency-Key", "k1"), http.StatusOK)
		a, b := decode[taskJSON](t, first), decode[taskJSON](t, again)
		if a.ID != b.ID || b.IdempotencyKey != "k1" {
			t.Errorf("replay by header: %s then %s (key %q)", a.ID, b.ID, b.IdempotencyKey)
		}
		if again.Header.Get("Location") != "" {
			t.Error("a replay sets Location")
		}

		// By field; the field and the header are the same key.
		c := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/b"},"idempotency_key":"k2"}`), http.StatusCreated))
		d := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/b"}}`, "Idempotency-Key", "k2"), http.StatusOK))
		f := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/b"},"idempotency_key":"k2"}`, "Idempotency-Key", "k2"), http.StatusOK))
		if c.ID != d.ID || c.ID != f.ID {
			t.Errorf("replay by field: %s, %s, %s", c.ID, d.ID, f.ID)
		}
		// Another request under the key is refused (TestIdempotencyKeyMeansOneRequest).
		wantField(t, e.do("POST", "/v1/queues/q/tasks", body, "Idempotency-Key", "k2"), "Idempotency-Key")

		// Both given and different: 422.
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"},"idempotency_key":"x"}`, "Idempotency-Key", "y"), "idempotency_key")
		// Keys are per queue.
		other := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/other/tasks", body, "Idempotency-Key", "k1"), http.StatusCreated))
		if other.ID == a.ID {
			t.Error("a key is shared across queues")
		}
		// Bad keys.
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"},"idempotency_key":"`+strings.Repeat("k", 256)+`"}`), "idempotency_key")
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"},"idempotency_key":"a\u0000b"}`), "idempotency_key")
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"http://h/"},"idempotency_key":"é"}`), "idempotency_key")
		wantField(t, e.do("POST", "/v1/queues/q/tasks", body, "Idempotency-Key", strings.Repeat("k", 256)), "Idempotency-Key")
		req := e.newReq("POST", "/v1/queues/q/tasks", body)
		req.Header.Add("Idempotency-Key", "a")
		req.Header.Add("Idempotency-Key", "b")
		wantField(t, e.doReq(req), "Idempotency-Key")
		// The header on a batch: 422.
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[`+body+`]}`, "Idempotency-Key", "k9"), "Idempotency-Key")

		// A batch that is all replays: 200; with one new task: 201.
		bb := `{"tasks":[{"target":{"url":"http://h/"},"idempotency_key":"b1"},{"target":{"url":"http://h/"},"idempotency_key":"b2"}]}`
		b1 := decode[batchJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", bb), http.StatusCreated))
		b2 := decode[batchJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks", bb), http.StatusOK))
		if b1.Tasks[0].ID != b2.Tasks[0].ID || b1.Tasks[1].ID != b2.Tasks[1].ID {
			t.Errorf("batch replay ids differ: %v vs %v", b1, b2)
		}
		b3 := decode[batchJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks",
			`{"tasks":[{"target":{"url":"http://h/"},"idempotency_key":"b1"},{"target":{"url":"http://h/"},"idempotency_key":"b3"}]}`), http.StatusCreated))
		if b3.Tasks[0].ID != b1.Tasks[0].ID || b3.Tasks[1].ID == b1.Tasks[1].ID {
			t.Errorf("mixed batch: %v", b3)
		}
		// Two tasks of one batch sharing a key are one task.
		dup := decode[batchJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks",
			`{"tasks":[{"target":{"url":"http://h/"},"idempotency_key":"d"},{"target":{"url":"http://h/"},"idempotency_key":"d"}]}`), http.StatusCreated))
		if dup.Tasks[0].ID != dup.Tasks[1].ID {
			t.Errorf("in-batch duplicate keys gave two tasks: %s, %s", dup.Tasks[0].ID, dup.Tasks[1].ID)
		}
	})
}

func TestIdempotencyKeyMeansOneRequest(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		post := func(body string, hdr ...string) result {
			t.Helper()
			return e.do("POST", "/v1/queues/q/tasks", body, hdr...)
		}
		replayed := func(what string, tk taskJSON, want bool) {
			t.Helper()
			if tk.IdempotentReplay == nil || *tk.IdempotentReplay != want {
				t.Errorf("%s: idempotent_replay = %v, want %v", what, tk.IdempotentReplay, want)
			}
		}
		// refused checks a problem names the key and the task it holds.
		refused := func(p problem, key, taskID string) {
			t.Helper()
			if p.IdempotencyKey != key || p.TaskID != taskID || !strings.Contains(p.Detail, strconv.Quote(key)) {
				t.Errorf("problem names key %q and task %q, detail %q; want key %q and task %q",
					p.IdempotencyKey, p.TaskID, p.Detail, key, taskID)
			}
		}
		queueSize := func() int {
			t.Helper()
			return len(decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/q/tasks", ""), http.StatusOK)).Tasks)
		}

		// The same request again: 200, the original, marked a replay. A
		// delay is compared as sent, not as the run time it gives, and
		// headers whatever their order and case.
		body := `{"target":{"url":"http://h/a","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":1},"delay":"1h","priority":3}`
		first := decode[taskJSON](t, want(t, post(body, "Idempotency-Key", "k1"), http.StatusCreated))
		replayed("first request", first, false)
		time.Sleep(5 * time.Millisecond) // a later now: another computed run_at
		same := `{"priority":3,"delay":"1h","payload":{"n":1},"target":{"headers":{"X-B":"2","x-a":"1"},"url":"http://h/a"}}`
		again := decode[taskJSON](t, want(t, post(same, "Idempotency-Key", "k1"), http.StatusOK))
		replayed("the same request", again, true)
		if again.ID != first.ID || again.RunAt != first.RunAt {
			t.Errorf("replay: task %s at %s, want the original %s at %s", again.ID, again.RunAt, first.ID, first.RunAt)
		}
		// The same JSON payload with other white space (another client's
		// encoder) is the same request too.
		spaced := `{"target": {"url": "http://h/a", "headers": {"X-A": "1", "x-b": "2"}}, "payload": { "n" : 1 }, "delay": "1h", "priority": 3}`
		if tk := decode[taskJSON](t, want(t, post(spaced, "Idempotency-Key", "k1"), http.StatusOK)); tk.ID != first.ID {
			t.Errorf("replay with spaced JSON: task %s, want the original %s", tk.ID, first.ID)
		}

		// Anything else under the key: 422 naming the key, nothing stored.
		for name, other := range map[string]string{
			"payload":      `{"target":{"url":"http://h/a","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":2},"delay":"1h","priority":3}`,
			"target":       `{"target":{"url":"http://h/b","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":1},"delay":"1h","priority":3}`,
			"header":       `{"target":{"url":"http://h/a","headers":{"X-A":"1"}},"payload":{"n":1},"delay":"1h","priority":3}`,
			"method":       `{"target":{"url":"http://h/a","method":"PUT","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":1},"delay":"1h","priority":3}`,
			"priority":     `{"target":{"url":"http://h/a","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":1},"delay":"1h"}`,
			"schedule":     `{"target":{"url":"http://h/a","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":1},"delay":"2h","priority":3}`,
			"content_type": `{"target":{"url":"http://h/a","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":1},"delay":"1h","priority":3,"content_type":"application/x+json"}`,
			"settings":     `{"target":{"url":"http://h/a","headers":{"X-A":"1","x-b":"2"}},"payload":{"n":1},"delay":"1h","priority":3,"max_attempts":2,"timeout":"5s"}`,
		} {
			r := post(other, "Idempotency-Key", "k1")
			if r.Code != http.StatusUnprocessableEntity {
				t.Errorf("another %s: %s, want 422", name, r)
				continue
			}
			p := wantField(t, r, "Idempotency-Key")
			if !strings.Contains(p.Detail, "different request") {
				t.Errorf("another %s: detail %q", name, p.Detail)
			}
			refused(p, "k1", first.ID)
		}
		// The key given as the field is named as the field.
		p := wantField(t, post(`{"target":{"url":"http://h/c"},"idempotency_key":"k1"}`), "idempotency_key")
		refused(p, "k1", first.ID)
		if n := queueSize(); n != 1 {
			t.Errorf("queue holds %d tasks after the refusals, want 1", n)
		}

		// A batch: each task says whether it was replayed.
		sameByField := strings.Replace(same, `{`, `{"idempotency_key":"k1",`, 1)
		batch := `{"tasks":[` + sameByField + `,{"target":{"url":"http://h/new"},"idempotency_key":"k2"},{"target":{"url":"http://h/plain"}}]}`
		b := decode[batchJSON](t, want(t, post(batch), http.StatusCreated))
		if len(b.Tasks) != 3 || b.Tasks[0].ID != first.ID {
			t.Fatalf("batch answered %+v", b.Tasks)
		}
		for i, w := range []bool{true, false, false} {
			replayed(fmt.Sprintf("tasks[%d]", i), b.Tasks[i], w)
		}
		replays := decode[batchJSON](t, want(t, post(`{"tasks":[{"target":{"url":"http://h/new"},"idempotency_key":"k2"}]}`), http.StatusOK))
		replayed("an all-replay batch", replays.Tasks[0], true)

		// A batch with one mismatch: 422 naming the key and its index, and
		// nothing of it stored.
		size := queueSize()
		p = wantField(t, post(`{"tasks":[{"target":{"url":"http://h/x"}},{"target":{"url":"http://h/x"},"idempotency_key":"k3"},{"target":{"url":"http://h/other"},"idempotency_key":"k2"}]}`),
			"tasks[2].idempotency_key")
		refused(p, "k2", b.Tasks[1].ID)
		if !strings.HasPrefix(p.Detail, "tasks[2].idempotency_key: ") {
			t.Errorf("detail %q does not name the task first", p.Detail)
		}
		// Two tasks of one batch sharing a key, with different requests.
		p = wantField(t, post(`{"tasks":[{"target":{"url":"http://h/x"},"idempotency_key":"k4"},{"target":{"url":"http://h/y"},"idempotency_key":"k4"}]}`),
			"tasks[1].idempotency_key")
		refused(p, "k4", "")
		if n := queueSize(); n != size {
			t.Errorf("queue holds %d tasks after refused batches, want %d", n, size)
		}
		// ...and k3 and k4 were not reserved by them.
		want(t, post(`{"target":{"url":"http://h/z"},"idempotency_key":"k3"}`), http.StatusCreated)
		want(t, post(`{"target":{"url":"http://h/z"},"idempotency_key":"k4"}`), http.StatusCreated)

		// The task pruned, its key still reserved: 409 naming both.
		want(t, e.do("POST", "/v1/tasks/"+first.ID+"/cancel", ""), http.StatusOK)
		time.Sleep(2 * time.Millisecond)
		if n, err := st.Prune(t.Context(), 0, 1000); err != nil || n != 1 {
			t.Fatalf("Prune = %d, %v; want 1", n, err)
		}
		refused(wantProblem(t, post(same, "Idempotency-Key", "k1"), http.StatusConflict, "pruned", first.ID), "k1", first.ID)
		p = wantProblem(t, post(batch), http.StatusConflict, "tasks[0].idempotency_key: ")
		refused(p, "k1", first.ID)
		// Released after the retention: the key is free again.
		if n, err := st.PruneIdempotencyKeys(t.Context(), 0, 1000); err != nil || n != 1 {
			t.Fatalf("PruneIdempotencyKeys = %d, %v; want 1", n, err)
		}
		fresh := decode[taskJSON](t, want(t, post(`{"target":{"url":"http://h/d"}}`, "Idempotency-Key", "k1"), http.StatusCreated))
		replayed("a released key", fresh, false)
	})
}

func (e *testEnv) newReq(method, target, body string) *http.Request {
	req, err := http.NewRequest(method, target, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	return req
}

func TestBatch(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st, func(c *Config) { c.MaxBatch = 10 })
		var items []string
		for i := range 5 {
			items = append(items, fmt.Sprintf(`{"target":{"url":"http://h/%d"},"priority":%d}`, i, i))
		}
		r := want(t, e.do("POST", "/v1/queues/batch/tasks", `{"tasks":[`+strings.Join(items, ",")+`]}`), http.StatusCreated)
		if r.Header.Get("Location") != "" {
			t.Error("a batch sets Location")
		}
		b := decode[batchJSON](t, r)
		if len(b.Tasks) != 5 {
			t.Fatalf("got %d tasks", len(b.Tasks))
		}
		for i, tk := range b.Tasks {
			if tk.Target.URL != fmt.Sprintf("http://h/%d", i) || tk.Priority != i || tk.Queue != "batch" {
				t.Errorf("tasks[%d] = %+v: not in input order", i, tk)
			}
		}

		// One invalid task: 422 naming it, and nothing stored.
		bad := append([]string(nil), items...)
		bad[3] = `{"target":{"url":"ftp://h/3"}}`
		p := wantField(t, e.do("POST", "/v1/queues/atomic/tasks", `{"tasks":[`+strings.Join(bad, ",")+`]}`), "tasks[3].target.url")
		if !strings.HasPrefix(p.Detail, "tasks[3].target.url: ") {
			t.Errorf("detail %q does not name the field first", p.Detail)
		}
		wantProblem(t, e.do("GET", "/v1/queues/atomic", ""), http.StatusNotFound)
		wantProblem(t, e.do("GET", "/v1/queues/atomic/tasks", ""), http.StatusNotFound)

		// Several invalid tasks: every one is named.
		bad[1] = `{"target":{"url":"http://h/"},"priority":12}`
		bad[4] = `"not a task"`
		p = wantField(t, e.do("POST", "/v1/queues/atomic/tasks", `{"tasks":[`+strings.Join(bad, ",")+`]}`), "tasks[1].priority")
		wantField(t, e.do("POST", "/v1/queues/atomic/tasks", `{"tasks":[`+strings.Join(bad, ",")+`]}`), "tasks[4]")
		if len(p.Errors) != 3 {
			t.Errorf("errors = %+v, want 3", p.Errors)
		}

		// Size of the batch.
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[]}`), "tasks")
		many := strings.Repeat(`{"target":{"url":"http://h/"}},`, 11)
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[`+strings.TrimSuffix(many, ",")+`]}`), "tasks")
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":{}}`), "tasks")
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":null}`), "tasks")
		// A batch body holds only "tasks".
		wantField(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[{"target":{"url":"http://h/"}}],"priority":1}`), "priority")
	})
}

// TestKeyRoles: a read key reads, a write key also changes things, and only
// an admin key sees target header values (?view=full); a key without the
// role gets a 403 problem that names the roles, never the key.
func TestKeyRoles(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		tk := e.enqueueOne("roles", `{"target":{"url":"http://h/","headers":{"Authorization":"Bearer receiver-secret","X-Trace":"t1"}}}`)
		reader, writer := []string{"Authorization", "Bearer " + readerKey}, []string{"Authorization", "Bearer " + writerKey}
		// Every route: reads pass for every role, changes need write.
		for _, rq := range storeRequests() {
			method, target, body := rq[0], rq[1], rq[2]
			if method == "GET" {
				if r := e.do(method, target, body, reader...); r.Code == http.StatusForbidden || r.Code == http.StatusUnauthorized {
					t.Errorf("read key: %s %s = %d", method, target, r.Code)
				}
				continue
			}
			r := e.do(method, target, body, reader...)
			p := wantProblem(t, r, http.StatusForbidden, "read role")
			if !strings.Contains(p.Detail, "needs write") || strings.Contains(p.Detail, readerKey) {
				t.Errorf("read key: %s %s: detail %q", method, target, p.Detail)
			}
			if r := e.do(method, target, body, writer...); r.Code == http.StatusForbidden || r.Code == http.StatusUnauthorized {
				t.Errorf("write key: %s %s = %d", method, target, r.Code)
			}
		}
		// A read key changed nothing.
		if got := decode[taskJSON](t, want(t, e.do("GET", "/v1/tasks/"+tk.ID, "", reader...), 200)); got.State != task.Available {
			t.Errorf("after the read key's refused cancel: %s", got.State)
		}
		want(t, e.do("POST", "/v1/tasks/"+tk.ID+"/cancel", "", writer...), 200)

		// Redacted for everyone by default, full for admin only.
		for _, who := range [][]string{reader, writer, {"Authorization", "Bearer " + testKey}} {
			for _, target := range []string{"/v1/tasks/" + tk.ID, "/v1/tasks/" + tk.ID + "?view=redacted", "/v1/queues/roles/tasks", "/v1/queues/roles/tasks?view=redacted"} {
				r := want(t, e.do("GET", target, "", who...), 200)
				if strings.Contains(string(r.Body), "receiver-secret") || strings.Contains(string(r.Body), "t1") ||
					!strings.Contains(string(r.Body), `"Authorization":"[redacted]"`) {
					t.Errorf("%s: header values not redacted: %s", target, r.Body)
				}
			}
		}
		for _, target := range []string{"/v1/tasks/" + tk.ID + "?view=full", "/v1/queues/roles/tasks?view=full"} {
			for _, who := range [][]string{reader, writer} {
				p := wantProblem(t, e.do("GET", target, "", who...), http.StatusForbidden, "view=full")
				if !strings.Contains(p.Detail, "needs admin") {
					t.Errorf("%s: detail %q", target, p.Detail)
				}
			}
			r := want(t, e.do("GET", target, ""), 200)
			if !strings.Contains(string(r.Body), `"Authorization":"Bearer receiver-secret"`) || !strings.Contains(string(r.Body), `"X-Trace":"t1"`) {
				t.Errorf("%s as admin: %s", target, r.Body)
			}
		}
		// Enqueue, cancel and retry answers are redacted too.
		for _, r := range []result{
			e.do("POST", "/v1/queues/roles/tasks", `{"target":{"url":"http://h/","headers":{"X-Key":"k-secret"}}}`),
			e.do("POST", "/v1/tasks/"+tk.ID+"/retry", ""),
		} {
			if strings.Contains(string(r.Body), "k-secret") || strings.Contains(string(r.Body), "receiver-secret") {
				t.Errorf("answer shows a header value: %s", r.Body)
			}
		}
		wantProblem(t, e.do("GET", "/v1/tasks/"+tk.ID+"?view=everything", ""), http.StatusUnprocessableEntity, "view")
		wantProblem(t, e.do("GET", "/v1/tasks/"+tk.ID+"?view=full&view=full", ""), http.StatusUnprocessableEntity, "view")
		wantProblem(t, e.do("GET", "/v1/queues/roles/tasks?view=everything", ""), http.StatusUnprocessableEntity, "view")
		// Without keys (loopback) every request acts as admin.
		open := newEnv(t, st, func(c *Config) { c.APIKeys = nil })
		if r := want(t, open.do("GET", "/v1/tasks/"+tk.ID+"?view=full", "", "Authorization", ""), 200); !strings.Contains(string(r.Body), "receiver-secret") {
			t.Errorf("no keys, view=full: %s", r.Body)
		}
		// Header values never reach the log.
		if strings.Contains(e.logs.String(), "receiver-secret") || strings.Contains(e.logs.String(), "k-secret") {
			t.Error("a target header value is in the log")
		}
	})
}

func TestAuth(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		r := e.do("GET", "/v1/queues", "", "Authorization", "")
		wantProblem(t, r, http.StatusUnauthorized, "Authorization: Bearer")
		if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("WWW-Authenticate = %q", r.Header.Get("WWW-Authenticate"))
		}
		for _, bad := range []string{"Bearer wrong", "Bearer " + testKey + "x", "Bearer " + testKey[:5], "Basic " + testKey, testKey, "Bearer", "Bearer  "} {
			r := e.do("GET", "/v1/queues", "", "Authorization", bad)
			want(t, r, http.StatusUnauthorized)
			if r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%q: no WWW-Authenticate", bad)
			}
		}
		for _, good := range []string{"Bearer " + testKey, "bearer " + testKey, "Bearer second-key"} {
			want(t, e.do("GET", "/v1/queues", "", "Authorization", good), http.StatusOK)
		}
		// Every /v1 route is protected, before any validation or store access.
		for _, rt := range routes() {
			method, path, _ := strings.Cut(rt.pattern, " ")
			path = concretePath(path)
			r := e.do(method, path, "", "Authorization", "")
			if rt.role == auth.None {
				want(t, r, http.StatusOK)
			} else {
				want(t, r, http.StatusUnauthorized)
			}
		}
		// The key never reaches the log.
		if strings.Contains(e.logs.String(), testKey) || strings.Contains(e.logs.String(), "second-key") {
			t.Error("an API key is in the log")
		}

		// No keys: no auth.
		open := newEnv(t, st, func(c *Config) { c.APIKeys = nil })
		want(t, open.do("GET", "/v1/queues", "", "Authorization", ""), http.StatusOK)
		want(t, open.do("GET", "/v1/queues", "", "Authorization", "Bearer anything"), http.StatusOK)
	})
}

func TestBodyLimits(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		const limit = 4096
		e := newEnv(t, st, func(c *Config) { c.MaxBodyBytes = limit })
		pad := func(n int) string { return `{"target":{"url":"http://h/"},"payload":"` + strings.Repeat("x", n) + `"}` }

		want(t, e.do("POST", "/v1/queues/q/tasks", pad(limit-100)), http.StatusCreated)
		wantProblem(t, e.do("POST", "/v1/queues/q/tasks", pad(limit)), http.StatusRequestEntityTooLarge, "4096")
		// A batch may be 10× the limit, each task at most the limit.
		items := strings.TrimSuffix(strings.Repeat(pad(3000)+",", 12), ",")
		want(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[`+items+`]}`), http.StatusCreated)
		wantProblem(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[`+pad(10)+`,`+pad(limit)+`]}`), http.StatusRequestEntityTooLarge, "tasks[1]")
		items = strings.TrimSuffix(strings.Repeat(pad(3000)+",", 14), ",")
		wantProblem(t, e.do("POST", "/v1/queues/q/tasks", `{"tasks":[`+items+`]}`), http.StatusRequestEntityTooLarge, "40960")
		// PATCH has the single limit.
		wantProblem(t, e.do("PATCH", "/v1/queues/q", `{"paused":true`+strings.Repeat(" ", limit)+`}`), http.StatusRequestEntityTooLarge)

		// Without a Content-Length (chunked), the reader still stops at the limit.
		req := e.newReq("POST", "/v1/queues/q/tasks", pad(2*limit))
		req.ContentLength = -1
		wantProblem(t, e.doReq(req), http.StatusRequestEntityTooLarge)
		req = e.newReq("POST", "/v1/queues/q/tasks", pad(100))
		req.ContentLength = -1
		want(t, e.doReq(req), http.StatusCreated)
	})
}

func TestPagination(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		var items []string
		for i := range 250 {
			items = append(items, fmt.Sprintf(`{"target":{"url":"http://h/%d"}}`, i))
		}
		created := decode[batchJSON](t, want(t, e.do("POST", "/v1/queues/pages/tasks", `{"tasks":[`+strings.Join(items, ",")+`]}`), http.StatusCreated))

		var got []taskJSON
		var sizes []int
		cursor := ""
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatal("pagination does not end")
			}
			l := decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/pages/tasks?limit=100&cursor="+cursor, ""), http.StatusOK))
			got = append(got, l.Tasks...)
			sizes = append(sizes, len(l.Tasks))
			if l.NextCursor == "" {
				break
			}
			cursor = l.NextCursor
		}
		if fmt.Sprint(sizes) != "[100 100 50]" {
			t.Errorf("page sizes %v, want [100 100 50]", sizes)
		}
		if len(got) != 250 {
			t.Fatalf("listed %d tasks, want 250", len(got))
		}
		for i := range got {
			if got[i].ID != created.Tasks[i].ID {
				t.Fatalf("task %d: listed %s, created %s (not in id order, or lost)", i, got[i].ID, created.Tasks[i].ID)
			}
		}

		// Default limit 100; a full last page has a cursor and an empty successor.
		l := decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/pages/tasks", ""), http.StatusOK))
		if len(l.Tasks) != 100 || l.NextCursor == "" {
			t.Errorf("default page: %d tasks, cursor %q", len(l.Tasks), l.NextCursor)
		}
		l = decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/pages/tasks?limit=250", ""), http.StatusOK))
		l = decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/pages/tasks?limit=250&cursor="+l.NextCursor, ""), http.StatusOK))
		if len(l.Tasks) != 0 || l.NextCursor != "" {
			t.Errorf("after the end: %d tasks, cursor %q", len(l.Tasks), l.NextCursor)
		}
		if !strings.Contains(string(e.do("GET", "/v1/queues/pages/tasks?limit=250&cursor="+encodeCursor(got[249].ID), "").Body), `"tasks":[]`) {
			t.Error("an empty page is not \"tasks\":[]")
		}

		// State filter.
		if _, err := st.CancelTask(context.Background(), got[7].ID); err != nil {
			t.Fatal(err)
		}
		l = decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/pages/tasks?state=cancelled", ""), http.StatusOK))
		if len(l.Tasks) != 1 || l.Tasks[0].ID != got[7].ID || l.NextCursor != "" {
			t.Errorf("state=cancelled: %+v", l)
		}
		l = decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/pages/tasks?state=available&limit=1000", ""), http.StatusOK))
		if len(l.Tasks) != 249 {
			t.Errorf("state=available: %d tasks", len(l.Tasks))
		}
		// An existing queue with nothing in that state: empty, not 404.
		l = decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/pages/tasks?state=failed", ""), http.StatusOK))
		if len(l.Tasks) != 0 {
			t.Errorf("state=failed: %d tasks", len(l.Tasks))
		}

		// Invalid parameters.
		for q, field := range map[string]string{
			"limit=0": "limit", "limit=1001": "limit", "limit=abc": "limit", "limit=": "limit", "limit=-1": "limit",
			"state=done": "state", "cursor=!!!": "cursor", "cursor=" + encodeCursor("x"): "cursor",
			"cursor=" + strings.Repeat("A", 48): "cursor", "lmit=5": "lmit", "limit=1&limit=2": "limit",
		} {
			wantField(t, e.do("GET", "/v1/queues/pages/tasks?"+q, ""), field)
		}
		wantProblem(t, e.do("GET", "/v1/queues/pages/tasks?limit=%zz", ""), http.StatusBadRequest, "query")
		wantProblem(t, e.do("GET", "/v1/queues/nope/tasks", ""), http.StatusNotFound, "nope")
		wantProblem(t, e.do("GET", "/v1/queues/-bad/tasks", ""), http.StatusNotFound)
	})
}

// lease takes every due task through the real store, as a worker would.
func lease(t *testing.T, st store.Store) []store.Lease {
	t.Helper()
	ls, err := st.Lease(context.Background(), store.LeaseRequest{Limit: 100, Shared: 100, LeaseFor: time.Minute})
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	return ls
}

func complete(t *testing.T, st store.Store, l store.Lease, o store.Outcome, status int, msg string) {
	t.Helper()
	ok, err := st.Complete(context.Background(), []store.Completion{{LeaseRef: store.LeaseRef{TaskID: l.Task.ID, Token: l.Token}, Outcome: o, LastStatus: status, LastError: msg}})
	if err != nil || !ok[0] {
		t.Fatalf("complete: %v %v", ok, err)
	}
}

func TestCancelRetry(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		a := e.enqueueOne("q", `{"target":{"url":"http://h/a"},"priority":0}`)
		b := e.enqueueOne("q", `{"target":{"url":"http://h/b"},"priority":1}`)
		c := e.enqueueOne("q", `{"target":{"url":"http://h/c"},"priority":2}`)
		d := e.enqueueOne("q", `{"target":{"url":"http://h/d"},"priority":3,"delay":"1h"}`)

		// Make a running, b succeeded, c failed (b and c through real leases).
		ls := lease(t, st)
		if len(ls) != 3 {
			t.Fatalf("leased %d tasks, want 3", len(ls))
		}
		for _, l := range ls {
			switch l.Task.ID {
			case b.ID:
				complete(t, st, l, store.Succeeded, 200, "")
			case c.ID:
				complete(t, st, l, store.Fail, 400, "HTTP 400")
			}
		}

		// Cancel a scheduled task.
		r := decode[taskJSON](t, want(t, e.do("POST", "/v1/tasks/"+d.ID+"/cancel", ""), http.StatusOK))
		if r.State != task.Cancelled || r.FinishedAt == nil {
			t.Errorf("cancelled: %+v", r)
		}
		// Cancel a running task.
		r = decode[taskJSON](t, want(t, e.do("POST", "/v1/tasks/"+a.ID+"/cancel", ""), http.StatusOK))
		if r.State != task.Cancelled {
			t.Errorf("cancel running: %s", r.State)
		}
		// Finished tasks: 409 naming the state.
		wantProblem(t, e.do("POST", "/v1/tasks/"+d.ID+"/cancel", ""), http.StatusConflict, "cancelled", "unfinished")
		wantProblem(t, e.do("POST", "/v1/tasks/"+b.ID+"/cancel", ""), http.StatusConflict, "succeeded")
		wantProblem(t, e.do("POST", "/v1/tasks/"+c.ID+"/cancel", ""), http.StatusConflict, "failed")

		// Retry failed and cancelled tasks.
		failed := decode[taskJSON](t, want(t, e.do("GET", "/v1/tasks/"+c.ID, ""), http.StatusOK))
		if failed.State != task.Failed || failed.LastStatus == nil || *failed.LastStatus != 400 || failed.LastError == nil || *failed.LastError != "HTTP 400" || failed.FinishedAt == nil || failed.Attempt != 1 {
			t.Errorf("failed task: %+v", failed)
		}
		r = decode[taskJSON](t, want(t, e.do("POST", "/v1/tasks/"+c.ID+"/retry", ""), http.StatusOK))
		if r.State != task.Available || r.Attempt != 0 || r.FinishedAt != nil || r.LastError == nil {
			t.Errorf("retried failed: %+v", r)
		}
		r = decode[taskJSON](t, want(t, e.do("POST", "/v1/tasks/"+d.ID+"/retry", ""), http.StatusOK))
		if r.State != task.Available {
			t.Errorf("retried cancelled: %+v", r)
		}
		// Other states: 409.
		wantProblem(t, e.do("POST", "/v1/tasks/"+b.ID+"/retry", ""), http.StatusConflict, "succeeded", "failed or cancelled")
		wantProblem(t, e.do("POST", "/v1/tasks/"+c.ID+"/retry", ""), http.StatusConflict, "available")

		// Unknown ids: 404.
		for _, op := range []string{"cancel", "retry"} {
			wantProblem(t, e.do("POST", "/v1/tasks/01890a5d-ac96-774b-bcce-b302099a8057/"+op, ""), http.StatusNotFound)
			wantProblem(t, e.do("POST", "/v1/tasks/zzz/"+op, ""), http.StatusNotFound)
			// Wrong method on an existing route: 405 with Allow.
			r := e.do("GET", "/v1/tasks/"+a.ID+"/"+op, "")
			wantProblem(t, r, http.StatusMethodNotAllowed, "POST")
			if r.Header.Get("Allow") != "POST" {
				t.Errorf("Allow = %q", r.Header.Get("Allow"))
			}
		}
	})
}

func TestQueues(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		r := want(t, e.do("GET", "/v1/queues", ""), http.StatusOK)
		if strings.TrimSpace(string(r.Body)) != `{"queues":[]}` {
			t.Errorf("no queues: %s", r.Body)
		}
		e.enqueueOne("b-queue", `{"target":{"url":"http://h/"}}`)
		e.enqueueOne("b-queue", `{"target":{"url":"http://h/"},"delay":"1m"}`)
		e.enqueueOne("a.queue_1", `{"target":{"url":"http://h/"}}`)

		ql := decode[queueListJSON](t, want(t, e.do("GET", "/v1/queues", ""), http.StatusOK))
		if len(ql.Queues) != 2 || ql.Queues[0].Name != "a.queue_1" || ql.Queues[1].Name != "b-queue" {
			t.Fatalf("queues: %+v", ql)
		}
		q := decode[queueJSON](t, want(t, e.do("GET", "/v1/queues/b-queue", ""), http.StatusOK))
		if q.Concurrency != 0 || q.RateLimit != 0 || q.MaxAttempts != task.DefaultMaxAttempts || q.Timeout != "30s" || q.Paused ||
			q.Weight != 1 || !slices.Equal(q.RetryStatuses, []string{"408", "425", "429", "500-599", "timeout", "connection"}) ||
			q.Counts[task.Available] != 1 || q.Counts[task.Scheduled] != 1 || len(q.Counts) != len(task.States) {
			t.Errorf("queue: %+v", q)
		}

		// PATCH each field, and all at once.
		for _, c := range []struct {
			body  string
			check func(q queueJSON) bool
		}{
			{`{"concurrency":4}`, func(q queueJSON) bool { return q.Concurrency == 4 }},
			{`{"rate_limit":2.5}`, func(q queueJSON) bool { return q.RateLimit == 2.5 && q.Concurrency == 4 }},
			{`{"max_attempts":3}`, func(q queueJSON) bool { return q.MaxAttempts == 3 }},
			{`{"timeout":"1m30s"}`, func(q queueJSON) bool { return q.Timeout == "1m30s" }},
			{`{"paused":true}`, func(q queueJSON) bool { return q.Paused }},
			{`{"paused":false,"concurrency":0}`, func(q queueJSON) bool { return !q.Paused && q.Concurrency == 0 && q.MaxAttempts == 3 }},
			{`{"rate_limit":0,"max_attempts":null}`, func(q queueJSON) bool { return q.RateLimit == 0 && q.MaxAttempts == 3 && q.Timeout == "1m30s" }},
			{`{"concurrency":1000000,"rate_limit":1000000,"max_attempts":1000,"timeout":"30m","paused":false}`, func(q queueJSON) bool {
				return q.Concurrency == 1000000 && q.RateLimit == 1000000 && q.MaxAttempts == 1000 && q.Timeout == "30m0s"
			}},
			{`{"max_attempts":3,"concurrency":0,"rate_limit":0,"timeout":"1m30s"}`, func(q queueJSON) bool { return q.MaxAttempts == 3 }},
			{`{"weight":3}`, func(q queueJSON) bool {
				return q.Weight == 3 && slices.Equal(q.RetryStatuses, task.DefaultRetryStatuses.Tokens())
			}},
			{`{"retry_statuses":["503","timeout","500-502"," 429 "]}`, func(q queueJSON) bool {
				return q.Weight == 3 && slices.Equal(q.RetryStatuses, []string{"429", "500-503", "timeout"})
			}},
			{`{"retry_statuses":[]}`, func(q queueJSON) bool { return q.RetryStatuses != nil && len(q.RetryStatuses) == 0 }},
			{`{"weight":1000,"retry_statuses":["408","425","429","500-599","timeout","connection"]}`, func(q queueJSON) bool {
				return q.Weight == 1000 && slices.Equal(q.RetryStatuses, task.DefaultRetryStatuses.Tokens())
			}},
			{`{"weight":1}`, func(q queueJSON) bool { return q.Weight == 1 }},
		} {
			q := decode[queueJSON](t, want(t, e.do("PATCH", "/v1/queues/b-queue", c.body), http.StatusOK))
			if !c.check(q) {
				t.Errorf("PATCH %s → %+v", c.body, q)
			}
		}
		// merge-patch+json is JSON too.
		want(t, e.do("PATCH", "/v1/queues/b-queue", `{"concurrency":2}`, "Content-Type", "application/merge-patch+json"), http.StatusOK)
		// The queue default applies to new tasks.
		if tk := e.enqueueOne("b-queue", `{"target":{"url":"http://h/"}}`); tk.MaxAttempts != 3 || tk.Timeout != "1m30s" {
			t.Errorf("queue defaults not applied: max_attempts %d timeout %s", tk.MaxAttempts, tk.Timeout)
		}

		// Validation.
		for body, field := range map[string]string{
			`{"concurrency":-1}`: "concurrency", `{"concurrency":1.5}`: "concurrency", `{"concurrency":"4"}`: "concurrency",
			`{"concurrency":1e400}`: "concurrency", `{"concurrency":99999999999999999999999}`: "concurrency",
			`{"rate_limit":-0.1}`: "rate_limit", `{"rate_limit":1e400}`: "rate_limit", `{"rate_limit":true}`: "rate_limit",
			`{"max_attempts":0}`: "max_attempts", `{"max_attempts":1001}`: "max_attempts",
			`{"timeout":"0s"}`: "timeout", `{"timeout":"-1s"}`: "timeout", `{"timeout":"31m"}`: "timeout", `{"timeout":30}`: "timeout", `{"timeout":"soon"}`: "timeout",
			`{"paused":"yes"}`: "paused", `{"paused":1}`: "paused",
			`{"pasued":true}`: "pasued", `{"paused":true,"paused":false}`: "paused",
			`{"weight":0}`: "weight", `{"weight":1001}`: "weight", `{"weight":1.5}`: "weight", `{"weight":"2"}`: "weight",
			`{"retry_statuses":"429"}`: "retry_statuses", `{"retry_statuses":{"a":1}}`: "retry_statuses",
			`{"retry_statuses":[429]}`: "retry_statuses[0]", `{"retry_statuses":["429","200"]}`: "retry_statuses[1]",
			`{"retry_statuses":["600"]}`: "retry_statuses[0]", `{"retry_statuses":["599-500"]}`: "retry_statuses[0]",
			`{"retry_statuses":["429,500"]}`: "retry_statuses[0]", `{"retry_statuses":[""]}`: "retry_statuses[0]",
			`{"retry_statuses":["sometimes"]}`: "retry_statuses[0]",
		} {
			wantField(t, e.do("PATCH", "/v1/queues/b-queue", body), field)
		}
		wantProblem(t, e.do("PATCH", "/v1/queues/b-queue", `{}`), http.StatusUnprocessableEntity, "at least one")
		wantProblem(t, e.do("PATCH", "/v1/queues/b-queue", `{"paused":null}`), http.StatusUnprocessableEntity, "at least one")
		wantProblem(t, e.do("PATCH", "/v1/queues/b-queue", `[]`), http.StatusUnprocessableEntity, "object")
		wantProblem(t, e.do("PATCH", "/v1/queues/b-queue", ``), http.StatusBadRequest, "empty")
		wantProblem(t, e.do("PATCH", "/v1/queues/b-queue", `{"paused":true`), http.StatusBadRequest, "malformed")
		// curl -d's default type is read as JSON; a real form body is not JSON.
		wantProblem(t, e.do("PATCH", "/v1/queues/b-queue", `paused=true`, "Content-Type", "application/x-www-form-urlencoded"), http.StatusBadRequest, "malformed JSON")
		wantField(t, e.do("PATCH", "/v1/queues/-bad", `{"paused":true}`), "queue")
		q = decode[queueJSON](t, want(t, e.do("GET", "/v1/queues/b-queue", ""), http.StatusOK))
		if q.Concurrency != 2 || q.Paused {
			t.Errorf("a refused PATCH changed the queue: %+v", q)
		}

		// PATCH creates a missing queue.
		nq := decode[queueJSON](t, want(t, e.do("PATCH", "/v1/queues/fresh", `{"paused":true}`), http.StatusOK))
		if !nq.Paused || nq.Name != "fresh" || nq.MaxAttempts != task.DefaultMaxAttempts {
			t.Errorf("new queue: %+v", nq)
		}

		// pause and resume.
		p := decode[queueJSON](t, want(t, e.do("POST", "/v1/queues/a.queue_1/pause", ""), http.StatusOK))
		if !p.Paused {
			t.Error("pause did not pause")
		}
		p = decode[queueJSON](t, want(t, e.do("POST", "/v1/queues/a.queue_1/resume", ""), http.StatusOK))
		if p.Paused {
			t.Error("resume did not resume")
		}
		wantField(t, e.do("POST", "/v1/queues/bad%20name/pause", ""), "queue")
		wantField(t, e.do("POST", "/v1/queues/"+strings.Repeat("q", 129)+"/resume", ""), "queue")

		// Unknown queues.
		wantProblem(t, e.do("GET", "/v1/queues/missing", ""), http.StatusNotFound, "missing")
		wantProblem(t, e.do("GET", "/v1/queues/a%2Fb", ""), http.StatusNotFound)
		r = e.do("DELETE", "/v1/queues/b-queue", "")
		wantProblem(t, r, http.StatusMethodNotAllowed)
		if allow := r.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "PATCH") {
			t.Errorf("Allow = %q", allow)
		}
	})
}

// TestJSONShapes checks the JSON numbers and nulls the store hands back
// survive the round trip (a float rate limit, a null last_error).
func TestJSONShapes(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		tk := e.enqueueOne("q", `{"target":{"url":"http://h/"}}`)
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(e.do("GET", "/v1/tasks/"+tk.ID, "").Body, &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"last_error", "last_status", "finished_at"} {
			if string(raw[k]) != "null" {
				t.Errorf("%s = %s, want null", k, raw[k])
			}
		}
		if _, ok := raw["idempotency_key"]; ok {
			t.Error("idempotency_key is present without a key")
		}
		if _, ok := raw["payload"]; ok {
			t.Error("the payload is echoed")
		}
	})
}
