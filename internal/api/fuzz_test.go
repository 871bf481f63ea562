package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// FuzzDecodeEnqueue feeds arbitrary bodies and Idempotency-Key headers to
// the enqueue decoder. It must never panic; a refusal must be a 4xx
// problem; and anything it accepts must pass checks written independently
// of the decoder, so a bug there cannot let an invalid task through.
func FuzzDecodeEnqueue(f *testing.F) {
	for _, c := range hostileCases() {
		if len(c.body) < 4096 {
			f.Add([]byte(c.body), "")
		}
	}
	f.Add([]byte(`{"target":{"url":"http://h/"}}`), "key")
	f.Add([]byte(`{"target":{"url":"http://h/"},"idempotency_key":"a"}`), "b")
	f.Add([]byte(`{"tasks":[{"target":{"url":"https://a.example/x","method":"PUT","headers":{"X-A":"1"}},"payload":{"a":[1,2]},"delay":"1m","priority":0,"max_attempts":3,"timeout":"10s","idempotency_key":"k"}]}`), "")

	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte, headerKey string) {
		env := decodeEnv{queue: "q", headerKey: headerKey, now: now, maxBodyBytes: 1 << 16, maxBatch: 50}
		tasks, _, err := decodeEnqueue(body, env)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 || ae.detail == "" {
				t.Fatalf("refusal is not a 4xx problem with a detail: %#v", err)
			}
			return
		}
		if !utf8.Valid(body) || !json.Valid(body) {
			t.Fatalf("accepted a body that is not valid UTF-8 JSON: %q", body)
		}
		if len(tasks) < 1 || len(tasks) > env.maxBatch {
			t.Fatalf("accepted %d tasks", len(tasks))
		}
		for i, tk := range tasks {
			if msg := independentCheck(tk, now); msg != "" {
				t.Fatalf("accepted invalid task %d (%s): %+v\nbody: %q", i, msg, tk, body)
			}
		}
	})
}

// independentCheck restates the rules for a stored task without sharing
// code with the decoder. It returns what is wrong, or "".
func independentCheck(tk store.NewTask, now time.Time) string {
	if tk.Queue != "q" {
		return "queue"
	}
	if len(tk.Target.URL) == 0 || len(tk.Target.URL) > 2048 {
		return "url length"
	}
	u, err := url.Parse(tk.Target.URL)
	if err != nil {
		return "url parse"
	}
	if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
		return "url scheme"
	}
	if u.Hostname() == "" || u.User != nil || u.Opaque != "" {
		return "url host/userinfo"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "url port"
		}
	}
	for _, c := range tk.Target.URL {
		if c < 0x20 || c == 0x7f {
			return "url control character"
		}
	}
	switch tk.Target.Method {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
	default:
		return "method"
	}
	if len(tk.Target.Headers) > 64 {
		return "header count"
	}
	lowerSeen := map[string]bool{}
	for name, v := range tk.Target.Headers {
		l := strings.ToLower(name)
		if lowerSeen[l] {
			return "duplicate header"
		}
		lowerSeen[l] = true
		if name == "" || strings.ContainsFunc(name, func(r rune) bool {
			return r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r)
		}) {
			return "header name"
		}
		if strings.ContainsAny(v, "\r\n\x00") || strings.ContainsFunc(v, func(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }) {
			return "header value"
		}
		for _, bad := range []string{"host", "content-length", "content-type", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "traceparent"} {
			if l == bad {
				return "reserved header " + name
			}
		}
		for _, prefix := range []string{"proxy-", "webhook-", "spool-"} {
			if strings.HasPrefix(l, prefix) {
				return "reserved header " + name
			}
		}
	}
	if tk.Priority < 0 || tk.Priority > 9 {
		return "priority"
	}
	if tk.MaxAttempts < 0 || tk.MaxAttempts > task.MaxMaxAttempts {
		return "max_attempts"
	}
	if tk.Timeout != 0 && (tk.Timeout < time.Millisecond || tk.Timeout > task.MaxTimeout) {
		return "timeout"
	}
	if !tk.RunAt.IsZero() && (!tk.RunAt.After(now) || tk.RunAt.Sub(now) > task.MaxScheduleAhead) {
		return "run_at"
	}
	if len(tk.IdempotencyKey) > 255 || strings.ContainsFunc(tk.IdempotencyKey, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return "idempotency key"
	}
	if tk.ContentType != "" {
		if _, _, err := mime.ParseMediaType(tk.ContentType); err != nil {
			return "content type"
		}
	}
	if len(tk.Payload) > 0 && tk.ContentType == "" {
		return "payload without a content type"
	}
	return ""
}

// FuzzSplitJSON holds members and elements, which walk validated JSON by
// hand so that a batch body is never copied, to encoding/json: for any
// valid value they split it into the same keys and the same value bytes
// as a json.Decoder does, recursively.
func FuzzSplitJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `{"a":1}`, ` { "a" : [ 1 , "x\"]" , {"b":null} ] , "c\u0041":"\\" } `,
		`[1,-2.5e3,true,false,null,"s",{"k":"v"},[[]]]`, `{"a":"}","b":"{","c":"\\\""}`,
		`{"tasks":[{"target":{"url":"http://h/"},"payload":{"x":[1,{"y":"]"}]}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		raw, err := parseJSON(body)
		if err != nil {
			return
		}
		checkSplit(t, raw)
	})
}

func checkSplit(t *testing.T, raw json.RawMessage) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // a number too large for a float64 is still valid JSON
	tok, err := dec.Token()
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	switch tok {
	case json.Delim('{'):
		ms, ok, _ := members(raw)
		if !ok {
			t.Fatalf("members(%q) is not ok", raw)
		}
		var want []member
		for dec.More() {
			k, _ := dec.Token()
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			want = append(want, member{key: k.(string), val: v})
		}
		if len(ms) != len(want) {
			t.Fatalf("members(%q): %d, encoding/json finds %d", raw, len(ms), len(want))
		}
		for i := range ms {
			if ms[i].key != want[i].key || !bytes.Equal(ms[i].val, want[i].val) {
				t.Fatalf("members(%q)[%d] = %q: %q, encoding/json %q: %q", raw, i, ms[i].key, ms[i].val, want[i].key, want[i].val)
			}
			checkSplit(t, ms[i].val)
		}
	case json.Delim('['):
		es, ok := elements(raw, 1<<30)
		if !ok {
			t.Fatalf("elements(%q) is not ok", raw)
		}
		var want []json.RawMessage
		for dec.More() {
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			want = append(want, v)
		}
		if len(es) != len(want) {
			t.Fatalf("elements(%q): %d, encoding/json finds %d", raw, len(es), len(want))
		}
		for i := range es {
			if !bytes.Equal(es[i], want[i]) {
				t.Fatalf("elements(%q)[%d] = %q, encoding/json %q", raw, i, es[i], want[i])
			}
			checkSplit(t, es[i])
		}
	default:
		if _, ok, _ := members(raw); ok {
			t.Fatalf("members(%q) is ok for a scalar", raw)
		}
		if _, ok := elements(raw, 10); ok {
			t.Fatalf("elements(%q) is ok for a scalar", raw)
		}
	}
}
