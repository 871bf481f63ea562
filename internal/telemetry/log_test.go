package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/spoolhq/spool/internal/telemetry"
)

// decodeLines parses each line of out as one JSON object, keeping numbers
// as json.Number so integer fields can be told from strings.
func decodeLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			t.Fatalf("line %d is empty", i+1)
		}
		d := json.NewDecoder(strings.NewReader(l))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, l)
		}
		if d.More() {
			t.Fatalf("line %d holds more than one JSON value:\n%s", i+1, l)
		}
		lines = append(lines, m)
	}
	return lines
}

var (
	timestampRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$`)
	traceIDRE   = regexp.MustCompile(`^[0-9a-f]{32}$`)
	spanIDRE    = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

func spanContext(t *testing.T) (context.Context, trace.SpanContext) {
	t.Helper()
	tid, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(context.Background(), sc), sc
}

// TestLineShape checks every line carries the ECS keys Filebeat and the
// Elasticsearch index template rely on, each with the right JSON type.
func TestLineShape(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := telemetry.NewLogger(&buf, "debug", "spool", "1.2.3")
	ctx, sc := spanContext(t)

	before := time.Now().Add(-time.Second)
	log.Debug("leasing", "spool.queue", "default")
	log.InfoContext(ctx, "http request",
		"http.request.method", "POST", "url.path", "/v1/tasks", "http.response.status_code", 201,
		"spool.task.id", "0192d0a4-7c1e-7a3b-9f00-3d2e1c0b5a69", "spool.queue", "emails")
	log.WarnContext(ctx, "attempt failed", "error.message", "503 Service Unavailable")
	log.Error("lease tasks", "error", errors.New("connection refused"))
	after := time.Now().Add(time.Second)

	lines := decodeLines(t, buf.String())
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4:\n%s", len(lines), buf.String())
	}
	wantLevels := []string{"debug", "info", "warn", "error"}
	for i, m := range lines {
		str := func(key string) string {
			t.Helper()
			v, ok := m[key].(string)
			if !ok {
				t.Errorf("line %d: %q is %T (%v), want a string", i+1, key, m[key], m[key])
			}
			return v
		}
		ts := str("@timestamp")
		if !timestampRE.MatchString(ts) {
			t.Errorf("line %d: @timestamp %q is not RFC 3339 UTC with nine fractional digits", i+1, ts)
		}
		if tm, err := time.Parse(time.RFC3339Nano, ts); err != nil || tm.Before(before) || tm.After(after) {
			t.Errorf("line %d: @timestamp %q: %v (want between %v and %v)", i+1, ts, err, before, after)
		}
		if got := str("log.level"); got != wantLevels[i] {
			t.Errorf("line %d: log.level %q, want %q", i+1, got, wantLevels[i])
		}
		if str("message") == "" {
			t.Errorf("line %d: empty message", i+1)
		}
		for key, want := range map[string]string{
			"ecs.version": telemetry.ECSVersion, "service.name": "spool",
			"service.version": "1.2.3", "event.dataset": "spool.log",
		} {
			if got := str(key); got != want {
				t.Errorf("line %d: %s = %q, want %q", i+1, key, got, want)
			}
		}
		// slog's own names must not survive next to the ECS ones.
		for _, key := range []string{"time", "level", "msg"} {
			if _, ok := m[key]; ok {
				t.Errorf("line %d: has slog key %q", i+1, key)
			}
		}
	}

	req := lines[1]
	if code, ok := req["http.response.status_code"].(json.Number); !ok || code.String() != "201" {
		t.Errorf("http.response.status_code = %#v, want the number 201", req["http.response.status_code"])
	}
	for key, want := range map[string]string{
		"http.request.method": "POST", "url.path": "/v1/tasks",
		"spool.task.id": "0192d0a4-7c1e-7a3b-9f00-3d2e1c0b5a69", "spool.queue": "emails",
		"trace.id": sc.TraceID().String(), "span.id": sc.SpanID().String(),
	} {
		if got, _ := req[key].(string); got != want {
			t.Errorf("request line: %s = %#v, want %q", key, req[key], want)
		}
	}
	for i, m := range lines {
		_, hasTrace := m["trace.id"]
		if wantTrace := i == 1 || i == 2; hasTrace != wantTrace {
			t.Errorf("line %d: trace.id present = %v, want %v (only lines logged with a span context)", i+1, hasTrace, wantTrace)
		}
		if hasTrace {
			if !traceIDRE.MatchString(m["trace.id"].(string)) || !spanIDRE.MatchString(m["span.id"].(string)) {
				t.Errorf("line %d: trace.id %v / span.id %v are not lower-case hex of 32/16", i+1, m["trace.id"], m["span.id"])
			}
		}
	}
	// A bare "error" would clash with ECS's error object in Elasticsearch.
	if _, ok := lines[3]["error"]; ok {
		t.Errorf(`"error" key survived: %v`, lines[3])
	}
	if got, _ := lines[3]["error.message"].(string); got != "connection refused" {
		t.Errorf("error.message = %#v, want the error's text", lines[3]["error.message"])
	}
}

func TestLevelFilter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level string
		want  []string
	}{
		{"debug", []string{"debug", "info", "warn", "error"}},
		{"INFO", []string{"info", "warn", "error"}},
		{"", []string{"info", "warn", "error"}},
		{"warn", []string{"warn", "error"}},
		{"error", []string{"error"}},
	} {
		var buf bytes.Buffer
		log := telemetry.NewLogger(&buf, tc.level, "spool", "dev")
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		log.Error("e")
		var got []string
		for _, m := range decodeLines(t, buf.String()) {
			got = append(got, m["log.level"].(string))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("level %q: logged %v, want %v", tc.level, got, tc.want)
		}
	}
}

// TestDatasetOverride: the sink and other services name their own dataset.
func TestDatasetOverride(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	slog.New(telemetry.NewHandler(&buf, telemetry.Options{Service: "spool", Dataset: "spool.audit"})).Info("x")
	if m := decodeLines(t, buf.String())[0]; m["event.dataset"] != "spool.audit" {
		t.Errorf("event.dataset = %v", m["event.dataset"])
	}
	buf.Reset()
	telemetry.NewLogger(&buf, "info", "spool-sink", "").Info("x")
	if m := decodeLines(t, buf.String())[0]; m["event.dataset"] != "spool-sink.log" {
		t.Errorf("event.dataset = %v, want spool-sink.log", m["event.dataset"])
	}
}

// TestRedaction: secrets never reach a line, whichever key or value carries
// them, and the harmless parts of a value survive so the line stays useful.
func TestRedaction(t *testing.T) {
	t.Parallel()
	const (
		pw     = "s3cr3t-Pa55"
		apiKey = "sk_live_0123456789abcdef"
		whsec  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	)
	hdr := http.Header{"Authorization": {"Bearer " + apiKey}, "Content-Type": {"application/json"}, "Cookie": {"session=" + pw}}
	u, _ := url.Parse("postgres://spool:" + pw + "@db.internal:5432/spool?sslmode=disable")
	cases := []struct {
		name string
		attr slog.Attr
		keep []string // substrings that must survive
	}{
		{"authorization key", slog.String("authorization", "Bearer "+apiKey), nil},
		{"ECS header key", slog.String("http.request.headers.authorization", "Bearer "+apiKey), nil},
		{"api_key", slog.String("spool.api_key", apiKey), nil},
		{"API-Key header spelling", slog.String("X-API-Key", apiKey), nil},
		{"password", slog.String("db.password", pw), nil},
		{"secret", slog.String("client_secret", pw), nil},
		{"token", slog.String("access_token", apiKey), nil},
		{"signing key", slog.String("spool.signing_key", whsec), nil},
		{"database url key", slog.String("SPOOL_DATABASE_URL", "postgres://spool:"+pw+"@db/spool"), nil},
		{"dsn key", slog.String("dsn", "host=db password="+pw), nil},
		{"secret under a group", slog.Group("db", slog.String("password", pw)), nil},
		{"URL password in a value", slog.String("error.message", "connect postgres://spool:"+pw+"@db.internal:5432/spool: refused"),
			[]string{"postgres://spool:", "@db.internal:5432/spool", "refused"}},
		{"URL password in an error", slog.Any("error", fmt.Errorf("open store: %w", errors.New("dial postgresql://u:"+pw+"@h/d"))),
			[]string{"open store", "postgresql://u:", "@h/d"}},
		{"keyword DSN", slog.String("error.message", "cannot parse host=db user=spool password="+pw+" dbname=spool"),
			[]string{"host=db", "user=spool", "dbname=spool"}},
		{"quoted keyword DSN", slog.String("error.message", "host=db password='"+pw+"' dbname=x"), []string{"dbname=x"}},
		{"bearer in text", slog.String("detail", "got Authorization: Bearer "+apiKey+" from client"), nil},
		{"bearer alone", slog.String("detail", "bearer "+apiKey), nil},
		{"whsec in an error", slog.String("error.message", "bad key "+whsec+" given"), []string{"bad key", "given"}},
		{"http.Header", slog.Any("http.request.headers", hdr), []string{"application/json"}},
		{"url.URL", slog.Any("url.full", u), []string{"db.internal:5432"}},
		{"bytes", slog.Any("body", []byte("password="+pw)), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			telemetry.NewLogger(&buf, "info", "spool", "dev").LogAttrs(context.Background(), slog.LevelInfo, "m", tc.attr)
			out := buf.String()
			decodeLines(t, out)
			for _, secret := range []string{pw, apiKey, whsec, strings.TrimPrefix(whsec, "whsec_"), "Bearer " + apiKey} {
				if strings.Contains(out, secret) {
					t.Errorf("secret %q leaked:\n%s", secret, out)
				}
			}
			if !strings.Contains(out, telemetry.Redacted) {
				t.Errorf("no %s marker:\n%s", telemetry.Redacted, out)
			}
			for _, k := range tc.keep {
				if !strings.Contains(out, k) {
					t.Errorf("lost the harmless %q:\n%s", k, out)
				}
			}
		})
	}
}

// TestRedactionMessage: the message itself is scrubbed too.
func TestRedactionMessage(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	telemetry.NewLogger(&buf, "info", "spool", "dev").Info("open postgres://app:hunter2@db/spool failed")
	if out := buf.String(); strings.Contains(out, "hunter2") || !strings.Contains(out, "postgres://app:[redacted]@db/spool") {
		t.Errorf("message not scrubbed as expected:\n%s", out)
	}
}

// TestNoFalseRedaction: ordinary attributes come through untouched.
func TestNoFalseRedaction(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	telemetry.NewLogger(&buf, "info", "spool", "dev").Info("spool started",
		"spool.queue", "default", "keys", 2, "spool.auth", true, "spool.signing", true,
		"url.path", "/v1/tasks/abc", "error.message", "POST https://example.test/hook: 503 Service Unavailable",
		"server.address", "127.0.0.1:8080", "user.email", "ops@example.test")
	m := decodeLines(t, buf.String())[0]
	want := map[string]any{
		"spool.queue": "default", "keys": json.Number("2"), "spool.auth": true, "spool.signing": true,
		"url.path": "/v1/tasks/abc", "error.message": "POST https://example.test/hook: 503 Service Unavailable",
		"server.address": "127.0.0.1:8080", "user.email": "ops@example.test", "message": "spool started",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
}

func BenchmarkLoggerInfo(b *testing.B) {
	var buf bytes.Buffer
	log := telemetry.NewLogger(&buf, "info", "spool", "dev")
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		log.Info("http request", "http.request.method", "POST", "url.path", "/v1/tasks",
			"http.response.status_code", 201, "spool.task.id", "0192d0a4-7c1e-7a3b-9f00-3d2e1c0b5a69")
	}
}

// TestKnownSecrets: values handed over in Options.Secrets are blanked
// wherever they turn up, even where no pattern could spot them.
func TestKnownSecrets(t *testing.T) {
	t.Parallel()
	const key = "Zk3yWithNoShape"
	const whsec = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
	var buf bytes.Buffer
	log := slog.New(telemetry.NewHandler(&buf, telemetry.Options{
		Service: "spool", Secrets: []string{key, "", "abc", whsec},
	}))
	log.Info("GET /v1/tasks/"+key, "url.path", "/v1/tasks/"+key+"/cancel", "error", errors.New("no task "+key),
		"detail", "body QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo= seen", "n", 3)
	log.Info("abc stays: short values are not secrets")
	out := buf.String()
	for _, s := range []string{key, "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"} {
		if strings.Contains(out, s) {
			t.Errorf("%q leaked:\n%s", s, out)
		}
	}
	lines := decodeLines(t, out)
	if got := lines[0]["url.path"]; got != "/v1/tasks/[redacted]/cancel" {
		t.Errorf("url.path = %v", got)
	}
	if got := lines[1]["message"]; got != "abc stays: short values are not secrets" {
		t.Errorf("message = %v", got)
	}
}

func TestDSNPassword(t *testing.T) {
	t.Parallel()
	for dsn, want := range map[string]string{
		"postgres://spool:s3cret@db:5432/spool?sslmode=disable": "s3cret",
		"postgresql://spool:p%40ss@db/spool":                    "p@ss",
		"postgres://spool@db/spool":                             "",
		"postgres://spool:s3cret@db:notaport/spool":             "s3cret",
		"host=db user=spool password=s3cret dbname=spool":       "s3cret",
		"host=db user=spool password='with space' dbname=spool": "with space",
		"host=db user=spool dbname=spool":                       "",
		"":                                                      "",
	} {
		if got := telemetry.DSNPassword(dsn); got != want {
			t.Errorf("DSNPassword(%q) = %q, want %q", dsn, got, want)
		}
	}
}
