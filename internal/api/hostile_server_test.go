package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// moreHostileCases extends hostileCases with what issue 6 item 5 names and
// the table did not yet hold: far-future and malformed run_at, enormous
// and oddly spelled numbers, batch shapes, byte-order marks and NULs,
// oversized keys and member counts.
func moreHostileCases() []hostileCase {
	farRunAt := time.Now().Add(task.MaxScheduleAhead + time.Hour).UTC().Format(time.RFC3339)
	batch := func(n int) string {
		return `{"tasks":[` + strings.TrimSuffix(strings.Repeat(withTask("")+",", n), ",") + `]}`
	}
	return []hostileCase{
		// run_at.
		{name: "run_at year 9999", body: withTask(`"run_at":"9999-12-31T23:59:59Z"`), code: 422, field: "run_at"},
		{name: "run_at year 10000", body: withTask(`"run_at":"10000-01-01T00:00:00Z"`), code: 422, field: "run_at"},
		{name: "run_at negative year", body: withTask(`"run_at":"-0001-01-01T00:00:00Z"`), code: 422, field: "run_at"},
		{name: "run_at just past the horizon", body: withTask(`"run_at":"` + farRunAt + `"`), code: 422, field: "run_at"},
		{name: "run_at far offset", body: withTask(`"run_at":"2030-01-01T00:00:00+99:00"`), code: 422, field: "run_at"},
		{name: "run_at leap second", body: withTask(`"run_at":"2030-06-30T23:59:60Z"`), code: 422, field: "run_at"},
		{name: "run_at no zone", body: withTask(`"run_at":"2030-01-01T00:00:00"`), code: 422, field: "run_at"},
		{name: "run_at unix seconds string", body: withTask(`"run_at":"1893456000"`), code: 422, field: "run_at"},
		{name: "run_at object", body: withTask(`"run_at":{"$date":1}`), code: 422, field: "run_at"},
		{name: "run_at year 1 is now", body: withTask(`"run_at":"0001-01-01T00:00:00Z"`), code: 201},

		// Enormous, negative and oddly spelled numbers.
		{name: "max_attempts 1e400", body: withTask(`"max_attempts":1e400`), code: 422, field: "max_attempts"},
		{name: "max_attempts int64 overflow", body: withTask(`"max_attempts":9223372036854775808`), code: 422, field: "max_attempts"},
		{name: "max_attempts int64 min", body: withTask(`"max_attempts":-9223372036854775808`), code: 422, field: "max_attempts"},
		{name: "max_attempts 3000 digits", body: withTask(`"max_attempts":` + strings.Repeat("9", 3000)), code: 422, field: "max_attempts"},
		{name: "priority -0 is 0", body: withTask(`"priority":-0`), code: 201},
		{name: "priority negative exponent", body: withTask(`"priority":5e-1`), code: 422, field: "priority"},
		{name: "delay int64 max", body: withTask(`"delay":"9223372036854775807ns"`), code: 422, field: "delay"},
		{name: "delay exponent", body: withTask(`"delay":"1e3s"`), code: 422, field: "delay"},
		{name: "timeout int64 min", body: withTask(`"timeout":"-9223372036854775808ns"`), code: 422, field: "timeout"},

		// Batch shapes.
		{name: "tasks object", body: `{"tasks":{}}`, code: 422, field: "tasks"},
		{name: "tasks string", body: `{"tasks":"x"}`, code: 422, field: "tasks"},
		{name: "tasks empty", body: `{"tasks":[]}`, code: 422, field: "tasks"},
		{name: "tasks over the limit", body: batch(DefaultMaxBatch + 1), code: 422, field: "tasks"},
		{name: "tasks nested batch", body: `{"tasks":[` + batch(1) + `]}`, code: 422, field: "tasks[0].tasks"},
		{name: "tasks with header key", body: batch(1), hdr: []string{"Idempotency-Key", "k"}, code: 422, field: "Idempotency-Key"},

		// Bytes around and inside the JSON.
		{name: "byte-order mark", body: "\ufeff" + withTask(""), code: 400},
		{name: "NUL after the value", body: withTask("") + "\x00", code: 400},
		{name: "UTF-16 body", body: utf16le(withTask("")), code: 400},
		{name: "comment", body: `{/* c */"target":{"url":"http://h/"}}`, code: 400},
		{name: "escaped NUL payload", body: withTask(`"payload":"\u0000"`), code: 201},
		{name: "escaped NUL payload key", body: withTask(`"payload":{"\u0000":"\u0000"}`), code: 201},
		{name: "escaped NUL idempotency key", body: withTask(`"idempotency_key":"a\u0000b"`), code: 422, field: "idempotency_key"},
		{name: "escaped NUL content type", body: withTask(`"content_type":"text/plain\u0000"`), code: 422, field: "content_type"},
		{name: "escaped NUL header name", body: withTarget(`"url":"http://h/","headers":{"X\u0000A":"v"}`), code: 422, field: "target.headers[\"X\\x00A\"]"},
		{name: "escaped CRLF header name", body: withTarget(`"url":"http://h/","headers":{"X-A\r\nX-B":"v"}`), code: 422, field: "target.headers[\"X-A\\r\\nX-B\"]"},
		{name: "escaped CRLF url", body: withTarget(`"url":"http://h/\r\n\r\nGET / HTTP/1.1"`), code: 422, field: "target.url"},
		{name: "header key not ASCII", body: withTask(""), hdr: []string{"Idempotency-Key", "clé"}, code: 422, field: "Idempotency-Key"},
		{name: "header key too long", body: withTask(""), hdr: []string{"Idempotency-Key", strings.Repeat("k", 256)}, code: 422, field: "Idempotency-Key"},

		// Size of keys and counts of members.
		{name: "huge unknown key", body: withTask(`"` + strings.Repeat("k", 200_000) + `":1`), code: 422},
		{name: "many unknown fields", body: withTask(manyFields(50_000)), code: 422},
		{name: "deep nesting near the body limit", body: withTask(`"payload":` + strings.Repeat("[", 400_000) + strings.Repeat("]", 400_000)), code: 400},
		{name: "deep nesting in target", body: withTarget(`"url":"http://h/","headers":` + strings.Repeat(`{"a":`, 10_001) + `1` + strings.Repeat("}", 10_001)), code: 400},

		// Queue names in the path.
		{name: "queue NUL", path: "/v1/queues/%00/tasks", body: withTask(""), code: 422, field: "queue"},
		{name: "queue not ASCII", path: "/v1/queues/caf%C3%A9/tasks", body: withTask(""), code: 422, field: "queue"},
		{name: "queue invalid UTF-8", path: "/v1/queues/%FF/tasks", body: withTask(""), code: 422, field: "queue"},
		{name: "queue dot dot", path: "/v1/queues/..%2Ftasks/tasks", body: withTask(""), code: 422, field: "queue"},
	}
}

