// Package telemetry owns Spool's logs, metrics and traces: the slog
// handler that writes Elastic Common Schema JSON, the Prometheus
// collectors the other packages record into, and the OpenTelemetry SDK's
// setup from the OTEL_* variables. It imports nothing of Spool's.
package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// ECSVersion is the Elastic Common Schema version the log lines follow.
const ECSVersion = "8.11.0"

// Redacted replaces secret values in log lines.
const Redacted = "[redacted]"

// Options configures an ECS logger.
type Options struct {
	// Level is debug, info, warn or error (any case); anything else is info.
	Level string
	// Service and Version fill service.name and service.version.
	Service, Version string
	// Dataset fills event.dataset; default Service + ".log" ("spool.log").
	Dataset string
	// Secrets are values that must never appear in a line, wherever they
	// turn up (a key pasted into a URL path, a password inside an error):
	// each occurrence becomes [redacted] (for a whsec_ key, its base64 body
	// too). Values shorter than MinSecretLen are ignored, so a stray "a"
	// cannot blank every line.
	Secrets []string

	// The fields below apply to NewAsyncLogger only.

	// QueueLines bounds the lines waiting for the writer; default 8192.
	QueueLines int
	// ReportEvery is how often a "N log lines dropped" warning may be
	// written when lines were dropped; default 10s.
	ReportEvery time.Duration
	// OnDrop is called with the number of lines just dropped, on the
	// logging goroutine: it must be cheap and must not log (a Prometheus
	// counter's Add is the intended use).
	OnDrop func(n int)
	// CloseTimeout bounds how long Close waits for queued lines to be
	// written; default 5s.
	CloseTimeout time.Duration
}

// NewLogger returns a synchronous JSON logger whose keys follow the Elastic
// Common Schema, so Filebeat can ship lines to Elasticsearch unchanged. Each
// call writes to w before returning: use it for short-lived commands (migrate,
// the sink); the service uses NewAsyncLogger so a stalled stdout cannot stall
// it.
func NewLogger(w io.Writer, level, service, version string) *slog.Logger {
	return slog.New(NewHandler(w, Options{Level: level, Service: service, Version: version}))
}

// NewAsyncLogger returns an ECS logger that never blocks its caller: lines
// are formatted on the calling goroutine and queued for one writer goroutine;
// when the queue is full they are dropped and counted (see AsyncWriter). Call
// Close on the returned writer at exit so the last lines are written.
func NewAsyncLogger(w io.Writer, o Options) (*slog.Logger, *AsyncWriter) {
	// The drop report is written by the writer goroutine itself, straight
	// to w, so it can never be dropped for lack of queue room. It says that
	// lines are missing, so it is written even when the level is error.
	ro := o
	if parseLevel(o.Level) > slog.LevelWarn {
		ro.Level = "warn"
	}
	report := slog.New(NewHandler(w, ro))
	aw := NewAsyncWriter(w, AsyncOptions{
		QueueLines:  o.QueueLines,
		ReportEvery: o.ReportEvery,
		OnDrop:      o.OnDrop,
		OnReport: func(n, total uint64) {
			report.LogAttrs(context.Background(), slog.LevelWarn, formatDropped(n),
				slog.Uint64("spool.log.dropped", n), slog.Uint64("spool.log.dropped_total", total))
		},
		CloseTimeout: o.CloseTimeout,
	})
	return slog.New(NewHandler(aw, o)), aw
}

// NewHandler returns the ECS JSON handler writing each record to w with one
// Write call (so an AsyncWriter sees whole lines). It adds ecs.version,
// service.*, event.dataset, trace.id and span.id from the record's context,
// and redacts secrets (see redactor).
func NewHandler(w io.Writer, o Options) slog.Handler {
	dataset := o.Dataset
	if dataset == "" {
		dataset = o.Service + ".log"
	}
	r := newRedactor(o.Secrets)
	var h slog.Handler = slog.NewJSONHandler(w, &slog.HandlerOptions{Level: parseLevel(o.Level), ReplaceAttr: r.ecsAttr})
	h = h.WithAttrs([]slog.Attr{
		slog.String("ecs.version", ECSVersion),
		slog.String("service.name", o.Service),
		slog.String("service.version", o.Version),
		slog.String("event.dataset", dataset),
	})
	return traceHandler{h}
}

