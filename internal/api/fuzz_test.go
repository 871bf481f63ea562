package api

import (
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
