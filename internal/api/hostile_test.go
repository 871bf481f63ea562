package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/spoolhq/spool/internal/store"
)

// hostileCase is an enqueue request with its expected answer.
type hostileCase struct {
	name  string
	body  string
	hdr   []string // name/value pairs
	path  string   // default /v1/queues/q/tasks
	code  int
	field string // for 422: a field the problem must name
}

// withTask builds a single-task body from a JSON fragment of extra fields.
func withTask(extra string) string {
	if extra == "" {
		return `{"target":{"url":"http://h/"}}`
	}
	return `{"target":{"url":"http://h/"},` + extra + `}`
}

// withTarget builds a body whose target has the given fields.
func withTarget(fields string) string { return `{"target":{` + fields + `}}` }

func withHeader(name, value string) string {
	n, _ := json.Marshal(name)
	v, _ := json.Marshal(value)
	return withTarget(`"url":"http://h/","headers":{` + string(n) + ":" + string(v) + `}`)
}

func hostileCases() []hostileCase {
	cs := []hostileCase{
		// Malformed: 400.
		{name: "empty body", body: "", code: 400},
		{name: "whitespace body", body: " \n\t ", code: 400},
		{name: "truncated", body: `{"target":{"url":"http://h/"}`, code: 400},
		{name: "syntax error", body: `{"target":{"url":"http://h/"},}`, code: 400},
		{name: "trailing value", body: withTask("") + ` {}`, code: 400},
		{name: "trailing garbage", body: withTask("") + `x`, code: 400},
		{name: "invalid UTF-8 in a string", body: withTarget(`"url":"http://h/` + "\xff" + `"`), code: 400},
		{name: "invalid UTF-8 in a key", body: `{"` + "\xc3\x28" + `":1}`, code: 400},
		{name: "overlong UTF-8", body: withTask(`"payload":"` + "\xc0\xaf" + `"`), code: 400},
		{name: "single quotes", body: `{'target':{}}`, code: 400},
		{name: "NaN", body: withTask(`"priority":NaN`), code: 400},
		{name: "deeply nested payload", body: withTask(`"payload":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000)), code: 400},
		{name: "deeply nested object", body: strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000), code: 400},

		// Wrong shapes: 422.
		{name: "null body", body: `null`, code: 422, field: ""},
		{name: "array body", body: `[]`, code: 422, field: ""},
		{name: "string body", body: `"x"`, code: 422, field: ""},
		{name: "number body", body: `5`, code: 422, field: ""},
		{name: "no target", body: `{}`, code: 422, field: "target"},
		{name: "target null", body: `{"target":null}`, code: 422, field: "target"},
		{name: "target string", body: `{"target":"http://h/"}`, code: 422, field: "target"},
		{name: "no url", body: withTarget(`"method":"POST"`), code: 422, field: "target.url"},
		{name: "url number", body: withTarget(`"url":5`), code: 422, field: "target.url"},
		{name: "priority string", body: withTask(`"priority":"5"`), code: 422, field: "priority"},
		{name: "priority float", body: withTask(`"priority":5.0`), code: 422, field: "priority"},
		{name: "priority exponent", body: withTask(`"priority":5e0`), code: 422, field: "priority"},
		{name: "priority huge", body: withTask(`"priority":1e400`), code: 422, field: "priority"},
		{name: "priority huge int", body: withTask(`"priority":99999999999999999999999999`), code: 422, field: "priority"},
		{name: "priority negative", body: withTask(`"priority":-1`), code: 422, field: "priority"},
		{name: "priority 10", body: withTask(`"priority":10`), code: 422, field: "priority"},
		{name: "max_attempts bool", body: withTask(`"max_attempts":true`), code: 422, field: "max_attempts"},
		{name: "max_attempts negative", body: withTask(`"max_attempts":-1`), code: 422, field: "max_attempts"},
		{name: "max_attempts too many", body: withTask(`"max_attempts":1001`), code: 422, field: "max_attempts"},
		{name: "delay number", body: withTask(`"delay":30`), code: 422, field: "delay"},
		{name: "delay negative", body: withTask(`"delay":"-1s"`), code: 422, field: "delay"},
		{name: "delay too long", body: withTask(`"delay":"8785h"`), code: 422, field: "delay"},
		{name: "delay overflow", body: withTask(`"delay":"9999999999999999999h"`), code: 422, field: "delay"},
		{name: "delay days", body: withTask(`"delay":"1d"`), code: 422, field: "delay"},
		{name: "timeout zero", body: withTask(`"timeout":"0s"`), code: 422, field: "timeout"},
		{name: "timeout negative", body: withTask(`"timeout":"-5m"`), code: 422, field: "timeout"},
		{name: "timeout too long", body: withTask(`"timeout":"31m"`), code: 422, field: "timeout"},
		{name: "timeout under 1ms", body: withTask(`"timeout":"999us"`), code: 422, field: "timeout"},
		{name: "run_at number", body: withTask(`"run_at":123`), code: 422, field: "run_at"},
		{name: "run_at date only", body: withTask(`"run_at":"2030-01-01"`), code: 422, field: "run_at"},
		{name: "run_at far", body: withTask(`"run_at":"2999-01-01T00:00:00Z"`), code: 422, field: "run_at"},
		{name: "run_at and delay", body: withTask(`"run_at":"2030-01-01T00:00:00Z","delay":"1s"`), code: 422, field: "run_at"},
		{name: "payload and base64", body: withTask(`"payload":1,"payload_base64":"AA=="`), code: 422, field: "payload_base64"},
		{name: "base64 invalid", body: withTask(`"payload_base64":"!!!"`), code: 422, field: "payload_base64"},
		{name: "base64 unpadded", body: withTask(`"payload_base64":"AAE"`), code: 422, field: "payload_base64"},
		{name: "base64 number", body: withTask(`"payload_base64":1`), code: 422, field: "payload_base64"},
		{name: "content_type array", body: withTask(`"content_type":[]`), code: 422, field: "content_type"},
		{name: "content_type junk", body: withTask(`"content_type":"not a type"`), code: 422, field: "content_type"},
		{name: "content_type CRLF", body: withTask(`"content_type":"text/plain\r\nX-Evil: 1"`), code: 422, field: "content_type"},
		{name: "content_type long", body: withTask(`"content_type":"a/` + strings.Repeat("b", 300) + `"`), code: 422, field: "content_type"},
		{name: "unknown field", body: withTask(`"prioirty":1`), code: 422, field: "prioirty"},
		{name: "unknown field case", body: `{"Target":{"url":"http://h/"}}`, code: 422, field: "Target"},
		{name: "unknown nested field", body: withTarget(`"url":"http://h/","verb":"GET"`), code: 422, field: "target.verb"},
		{name: "duplicate field", body: withTask(`"priority":1,"priority":2`), code: 422, field: "priority"},
		{name: "duplicate url", body: withTarget(`"url":"http://a/","url":"http://b/"`), code: 422, field: "target.url"},
		{name: "batch plus task fields", body: `{"tasks":[` + withTask("") + `],"target":{}}`, code: 422, field: "target"},
		{name: "batch item null", body: `{"tasks":[null]}`, code: 422, field: "tasks[0]"},

		// Methods.
		{name: "method lower case", body: withTarget(`"url":"http://h/","method":"get"`), code: 422, field: "target.method"},
		{name: "method CONNECT", body: withTarget(`"url":"http://h/","method":"CONNECT"`), code: 422, field: "target.method"},
		{name: "method TRACE", body: withTarget(`"url":"http://h/","method":"TRACE"`), code: 422, field: "target.method"},
		{name: "method number", body: withTarget(`"url":"http://h/","method":1`), code: 422, field: "target.method"},

		// URLs.
		{name: "url empty", body: withTarget(`"url":""`), code: 422, field: "target.url"},
		{name: "url relative", body: withTarget(`"url":"/hook"`), code: 422, field: "target.url"},
		{name: "url ftp", body: withTarget(`"url":"ftp://h/x"`), code: 422, field: "target.url"},
		{name: "url javascript", body: withTarget(`"url":"javascript:alert(1)"`), code: 422, field: "target.url"},
		{name: "url opaque", body: withTarget(`"url":"http:h"`), code: 422, field: "target.url"},
		{name: "url no host", body: withTarget(`"url":"http:///x"`), code: 422, field: "target.url"},
		{name: "url port only", body: withTarget(`"url":"http://:80/"`), code: 422, field: "target.url"},
		{name: "url userinfo", body: withTarget(`"url":"https://user:pw@h/"`), code: 422, field: "target.url"},
		{name: "url user only", body: withTarget(`"url":"https://user@h/"`), code: 422, field: "target.url"},
		{name: "url port too big", body: withTarget(`"url":"http://h:65536/"`), code: 422, field: "target.url"},
		{name: "url port zero", body: withTarget(`"url":"http://h:0/"`), code: 422, field: "target.url"},
		{name: "url control char", body: withTarget(`"url":"http://h/\u0000"`), code: 422, field: "target.url"},
		{name: "url CRLF", body: withTarget(`"url":"http://h/\r\nHost: evil"`), code: 422, field: "target.url"},
		{name: "url bad bracket", body: withTarget(`"url":"http://[::1/"`), code: 422, field: "target.url"},
		{name: "url too long", body: withTarget(`"url":"http://h/` + strings.Repeat("a", 2048) + `"`), code: 422, field: "target.url"},

		// Headers.
		{name: "headers array", body: withTarget(`"url":"http://h/","headers":[]`), code: 422, field: "target.headers"},
		{name: "header number", body: withTarget(`"url":"http://h/","headers":{"X-A":1}`), code: 422, field: `target.headers["X-A"]`},
		{name: "header CRLF", body: withHeader("X-A", "a\r\nX-Injected: 1"), code: 422, field: `target.headers["X-A"]`},
		{name: "header LF", body: withHeader("X-A", "a\nb"), code: 422, field: `target.headers["X-A"]`},
		{name: "header NUL", body: withHeader("X-A", "a\x00b"), code: 422, field: `target.headers["X-A"]`},
		{name: "header DEL", body: withHeader("X-A", "a\x7fb"), code: 422, field: `target.headers["X-A"]`},
		{name: "header name space", body: withHeader("X A", "v"), code: 422, field: `target.headers["X A"]`},
		{name: "header name colon", body: withHeader("X:A", "v"), code: 422, field: `target.headers["X:A"]`},
		{name: "header name empty", body: withHeader("", "v"), code: 422, field: `target.headers[""]`},
		{name: "header name unicode", body: withHeader("X-É", "v"), code: 422, field: `target.headers["X-É"]`},
		{name: "header duplicate by case", body: withTarget(`"url":"http://h/","headers":{"X-A":"1","x-a":"2"}`), code: 422, field: `target.headers["x-a"]`},
		{name: "header value too long", body: withHeader("X-A", strings.Repeat("v", 8193)), code: 422, field: `target.headers["X-A"]`},
		{name: "too many headers", body: withTarget(`"url":"http://h/","headers":{` + manyHeaders(65) + `}`), code: 422, field: "target.headers"},
		{name: "headers too big", body: withTarget(`"url":"http://h/","headers":{` + bigHeaders(5, 8000) + `}`), code: 422, field: "target.headers"},
		{name: "tab in header value", body: withHeader("X-A", "a\tb"), code: 201},
		{name: "UTF-8 header value", body: withHeader("X-A", "café"), code: 201},

		// Queue names.
		{name: "queue leading dash", path: "/v1/queues/-q/tasks", body: withTask(""), code: 422, field: "queue"},
		{name: "queue space", path: "/v1/queues/a%20b/tasks", body: withTask(""), code: 422, field: "queue"},
		{name: "queue slash", path: "/v1/queues/a%2Fb/tasks", body: withTask(""), code: 422, field: "queue"},
		{name: "queue too long", path: "/v1/queues/" + strings.Repeat("q", 129) + "/tasks", body: withTask(""), code: 422, field: "queue"},
		{name: "queue longest", path: "/v1/queues/" + strings.Repeat("q", 128) + "/tasks", body: withTask(""), code: 201},

		// Content types.
		{name: "text/plain", body: withTask(""), hdr: []string{"Content-Type", "text/plain"}, code: 415},
		// curl -d's default type: the body is still parsed as JSON, strictly.
		{name: "form type, JSON body", body: withTask(""), hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, code: 201},
		{name: "form type, form body", body: "target=http%3A%2F%2Fh%2F", hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, code: 400},
		{name: "form type with charset", body: withTask(""), hdr: []string{"Content-Type", "application/x-www-form-urlencoded; charset=latin1"}, code: 415},
		{name: "latin1 json", body: withTask(""), hdr: []string{"Content-Type", "application/json; charset=latin1"}, code: 415},
		{name: "unparseable content type", body: withTask(""), hdr: []string{"Content-Type", ";;;"}, code: 415},
		{name: "json utf-8", body: withTask(""), hdr: []string{"Content-Type", "application/json; charset=UTF-8"}, code: 201},
		{name: "+json", body: withTask(""), hdr: []string{"Content-Type", "application/vnd.spool+json"}, code: 201},
		{name: "no content type", body: withTask(""), hdr: []string{"Content-Type", ""}, code: 201},

		// Accepted oddities.
		{name: "nested payload within limits", body: withTask(`"payload":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000)), code: 201},
		{name: "huge number payload", body: withTask(`"payload":1e400`), code: 201},
		{name: "uppercase scheme", body: withTarget(`"url":"HTTPS://H/"`), code: 201},
		{name: "IPv6 literal", body: withTarget(`"url":"http://[::1]:8080/x"`), code: 201},
		{name: "lone surrogate escape", body: withTask(`"payload":"\ud800"`), code: 201},
	}
	for _, h := range []string{"Host", "content-length", "Content-Type", "Connection", "Keep-Alive", "Proxy-Authorization",
		"proxy-connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "webhook-id", "Webhook-Signature",
		"WEBHOOK-TIMESTAMP", "Spool-Attempt", "traceparent", "Tracestate"} {
		cs = append(cs, hostileCase{name: "reserved header " + h, body: withHeader(h, "v"), code: 422, field: fmt.Sprintf("target.headers[%q]", h)})
	}
	return cs
}