func manyFields(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"f%d":%d`, i, i)
	}
	return b.String()
}

func utf16le(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
		b.WriteByte(0)
	}
	return b.String()
}

// TestMoreHostileInputs runs the extended table through the in-process
// handler, where every response is also checked against openapi.json.
func TestMoreHostileInputs(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		for _, c := range moreHostileCases() {
			checkHostile(t, c, func(path, body string, hdr ...string) (int, http.Header, []byte) {
				r := e.do("POST", path, body, hdr...)
				return r.Code, r.Header, r.Body
			})
		}
	})
}

// checkHostile sends one case and checks its answer: the table's status;
// for a refusal, a problem+json that says what is wrong (naming the field
// for a 422) and is not much larger than what the client sent.
func checkHostile(t *testing.T, c hostileCase, send func(path, body string, hdr ...string) (int, http.Header, []byte)) {
	t.Helper()
	path := c.path
	if path == "" {
		path = "/v1/queues/q/tasks"
	}
	code, hdr, body := send(path, c.body, c.hdr...)
	if code != c.code {
		t.Errorf("%s: status %d, want %d; body: %.300s", c.name, code, c.code, body)
		return
	}
	if code < 400 {
		return
	}
	if mt, _, _ := mime.ParseMediaType(hdr.Get("Content-Type")); mt != "application/problem+json" {
		t.Errorf("%s: %d as %q, want application/problem+json", c.name, code, mt)
	}
	var p problem
	if err := json.Unmarshal(body, &p); err != nil || p.Status != code || p.Detail == "" {
		t.Errorf("%s: not a problem with a detail (%v): %.300s", c.name, err, body)
	}
	if c.code == 422 && c.field != "" {
		found := false
		for _, fe := range p.Errors {
			found = found || fe.Field == c.field
		}
		if !found {
			t.Errorf("%s: 422 does not name %q: %.500s", c.name, c.field, body)
		}
	}
	// A refusal must not amplify the request without bound. (Values are
	// shortened when echoed; a field name is echoed whole, in the detail
	// and in errors[].field, so a huge unknown key comes back twice.)
	if len(body) > 2*len(c.body)+4<<10 {
		t.Errorf("%s: a %d-byte problem for a %d-byte request", c.name, len(body), len(c.body))
	}
}

// TestHostileRequestsLeaveAcceptedTasksAlone goes through a real HTTP
// server on each store. It first enqueues a variety of valid tasks and
// records them; then sends every hostile request (both tables, plus
// oversized and lying bodies and malformed HTTP on raw connections); then
// checks that each recorded task is unchanged (same id, state, payload
// bytes and every other field), that only the hostile cases the tables
// accept were stored, and that the server still serves reads, writes and
// idempotent replays.
func TestHostileRequestsLeaveAcceptedTasksAlone(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		h, err := New(Config{Store: st, APIKeys: []auth.Key{{Secret: testKey, Role: auth.Admin}}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		c := &wireClient{t: t, base: srv.URL, http: srv.Client()}
		ctx := context.Background()

		// 1. Tasks accepted before the hostile traffic.
		before := []string{
			`{"target":{"url":"https://example.com/a","headers":{"X-Token":"t"}},"payload":{"n":1,"s":"\u00e9"}}`,
			`{"target":{"url":"https://example.com/b","method":"PUT"},"payload_base64":"AAEC/w==","content_type":"application/octet-stream"}`,
			`{"target":{"url":"https://example.com/c"},"delay":"1h","priority":0,"max_attempts":3,"timeout":"10s"}`,
			`{"target":{"url":"https://example.com/d"},"idempotency_key":"before-1","payload":[1,2,3]}`,
			`{"target":{"url":"https://example.com/e"},"run_at":"` + time.Now().Add(48*time.Hour).UTC().Format(time.RFC3339) + `"}`,
		}
		var ids []string
		for _, b := range before {
			ids = append(ids, c.enqueue("q", b).ID)
		}
		for _, tk := range c.enqueueBatch("other", `{"tasks":[`+strings.Join(before[:3], ",")+`]}`) {
			ids = append(ids, tk.ID)
		}
		// One cancelled, so a final state is in the set too.
		c.want("POST", "/v1/tasks/"+ids[2]+"/cancel", "", 200)
		type snapshot struct {
			api     map[string]any
			payload []byte
			stored  task.Task
		}
		snaps := map[string]snapshot{}
		for _, id := range ids {
			stored, err := st.GetTask(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			snaps[id] = snapshot{api: c.getJSON("/v1/tasks/" + id), payload: stored.Payload, stored: stored}
		}
		qBefore := len(c.list("q"))

		// 2. The hostile requests, over the wire.
		accepted := 0
		for _, hc := range append(hostileCases(), moreHostileCases()...) {
			checkHostile(t, hc, func(path, body string, hdr ...string) (int, http.Header, []byte) {
				return c.do("POST", path, body, hdr...)
			})
			if hc.code == 201 && (hc.path == "" || hc.path == "/v1/queues/q/tasks") {
				accepted++
			}
		}
		c.oversized()
		accepted += c.malformedHTTP(srv.Listener.Addr().String())

		// 3. Nothing accepted before was touched.
		for _, id := range ids {
			s := snaps[id]
			if got := c.getJSON("/v1/tasks/" + id); !reflect.DeepEqual(got, s.api) {
				t.Errorf("task %s changed:\n before %v\n after  %v", id, s.api, got)
			}
			stored, err := st.GetTask(ctx, id)
			if err != nil {
				t.Fatalf("task %s: %v", id, err)
			}
			if !bytes.Equal(stored.Payload, s.payload) || stored.State != s.stored.State || stored.Attempt != s.stored.Attempt ||
				!stored.RunAt.Equal(s.stored.RunAt) || stored.IdempotencyKey != s.stored.IdempotencyKey {
				t.Errorf("stored task %s changed: %+v, was %+v", id, stored, s.stored)
			}
		}
		if n := len(c.list("q")); n != qBefore+accepted {
			t.Errorf("queue q holds %d tasks; want %d before + %d accepted hostile cases", n, qBefore, accepted)
		}
		if n := len(c.list("other")); n != 3 {
			t.Errorf("queue other holds %d tasks, want 3", n)
		}

		// 4. The server still serves: health, reads, a new task, a replay.
		c.want("GET", "/readyz", "", 200)
		c.want("GET", "/v1/queues", "", 200)
		c.want("GET", "/v1/queues/q", "", 200)
		c.enqueue("q", withTask(""))
		code, _, body := c.do("POST", "/v1/queues/q/tasks", `{"target":{"url":"https://example.com/d"},"idempotency_key":"before-1","payload":[1,2,3]}`)
		var replay taskJSON
		_ = json.Unmarshal(body, &replay)
		if code != 200 || replay.ID != ids[3] {
			t.Errorf("idempotent replay after the hostile traffic: %d %s, want 200 with %s", code, body, ids[3])
		}
	})
}

// wireClient talks to the API over a real connection.
type wireClient struct {
	t    *testing.T
	base string
	http *http.Client
}

func (c *wireClient) do(method, path, body string, hdr ...string) (int, http.Header, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
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
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	if resp.StatusCode >= 500 {
		c.t.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header, b
}

func (c *wireClient) want(method, path, body string, code int) []byte {
	c.t.Helper()
	got, _, b := c.do(method, path, body)
	if got != code {
		c.t.Fatalf("%s %s: %d, want %d: %s", method, path, got, code, b)
	}
	return b
}

func (c *wireClient) enqueue(queue, body string) taskJSON {
	c.t.Helper()
	var tk taskJSON
	if err := json.Unmarshal(c.want("POST", "/v1/queues/"+queue+"/tasks", body, 201), &tk); err != nil {
		c.t.Fatal(err)
	}
	return tk
}

func (c *wireClient) enqueueBatch(queue, body string) []taskJSON {
	c.t.Helper()
	var out struct {
		Tasks []taskJSON `json:"tasks"`
	}
	if err := json.Unmarshal(c.want("POST", "/v1/queues/"+queue+"/tasks", body, 201), &out); err != nil {
		c.t.Fatal(err)
	}
	return out.Tasks
}

func (c *wireClient) getJSON(path string) map[string]any {
	c.t.Helper()
	var m map[string]any
	if err := json.Unmarshal(c.want("GET", path, "", 200), &m); err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *wireClient) list(queue string) []taskJSON {
	c.t.Helper()
	var l taskListJSON
	if err := json.Unmarshal(c.want("GET", "/v1/queues/"+queue+"/tasks?limit=1000", "", 200), &l); err != nil {
		c.t.Fatal(err)
	}
	return l.Tasks
}

// oversized sends bodies far over the limits: streamed without a length,
// declared with a length the server must not wait for, and a batch over
// BatchBodyFactor × MaxBodyBytes. Each is a 413 problem.
func (c *wireClient) oversized() {
	c.t.Helper()
	check := func(name string, req *http.Request) {
		c.t.Helper()
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		resp, err := c.http.Do(req)
		if err != nil {
			c.t.Errorf("%s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); resp.StatusCode != http.StatusRequestEntityTooLarge || mt != "application/problem+json" {
			c.t.Errorf("%s: %d %q, want a 413 problem: %.200s", name, resp.StatusCode, mt, b)
		}
		if d := time.Since(start); d > 20*time.Second {
			c.t.Errorf("%s took %s", name, d)
		}
	}
	// 64 MiB of a JSON string, chunked: the server stops reading at the limit.
	huge := io.MultiReader(strings.NewReader(`{"target":{"url":"http://h/"},"payload":"`), &repeatReader{b: 'x', n: 64 << 20}, strings.NewReader(`"}`))
	req, _ := http.NewRequest("POST", c.base+"/v1/queues/q/tasks", huge)
	req.ContentLength = -1
	check("64 MiB chunked", req)
	// A batch just over 10 × 1 MiB.
	item := `{"target":{"url":"http://h/"},"payload":"` + strings.Repeat("x", 500<<10) + `"}`
	body := `{"tasks":[` + strings.TrimSuffix(strings.Repeat(item+",", 21), ",") + `]}`
	req, _ = http.NewRequest("POST", c.base+"/v1/queues/q/tasks", strings.NewReader(body))
	check("batch over 10 MiB", req)
	// One task of a batch over 1 MiB, the batch itself within 10 MiB.
	big := `{"target":{"url":"http://h/"},"payload":"` + strings.Repeat("x", 1<<20) + `"}`
	req, _ = http.NewRequest("POST", c.base+"/v1/queues/q/tasks", strings.NewReader(`{"tasks":[`+big+`]}`))
	check("batch task over 1 MiB", req)
}

// malformedHTTP writes requests net/http itself refuses or must frame
// carefully (they never reach a handler, so the answer is net/http's own
// 400, not a problem): the check is that each is a 4xx or a closed
// connection, never a 5xx, and that the server goes on serving. It
// returns how many tasks were created (net/http may frame a request with
// both Content-Length and chunked encoding by the chunks, as RFC 9112
// allows).
func (c *wireClient) malformedHTTP(addr string) (created int) {
	c.t.Helper()
	auth := "Authorization: Bearer " + testKey + "\r\n"
	body := withTask("")
	for name, raw := range map[string]string{
		"Content-Length and chunked": "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body),
		"two Content-Lengths":   "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 2\r\nContent-Length: 30\r\n\r\n" + body,
		"Content-Length 1 TiB":  "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n" + body,
		"negative length":       "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: -1\r\n\r\n" + body,
		"NUL in a header":       "GET /v1/queues HTTP/1.1\r\nHost: x\r\n" + auth + "X-A: a\x00b\r\n\r\n",
		"obsolete line folding": "GET /v1/queues HTTP/1.1\r\nHost: x\r\n" + auth + "X-A: a\r\n b\r\n\r\n",
		"bare LF request line":  "GET /v1/queues HTTP/1.1\nHost: x\n\n",
		"binary request line":   "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
		"bad chunk size":        "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"chunk size overflow":   "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
	} {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			c.t.Fatalf("%s: %v", name, err)
		}
		// Every case is complete on the wire, so an answer is due at once.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if _, err := io.WriteString(conn, raw); err != nil {
			c.t.Errorf("%s: write: %v", name, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		switch {
		case err != nil && time.Since(start) > 4*time.Second:
			c.t.Errorf("%s: no answer in %s: %v", name, time.Since(start).Round(time.Millisecond), err)
		case err != nil:
			// The server closed without answering: allowed, it did not crash.
		case resp.StatusCode >= 500:
			b, _ := io.ReadAll(resp.Body)
			c.t.Errorf("%s: %d: %s", name, resp.StatusCode, b)
		case resp.StatusCode == http.StatusCreated && name == "Content-Length and chunked":
			created++
		case resp.StatusCode == http.StatusOK && name == "obsolete line folding":
			// net/textproto joins the folded line (RFC 9112 §5.2 allows it).
		case resp.StatusCode < 400:
			c.t.Errorf("%s: accepted with %d", name, resp.StatusCode)
		}
		conn.Close()
		c.want("GET", "/livez", "", 200)
	}
	return created
}

// repeatReader yields n copies of b.
type repeatReader struct {
	b byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = r.b
	}
	r.n -= k
	return k, nil
}

// TestBodyBudget: with MaxInflightBodyBytes room for one maximum-size
// batch, a batch whose body is still arriving holds that room; a second
// body waits InflightWait and is refused with a 503 problem carrying
// Retry-After, storing nothing, while requests without a body are served.
// Once the first is answered (201) its room is free again and the second,
// sent again, is accepted. A chunked body holds the route's whole limit.
func TestBodyBudget(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		const maxBody = 1 << 10
		e := newEnv(t, st, func(c *Config) {
			c.MaxBodyBytes = maxBody
			c.MaxInflightBodyBytes = maxBody * BatchBodyFactor
			c.InflightWait = 50 * time.Millisecond
		})
		// The first request: a batch of two tasks whose last byte waits.
		first := `{"tasks":[` + withTask("") + `,` + withTask("") + `]}`
		pr, pw := io.Pipe()
		req := httptest.NewRequest("POST", "/v1/queues/q/tasks", pr)
		req.ContentLength = maxBody * BatchBodyFactor // the whole budget
		first += strings.Repeat(" ", int(req.ContentLength)-len(first))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/json")
		done := make(chan result)
		go func() { done <- e.doReq(req) }()
		if _, err := io.WriteString(pw, first[:len(first)-1]); err != nil {
			t.Fatal(err)
		}

		second := withTask(`"idempotency_key":"second"`)
		refused := e.do("POST", "/v1/queues/q/tasks", second)
		wantProblem(t, refused, http.StatusServiceUnavailable, "busy")
		if ra := refused.Header.Get("Retry-After"); ra != "1" {
			t.Errorf("Retry-After %q, want 1", ra)
		}
		want(t, e.do("PATCH", "/v1/queues/q", `{"paused":false}`), http.StatusServiceUnavailable)
		want(t, e.do("GET", "/v1/queues", ""), http.StatusOK) // no body, no wait

		_, _ = io.WriteString(pw, first[len(first)-1:])
		pw.Close()
		if got := <-done; got.Code != http.StatusCreated {
			t.Fatalf("the batch holding the budget: %d %s", got.Code, got.Body)
		}
		l := decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/q/tasks", ""), http.StatusOK))
		if len(l.Tasks) != 2 {
			t.Errorf("%d tasks stored, want the batch's 2 (refused requests store nothing)", len(l.Tasks))
		}
		want(t, e.do("POST", "/v1/queues/q/tasks", second), http.StatusCreated)

		// A chunked body reserves the batch limit: with another request
		// holding any room it cannot start.
		pr, pw = io.Pipe()
		hold := httptest.NewRequest("PATCH", "/v1/queues/q", pr)
		hold.ContentLength = 20
		hold.Header.Set("Authorization", "Bearer "+testKey)
		go func() { done <- e.doReq(hold) }()
		_, _ = io.WriteString(pw, `{"paused":true}`)
		chunked := httptest.NewRequest("POST", "/v1/queues/q/tasks", strings.NewReader(withTask("")))
		chunked.ContentLength = -1
		chunked.Header.Set("Authorization", "Bearer "+testKey)
		want(t, e.doReq(chunked), http.StatusServiceUnavailable)
		_, _ = io.WriteString(pw, "     ")
		pw.Close()
		want(t, <-done, http.StatusOK)
	})
}

// TestErrorsAreProblems: every error the API writes, over a real
// connection, is application/problem+json with its status: the mux's 404
// and 405, auth's 401, the body limits' 413, 415, malformed (400) and
// invalid (422) bodies, and a panic's 500; every store call here panics,
// and none of the refusals reaches the store. (The budget's 503 is
// TestBodyBudget's, the store's 503 TestStoreFailures'.)
func TestErrorsAreProblems(t *testing.T) {
	t.Parallel()
	h, err := New(Config{Store: faultStore{Store: openSQLite(t), panic: "boom"}, APIKeys: []auth.Key{{Secret: testKey, Role: auth.Admin}}, MaxBodyBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := &wireClient{t: t, base: srv.URL, http: srv.Client()}
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		code                     int
	}{
		{"no route", "GET", "/v2/nothing", "", nil, 404},
		{"wrong method", "DELETE", "/v1/queues", "", nil, 405},
		{"no key", "GET", "/v1/queues/q", "", []string{"Authorization", ""}, 401},
		{"bad key", "GET", "/v1/queues/q", "", []string{"Authorization", "Bearer nope"}, 401},
		{"body over the limit", "PATCH", "/v1/queues/q", `{"concurrency":1}` + strings.Repeat(" ", 2<<10), nil, 413},
		{"not JSON by type", "PATCH", "/v1/queues/q", `{"concurrency":1}`, []string{"Content-Type", "text/plain"}, 415},
		{"not JSON", "PATCH", "/v1/queues/q", `{`, nil, 400},
		{"invalid", "PATCH", "/v1/queues/q", `{"concurrency":-1}`, nil, 422},
	} {
		code, hdr, body := c.do(tc.method, tc.path, tc.body, tc.hdr...)
		mt, _, _ := mime.ParseMediaType(hdr.Get("Content-Type"))
		var p problem
		if code != tc.code || mt != "application/problem+json" || json.Unmarshal(body, &p) != nil || p.Status != code {
			t.Errorf("%s: %d %q %.200s; want a %d problem", tc.name, code, mt, body, tc.code)
		}
	}
	// A panic is a 500 problem (wireClient.do reports any 5xx as an error,
	// so this one goes by hand).
	req, _ := http.NewRequest("GET", srv.URL+"/v1/queues", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); resp.StatusCode != 500 || mt != "application/problem+json" {
		t.Errorf("panic: %d %q, want a 500 problem", resp.StatusCode, mt)
	}
}

// TestNetHTTPOwnErrors pins what net/http answers by itself, before any
// handler runs, so that docs/operations.md ("Errors net/http answers
// itself") stays true across Go upgrades: these are plain text, not
// problems, and the connection is closed after them.
func TestNetHTTPOwnErrors(t *testing.T) {
	t.Parallel()
	h, err := New(Config{Store: openSQLite(t), APIKeys: []auth.Key{{Secret: testKey, Role: auth.Admin}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.MaxHeaderBytes = 4 << 10
	srv.Start()
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		name, raw string
		code      int
	}{
		{"malformed request line", "GET\r\n\r\n", 400},
		{"no Host header", "GET /livez HTTP/1.1\r\n\r\n", 400},
		{"headers over MaxHeaderBytes", "GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", 431},
		{"unknown HTTP version", "GET /livez HTTP/2.5\r\nHost: x\r\n\r\n", 505},
		{"unknown transfer coding", "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"unknown expectation", "POST /v1/queues/q/tasks HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417},
	} {
		conn, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, tc.raw)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			conn.Close()
			continue
		}
		mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != tc.code || mt == "application/problem+json" {
			t.Errorf("%s: %d %q; net/http answered %d in plain text when this test was written", tc.name, resp.StatusCode, mt, tc.code)
		}
		resp.Body.Close()
		conn.Close()
	}
}