func parseLevel(level string) slog.Level {
	switch strings.ToLower(level) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// traceHandler adds the OpenTelemetry trace and span ids of the record's
// context, so Kibana can join a task's log lines to its trace.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace.id", sc.TraceID().String()), slog.String("span.id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// timeLayout always carries nine fractional digits, in UTC: lines sort as
// text, and Elasticsearch's date_nanos keeps their order within a millisecond.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// MinSecretLen is the shortest Options.Secrets value that is scrubbed.
const MinSecretLen = 6

// redactor keeps secrets out of lines: by key name, by the shape of a
// credential in free text, and by the exact values it was given.
type redactor struct {
	secrets []string
}

func newRedactor(secrets []string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		if len(s) >= MinSecretLen {
			r.secrets = append(r.secrets, s)
		}
		// A Standard Webhooks key's base64 body is the key as well.
		if body, ok := strings.CutPrefix(s, "whsec_"); ok && len(body) >= MinSecretLen {
			r.secrets = append(r.secrets, body)
		}
	}
	// Longest first, so a key is blanked whole before any secret that is a
	// part of it (a whsec_ key and its base64 body).
	slices.SortFunc(r.secrets, func(a, b string) int { return len(b) - len(a) })
	return r
}

// ecsAttr renames slog's built-in keys to their ECS names and redacts.
func (r *redactor) ecsAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 {
		switch a.Key {
		case slog.TimeKey:
			if a.Value.Kind() == slog.KindTime {
				return slog.String("@timestamp", a.Value.Time().UTC().Format(timeLayout))
			}
			a.Key = "@timestamp"
			return a
		case slog.LevelKey:
			return slog.String("log.level", strings.ToLower(a.Value.String()))
		case slog.MessageKey:
			return slog.String("message", r.scrub(a.Value.String()))
		case "error":
			// ECS maps error as an object: a string at "error" would be
			// rejected by Elasticsearch next to error.message, and would
			// clash with it when Filebeat expands dotted keys.
			a.Key = "error.message"
		}
	}
	return r.redact(groups, a)
}

// secretKeyWords mark an attribute key whose value must never be logged.
var secretKeyWords = []string{
	"authorization", "api_key", "apikey", "password", "passwd", "secret", "token",
	"signing_key", "database_url", "dsn", "cookie", "credential", "private_key",
}

func isSecretKey(groups []string, key string) bool {
	k := strings.ToLower(key)
	if len(groups) > 0 {
		k = strings.ToLower(strings.Join(groups, ".")) + "." + k
	}
	k = strings.ReplaceAll(k, "-", "_")
	for _, w := range secretKeyWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// redact blanks attributes whose key names a secret and scrubs credentials
// out of string values (and errors, and http.Header maps), wherever the
// caller put them: the guard is here, in one place, rather than trusted to
// every call site.
func (r *redactor) redact(groups []string, a slog.Attr) slog.Attr {
	if isSecretKey(groups, a.Key) {
		a.Value = slog.StringValue(Redacted)
		return a
	}
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); s != "" {
			if c := r.scrub(s); c != s {
				a.Value = slog.StringValue(c)
			}
		}
	case slog.KindAny:
		switch v := a.Value.Any().(type) {
		case error:
			a.Value = slog.StringValue(r.scrub(v.Error()))
		case http.Header:
			a.Value = slog.AnyValue(r.redactHeader(v))
		case *url.URL:
			if v != nil {
				a.Value = slog.StringValue(r.scrub(v.Redacted()))
			}
		case []byte:
			a.Value = slog.StringValue(r.scrub(string(v)))
		}
	}
	return a
}