func manyHeaders(n int) string {
	var hs []string
	for i := range n {
		hs = append(hs, fmt.Sprintf(`"X-H%d":"v"`, i))
	}
	return strings.Join(hs, ",")
}

func bigHeaders(n, size int) string {
	var hs []string
	for i := range n {
		hs = append(hs, fmt.Sprintf(`"X-H%d":"%s"`, i, strings.Repeat("v", size)))
	}
	return strings.Join(hs, ",")
}

// TestHostileInputs holds the decoder to its promise: malformed and invalid
// requests are 4xx problems naming what is wrong, never 5xx, and nothing
// invalid is stored.
func TestHostileInputs(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		created := 0
		for _, c := range hostileCases() {
			path := c.path
			if path == "" {
				path = "/v1/queues/q/tasks"
			}
			r := e.do("POST", path, c.body, c.hdr...)
			if r.Code != c.code {
				t.Errorf("%s: status %d, want %d; body: %.300s", c.name, r.Code, c.code, r.Body)
				continue
			}
			if c.code == 201 {
				created++
				continue
			}
			p := decode[problem](t, r)
			if p.Detail == "" {
				t.Errorf("%s: problem without detail", c.name)
			}
			if c.code == 422 {
				found := false
				for _, fe := range p.Errors {
					found = found || fe.Field == c.field
				}
				if !found {
					t.Errorf("%s: 422 does not name %q: %s", c.name, c.field, r.Body)
				}
			}
		}
		// Only the accepted cases were stored.
		l := decode[taskListJSON](t, want(t, e.do("GET", "/v1/queues/q/tasks?limit=1000", ""), http.StatusOK))
		n := len(l.Tasks)
		l2 := decode[taskListJSON](t, e.do("GET", "/v1/queues/"+strings.Repeat("q", 128)+"/tasks", ""))
		if n+len(l2.Tasks) != created {
			t.Errorf("%d tasks stored, want %d (the accepted cases)", n+len(l2.Tasks), created)
		}
	})
}

// TestMalformedDetail checks that a 400 says where the JSON breaks.
func TestMalformedDetail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, openSQLite(t))
	wantProblem(t, e.do("POST", "/v1/queues/q/tasks", "{\n  \"target\": {,\n}"), 400, "line 2, column 14")
	wantProblem(t, e.do("POST", "/v1/queues/q/tasks", "{\"a\":\"\xff\"}"), 400, "UTF-8", "byte offset 6")
	wantProblem(t, e.do("POST", "/v1/queues/q/tasks", withTask("")+"\n]"), 400, "after the JSON value", "line 2")
	p := wantProblem(t, e.do("POST", "/v1/queues/q/tasks", `{"priority":"x","target":{"url":"ftp://h"},"delay":"-1s","foo":1}`), 422, "priority")
	if len(p.Errors) != 4 {
		t.Errorf("want all 4 problems named, got %+v", p.Errors)
	}
}