// redactHeader returns a copy of h with credential-bearing fields blanked.
func (r *redactor) redactHeader(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		if isSecretKey(nil, k) || strings.EqualFold(k, "Proxy-Authorization") || strings.EqualFold(k, "Set-Cookie") {
			out[k] = []string{Redacted}
			continue
		}
		cp := make([]string, len(vs))
		for i, v := range vs {
			cp[i] = r.scrub(v)
		}
		out[k] = cp
	}
	return out
}

var (
	// scheme://user:password@ → scheme://user:[redacted]@
	urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^@\s]*@`)
	// libpq keyword form and query parameters: password=… → password=[redacted]
	kvPassword = regexp.MustCompile(`(?i)\b(password|passwd|pwd|sslpassword)(\s*=\s*)('[^']*'|[^\s&'"]+)`)
	// Authorization header values: Bearer <token>; and anything written as
	// "Authorization: <value>" whatever its scheme.
	authScheme = regexp.MustCompile(`(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]+`)
	authHeader = regexp.MustCompile(`(?i)\b(authorization["']?\s*[:=]\s*["']?)[^"'\r\n]+`)
	// Standard Webhooks signing keys.
	whsecKey = regexp.MustCompile(`whsec_[A-Za-z0-9+/=_\-]+`)
)

// scrub removes the known secret values from free text, then whatever has
// the shape of a credential (see scrubPatterns).
func (r *redactor) scrub(s string) string {
	for _, secret := range r.secrets {
		if strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, Redacted)
		}
	}
	return scrubPatterns(s)
}

// scrubPatterns removes what looks like a credential from free text: URL
// passwords, password=… pairs, bearer tokens, Authorization values and
// whsec_ keys. Cheap substring checks keep the regular expressions off the
// common path.
func scrubPatterns(s string) string {
	if strings.Contains(s, "@") && strings.Contains(s, "://") {
		s = urlPassword.ReplaceAllString(s, "${1}:"+Redacted+"@")
	}
	if strings.Contains(s, "=") && containsFold(s, "pass", "pwd") {
		s = kvPassword.ReplaceAllString(s, "${1}${2}"+Redacted)
	}
	if containsFold(s, "bearer") {
		s = authScheme.ReplaceAllString(s, "${1}${2}"+Redacted)
	}
	if containsFold(s, "authorization") {
		s = authHeader.ReplaceAllString(s, "${1}"+Redacted)
	}
	if strings.Contains(s, "whsec_") {
		s = whsecKey.ReplaceAllString(s, "whsec_"+Redacted)
	}
	return s
}

// containsFold reports whether s contains any of the lower-case ASCII words,
// ignoring case, without allocating.
func containsFold(s string, words ...string) bool {
	for _, w := range words {
		first := w[0]
		for i := 0; i+len(w) <= len(s); i++ {
			if s[i]|0x20 == first && strings.EqualFold(s[i:i+len(w)], w) {
				return true
			}
		}
	}
	return false
}

// DSNPassword returns the password in a PostgreSQL connection string, in
// URL form (postgres://user:pw@host/db) or keyword form (password=pw), or
// "" when it has none, so the caller can list it in Options.Secrets.
func DSNPassword(dsn string) string {
	if strings.Contains(dsn, "://") {
		if u, err := url.Parse(dsn); err == nil && u.User != nil {
			pw, _ := u.User.Password()
			return pw
		}
		// Unparseable URL: take what sits between "user:" and "@".
		rest := dsn[strings.Index(dsn, "://")+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				return rest[colon+1 : at]
			}
		}
		return ""
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		if strings.EqualFold(m[1], "password") {
			return strings.Trim(m[3], "'")
		}
	}
	return ""
}
