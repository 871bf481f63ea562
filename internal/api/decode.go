package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// Bounds on what a task may carry. They keep one row, and one delivery
// request, to a sane size; the body limit bounds the payload.
const (
	maxURLBytes          = 2048
	maxHeaders           = 64
	maxHeaderNameBytes   = 256
	maxHeaderValueBytes  = 8192
	maxHeadersBytes      = 32 << 10 // names + values
	maxIdempotencyKey    = 255
	maxContentTypeBytes  = 255
	maxQueueConcurrency  = 1_000_000
	maxQueueRateLimit    = 1_000_000.0
	maxReportedProblems  = 20
	maxEchoedInputLength = 64
)

// queueNameRE is the queue name syntax: it fits a URL segment, a metric
// label and a log field without escaping.
var queueNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// methods a target may use.
var targetMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// decodeEnv is what decoding needs besides the body.
type decodeEnv struct {
	queue        string
	headerKey    string // Idempotency-Key header, "" when absent
	now          time.Time
	maxBodyBytes int64
	maxBatch     int
	checkTarget  func(*url.URL) error
}

// collector gathers field errors so that one 422 names every problem
// (up to maxReportedProblems) instead of making clients fix them one by one.
type collector struct {
	errs []fieldError
}

func (c *collector) add(field, format string, args ...any) {
	if len(c.errs) < maxReportedProblems {
		c.errs = append(c.errs, fieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
	}
}

func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return invalid(c.errs...)
}

// join builds a field path: join("tasks[3]", "target") = "tasks[3].target".
func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// parseJSON checks that body is exactly one well-formed JSON value in
// valid UTF-8 and returns it, a subslice of body (no copy: a batch body is
// up to 10 MiB, and every copy of it is memory held per request). Failures
// are 400s that say where; only then is the body decoded a second time,
// for the position of the error.
func parseJSON(body []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("the request body is empty; expected a JSON object")
	}
	if !utf8.Valid(body) {
		// encoding/json would silently turn bad bytes into U+FFFD; a client
		// sending them has an encoding bug it should hear about.
		off := invalidUTF8Offset(body)
		line, col := lineCol(body, off)
		return nil, badRequest("the request body is not valid UTF-8 (line %d, column %d, byte offset %d)", line, col, off)
	}
	if json.Valid(body) {
		return bytes.TrimSpace(body), nil
	}
	return nil, syntaxProblem(body)
}

// syntaxProblem explains why body, which json.Valid refused, is not one
// JSON value.
func syntaxProblem(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			// Offset counts the bytes read, the bad one included.
			off := max(se.Offset-1, 0)
			line, col := lineCol(body, off)
			return badRequest("malformed JSON at line %d, column %d (byte offset %d): %s", line, col, off, se.Error())
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return badRequest("malformed JSON: the body ends before the JSON value is complete")
		default:
			return badRequest("malformed JSON: %s", err.Error())
		}
	}
	_, _ = dec.Token() // moves the offset to the data after the value
	off := dec.InputOffset()
	line, col := lineCol(body, off)
	return badRequest("malformed JSON: unexpected data after the JSON value at line %d, column %d (byte offset %d)", line, col, off)
}

func invalidUTF8Offset(b []byte) int64 {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return int64(i)
		}
		i += size
	}
	return int64(len(b))
}

// lineCol turns a byte offset into 1-based line and column (in bytes).
func lineCol(b []byte, off int64) (line, col int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col = 1, 1
	for _, c := range b[:off] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// member is one "key": value of a JSON object, in input order.
type member struct {
	key string
	val json.RawMessage
}

// The splitters below (members, elements) walk JSON that parseJSON has
// validated, so they only find where values end; each value they return
// is a subslice of its parent, never a copy.

// skipSpace returns the index of the first non-whitespace byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just past the valid JSON value starting at i.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default: // number, true, false, null
		for i < len(b) && !strings.ContainsRune(",]} \t\n\r", rune(b[i])) {
			i++
		}
		return i
	}
}

// stringEnd returns the index just past the JSON string starting at i.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// members splits a well-formed JSON value into the members of an object.
// ok is false when raw is not an object. A key given twice is an error:
// which of the two wins differs between parsers, so neither is guessed.
func members(raw json.RawMessage) (ms []member, ok bool, dup string) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false, ""
	}
	seen := map[string]bool{}
	for i := skipSpace(raw, 1); i < len(raw) && raw[i] != '}'; {
		end := stringEnd(raw, i)
		key, ok := unquote(raw[i:end])
		if !ok {
			return nil, false, ""
		}
		i = skipSpace(raw, skipSpace(raw, end)+1) // past the colon
		end = valueEnd(raw, i)
		if seen[key] && dup == "" {
			dup = key
		}
		seen[key] = true
		ms = append(ms, member{key: key, val: raw[i:end]})
		i = skipSpace(raw, end)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return ms, true, dup
}

// unquote returns the string a JSON string literal stands for; without
// escapes that is its bytes, which need no decoder.
func unquote(lit []byte) (string, bool) {
	if len(lit) < 2 {
		return "", false
	}
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1]), true
	}
	var s string
	err := json.Unmarshal(lit, &s)
	return s, err == nil
}

// elements splits a well-formed JSON array, reading at most max+1 elements
// (so a caller can tell "too many" without holding them all).
func elements(raw json.RawMessage, max int) (es []json.RawMessage, ok bool) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	for i := skipSpace(raw, 1); i < len(raw) && raw[i] != ']' && len(es) <= max; {
		end := valueEnd(raw, i)
		es = append(es, raw[i:end])
		i = skipSpace(raw, end)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return es, true
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// kind names a JSON value's type for error messages.
func kind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// quoteInput quotes client input for a message, shortened.
func quoteInput(s string) string { return strconv.Quote(truncate(s, maxEchoedInputLength)) }

func decodeString(c *collector, field string, raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		c.add(field, "must be a string, got %s", kind(raw))
		return "", false
	}
	return s, true
}

func decodeBool(c *collector, field string, raw json.RawMessage) (bool, bool) {
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	c.add(field, "must be a boolean, got %s", kind(raw))
	return false, false
}

// decodeInt reads an integer in [lo, hi]; 1.0 and 1e3 are not integers.
func decodeInt(c *collector, field string, raw json.RawMessage, lo, hi int64) (int64, bool) {
	if kind(raw) != "a number" {
		c.add(field, "must be an integer from %d to %d, got %s", lo, hi, kind(raw))
		return 0, false
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	var ne *strconv.NumError
	switch {
	case err == nil:
	case errors.As(err, &ne) && ne.Err == strconv.ErrRange:
		c.add(field, "must be an integer from %d to %d, got %s", lo, hi, truncate(string(raw), maxEchoedInputLength))
		return 0, false
	default:
		c.add(field, "must be an integer, got %s", truncate(string(raw), maxEchoedInputLength))
		return 0, false
	}
	if n < lo || n > hi {
		c.add(field, "must be an integer from %d to %d, got %d", lo, hi, n)
		return 0, false
	}
	return n, true
}

// decodeFloat reads a number in [lo, hi].
func decodeFloat(c *collector, field string, raw json.RawMessage, lo, hi float64) (float64, bool) {
	if kind(raw) != "a number" {
		c.add(field, "must be a number from %g to %g, got %s", lo, hi, kind(raw))
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < lo || f > hi {
		c.add(field, "must be a number from %g to %g, got %s", lo, hi, truncate(string(raw), maxEchoedInputLength))
		return 0, false
	}
	return f, true
}

// decodeDuration reads a Go duration string ("1m30s") in [lo, hi].
func decodeDuration(c *collector, field string, raw json.RawMessage, lo, hi time.Duration) (time.Duration, bool) {
	if kind(raw) != "a string" {
		c.add(field, "must be a duration string such as \"30s\" or \"1m30s\", got %s", kind(raw))
		return 0, false
	}
	s, ok := decodeString(c, field, raw)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.add(field, "must be a duration such as \"30s\" or \"1m30s\" (units ns, us, ms, s, m, h), got %s", quoteInput(s))
		return 0, false
	}
	if d < lo || d > hi {
		c.add(field, "must be from %s to %s, got %s", fmtDuration(lo), fmtDuration(hi), quoteInput(s))
		return 0, false
	}
	return d, true
}

// fmtDuration prints d the way clients write it ("0s", "30m0s").
func fmtDuration(d time.Duration) string { return d.String() }

// decodeEnqueue turns an enqueue body into the tasks to store, validating
// everything the store must be able to trust. batch reports whether the
// body was {"tasks":[…]}. IDs are left for the caller to assign.
func decodeEnqueue(body []byte, env decodeEnv) (tasks []store.NewTask, batch bool, err error) {
	raw, err := parseJSON(body)
	if err != nil {
		return nil, false, err
	}
	ms, ok, dup := members(raw)
	if !ok {
		return nil, false, invalidField("", "the body must be a JSON object (a task, or {\"tasks\": [...]} for a batch), got %s", kind(raw))
	}
	for _, m := range ms {
		if m.key == "tasks" {
			batch = true
		}
	}
	c := &collector{}
	if !batch {
		if int64(len(body)) > env.maxBodyBytes {
			return nil, false, tooLarge(env.maxBodyBytes)
		}
		t := parseTask(c, "", ms, dup, env)
		if err := c.err(); err != nil {
			return nil, false, err
		}
		return []store.NewTask{t}, false, nil
	}

	if dup != "" {
		c.add(dup, "duplicate field")
	}
	var list json.RawMessage
	for _, m := range ms {
		if m.key == "tasks" {
			list = m.val
		} else {
			c.add(m.key, "unknown field: a batch body holds only \"tasks\"")
		}
	}
	if env.headerKey != "" {
		c.add("Idempotency-Key", "the header applies to a single task; set idempotency_key on each task of a batch")
	}
	es, ok := elements(list, env.maxBatch)
	switch {
	case !ok:
		c.add("tasks", "must be an array of tasks, got %s", kind(list))
	case len(es) == 0:
		c.add("tasks", "must hold at least one task")
	case len(es) > env.maxBatch:
		c.add("tasks", "must hold at most %d tasks", env.maxBatch)
	}
	if err := c.err(); err != nil {
		return nil, true, err
	}
	tasks = make([]store.NewTask, 0, len(es))
	benv := env
	benv.headerKey = ""
	for i, e := range es {
		prefix := fmt.Sprintf("tasks[%d]", i)
		if int64(len(e)) > env.maxBodyBytes {
			return nil, true, &apiError{status: 413,
				detail: fmt.Sprintf("%s is %d bytes; each task of a batch may be at most %d bytes", prefix, len(e), env.maxBodyBytes)}
		}
		tms, ok, tdup := members(e)
		if !ok {
			c.add(prefix, "must be a task object, got %s", kind(e))
			continue
		}
		tasks = append(tasks, parseTask(c, prefix, tms, tdup, benv))
	}
	if err := c.err(); err != nil {
		return nil, true, err
	}
	return tasks, true, nil
}

// parseTask validates one task object's members; problems go to c.
func parseTask(c *collector, prefix string, ms []member, dup string, env decodeEnv) store.NewTask {
	t := store.NewTask{Queue: env.queue, Priority: task.DefaultPriority}
	if dup != "" {
		c.add(join(prefix, dup), "duplicate field")
	}
	var (
		haveTarget, havePayload, haveB64, haveDelay, haveRunAt bool
		contentType                                            string
		delay                                                  time.Duration
		runAt                                                  time.Time
	)
	for _, m := range ms {
		field := join(prefix, m.key)
		if isNull(m.val) {
			// null means absent, as most JSON clients serialize unset fields.
			continue
		}
		switch m.key {
		case "target":
			haveTarget = true
			t.Target = parseTarget(c, field, m.val, env.checkTarget)
		case "payload":
			havePayload = true
			// Stored as the client's bytes: re-encoding could reorder keys or
			// change number formatting the receiver relies on. Not copied:
			// the body is read into a buffer of its own and never reused.
			t.Payload = m.val
		case "payload_base64":
			if b, ok := decodeBase64(c, field, m.val); ok {
				haveB64 = true
				t.Payload = b
			}
		case "content_type":
			s, ok := decodeString(c, field, m.val)
			if !ok {
				break
			}
			if len(s) > maxContentTypeBytes {
				c.add(field, "must be at most %d bytes", maxContentTypeBytes)
				break
			}
			if _, _, err := mime.ParseMediaType(s); err != nil || strings.ContainsAny(s, "\r\n\x00") {
				c.add(field, "must be a media type such as \"application/json\", got %s", quoteInput(s))
				break
			}
			contentType = s
		case "delay":
			if d, ok := decodeDuration(c, field, m.val, 0, task.MaxScheduleAhead); ok {
				haveDelay, delay = true, d
			}
		case "run_at":
			s, ok := decodeString(c, field, m.val)
			if !ok {
				break
			}
			at, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				c.add(field, "must be an RFC 3339 time such as \"2030-01-02T15:04:05Z\", got %s", quoteInput(s))
				break
			}
			if at.Sub(env.now) > task.MaxScheduleAhead {
				c.add(field, "must be at most %s ahead", fmtDuration(task.MaxScheduleAhead))
				break
			}
			haveRunAt, runAt = true, at
		case "priority":
			if n, ok := decodeInt(c, field, m.val, task.MinPriority, task.MaxPriority); ok {
				t.Priority = int(n)
			}
		case "max_attempts":
			if n, ok := decodeInt(c, field, m.val, 0, task.MaxMaxAttempts); ok {
				t.MaxAttempts = int(n)
			}
		case "timeout":
			if d, ok := decodeDuration(c, field, m.val, time.Millisecond, task.MaxTimeout); ok {
				t.Timeout = d
			}
		case "idempotency_key":
			s, ok := decodeString(c, field, m.val)
			if !ok {
				break
			}
			if msg := checkIdempotencyKey(s); msg != "" {
				c.add(field, "%s", msg)
				break
			}
			t.IdempotencyKey = s
		default:
			c.add(field, "unknown field")
		}
	}
	if !haveTarget {
		c.add(join(prefix, "target"), "required: where to deliver the task, e.g. {\"url\": \"https://example.com/hook\"}")
	}
	if havePayload && haveB64 {
		c.add(join(prefix, "payload_base64"), "payload and payload_base64 are mutually exclusive; give at most one")
	}
	if haveDelay && haveRunAt {
		c.add(join(prefix, "run_at"), "delay and run_at are mutually exclusive; give at most one")
	}
	if env.headerKey != "" {
		switch {
		case t.IdempotencyKey == "":
			if msg := checkIdempotencyKey(env.headerKey); msg != "" {
				c.add("Idempotency-Key", "%s", msg)
			} else {
				t.IdempotencyKey = env.headerKey
			}
		case t.IdempotencyKey != env.headerKey:
			c.add(join(prefix, "idempotency_key"), "differs from the Idempotency-Key header; give one, or the same key in both")
		}
	}
	switch {
	case contentType != "":
		t.ContentType = contentType
	case havePayload:
		t.ContentType = "application/json"
	case haveB64:
		t.ContentType = "application/octet-stream"
	}
	if t.IdempotencyKey != "" {
		// The schedule as sent: a retried request with a delay matches.
		req := task.Request{Target: t.Target, Payload: t.Payload, ContentType: t.ContentType,
			Priority: t.Priority, MaxAttempts: t.MaxAttempts, Timeout: t.Timeout}
		if havePayload {
			// A JSON payload is compared without insignificant white space:
			// clients in other languages re-encode the same document with
			// other spacing, and the retry is still the same request.
			var compact bytes.Buffer
			if json.Compact(&compact, t.Payload) == nil {
				req.Payload = compact.Bytes()
			}
		}
		if haveDelay {
			req.Delay = delay
		}
		if haveRunAt {
			req.RunAt = runAt
		}
		t.Fingerprint = req.Fingerprint()
	}
	// A due or delayed task gets a zero RunAt so the store stamps it with
	// its own clock (plus Delay): on PostgreSQL that is the database's, and
	// an API replica whose clock is off would otherwise make delayed tasks
	// due early or late. An explicit run_at is the client's absolute time;
	// one in the past means "now", so a stale timestamp cannot jump the queue.
	switch {
	case haveDelay && delay > 0:
		t.Delay = delay
	case haveRunAt && runAt.After(env.now):
		t.RunAt = runAt.UTC()
	}
	return t
}

// decodeBase64 reads a string of standard base64. Base64 needs no JSON
// escapes, so the common literal is decoded straight from the body's
// bytes; one with escapes (an encoder's "\/") is unquoted first.
func decodeBase64(c *collector, field string, raw json.RawMessage) ([]byte, bool) {
	enc := base64.StdEncoding.Strict()
	var b []byte
	var err error
	if kind(raw) == "a string" && bytes.IndexByte(raw, '\\') < 0 {
		src := raw[1 : len(raw)-1]
		b = make([]byte, enc.DecodedLen(len(src)))
		var n int
		n, err = enc.Decode(b, src)
		b = b[:n]
	} else {
		s, ok := decodeString(c, field, raw)
		if !ok {
			return nil, false
		}
		b, err = enc.DecodeString(s)
	}
	if err != nil {
		c.add(field, "must be standard base64 (RFC 4648 §4, with padding): %s", err.Error())
		return nil, false
	}
	return b, true
}

// checkIdempotencyKey returns why k is not acceptable, or "".
func checkIdempotencyKey(k string) string {
	if len(k) > maxIdempotencyKey {
		return fmt.Sprintf("must be at most %d bytes", maxIdempotencyKey)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "must be printable ASCII"
		}
	}
	return ""
}

// parseTarget validates a target object.
func parseTarget(c *collector, field string, raw json.RawMessage, check func(*url.URL) error) task.Target {
	tg := task.Target{Method: "POST", Headers: map[string]string{}}
	ms, ok, dup := members(raw)
	if !ok {
		c.add(field, "must be an object such as {\"url\": \"https://example.com/hook\"}, got %s", kind(raw))
		return tg
	}
	if dup != "" {
		c.add(join(field, dup), "duplicate field")
	}
	haveURL := false
	for _, m := range ms {
		f := join(field, m.key)
		if isNull(m.val) {
			continue
		}
		switch m.key {
		case "url":
			s, ok := decodeString(c, f, m.val)
			if !ok {
				haveURL = true
				break
			}
			haveURL = true
			if msg := checkURL(s, check); msg != "" {
				c.add(f, "%s", msg)
				break
			}
			tg.URL = s
		case "method":
			s, ok := decodeString(c, f, m.val)
			if !ok {
				break
			}
			valid := false
			for _, mm := range targetMethods {
				valid = valid || s == mm
			}
			if !valid {
				c.add(f, "must be one of %s, got %s", strings.Join(targetMethods, ", "), quoteInput(s))
				break
			}
			tg.Method = s
		case "headers":
			tg.Headers = parseHeaders(c, f, m.val)
		default:
			c.add(f, "unknown field")
		}
	}
	if !haveURL {
		c.add(join(field, "url"), "required: an absolute http or https URL")
	}
	return tg
}

// checkURL returns why s is not an acceptable target URL, or "".
func checkURL(s string, check func(*url.URL) error) string {
	if len(s) > maxURLBytes {
		return fmt.Sprintf("must be at most %d bytes", maxURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "is not a valid URL: " + err.Error()
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Opaque != "" {
		return "must be an absolute http or https URL, got " + quoteInput(s)
	}
	if u.Hostname() == "" {
		return "must name a host"
	}
	if u.User != nil {
		return "must not carry credentials (user:password@); send them in target.headers"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "has an invalid port " + quoteInput(p)
		}
	}
	if check != nil {
		if err := check(u); err != nil {
			return "is refused: " + err.Error()
		}
	}
	return ""
}

// parseHeaders validates target headers: names must be tokens, values must
// not be able to split or smuggle a request, and the headers Spool or the
// transport set (signature, tracing, framing) cannot be overridden.
func parseHeaders(c *collector, field string, raw json.RawMessage) map[string]string {
	out := map[string]string{}
	ms, ok, dup := members(raw)
	if !ok {
		c.add(field, "must be an object of header names to string values, got %s", kind(raw))
		return out
	}
	if dup != "" {
		c.add(join(field, dup), "duplicate header")
	}
	if len(ms) > maxHeaders {
		c.add(field, "must hold at most %d headers", maxHeaders)
		return out
	}
	total := 0
	for _, m := range ms {
		f := field + "[" + strconv.Quote(truncate(m.key, maxEchoedInputLength)) + "]"
		v, ok := decodeString(c, f, m.val)
		if !ok {
			continue
		}
		if msg := checkHeader(m.key, v); msg != "" {
			c.add(f, "%s", msg)
			continue
		}
		name := textproto.CanonicalMIMEHeaderKey(m.key)
		if _, seen := out[name]; seen {
			c.add(f, "duplicate header (names are case-insensitive)")
			continue
		}
		total += len(m.key) + len(v)
		out[name] = v
	}
	if total > maxHeadersBytes {
		c.add(field, "must total at most %d bytes of names and values", maxHeadersBytes)
	}
	return out
}

// checkHeader returns why a target header is not acceptable, or "".
func checkHeader(name, value string) string {
	if name == "" || len(name) > maxHeaderNameBytes {
		return fmt.Sprintf("header names must be 1 to %d bytes", maxHeaderNameBytes)
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return "is not a valid header name (RFC 9110 token)"
		}
	}
	lower := strings.ToLower(name)
	switch lower {
	case "host", "content-length", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade":
		return "is set by the transport and cannot be given"
	case "content-type":
		return "is set from content_type; use that field"
	case "traceparent", "tracestate":
		return "is set by Spool for tracing and cannot be given"
	}
	switch {
	case strings.HasPrefix(lower, "proxy-"):
		return "is a hop-by-hop header and cannot be given"
	case strings.HasPrefix(lower, "webhook-"), strings.HasPrefix(lower, "spool-"):
		return "is reserved for Spool's signature and delivery headers"
	}
	if len(value) > maxHeaderValueBytes {
		return fmt.Sprintf("values must be at most %d bytes", maxHeaderValueBytes)
	}
	for i := 0; i < len(value); i++ {
		b := value[i]
		if (b < 0x20 && b != '\t') || b == 0x7f {
			return "values must not contain control characters (CR, LF, NUL, …)"
		}
	}
	return ""
}

func isTokenChar(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

// checkQueueName returns why name is not a valid queue name, or "".
func checkQueueName(name string) string {
	if !queueNameRE.MatchString(name) {
		return "must be 1 to 128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit, got " + quoteInput(name)
	}
	return ""
}

// maxRetryStatusTokens bounds retry_statuses' array: every status of
// 300-599 one by one, plus timeout and connection, is 302.
const maxRetryStatusTokens = 302

// decodeRetryStatuses reads retry_statuses: an array of tokens, each an
// HTTP status ("429"), an inclusive range ("500-599"), "timeout" or
// "connection" (task.RetryStatuses' tokens). [] is valid: nothing retries.
func decodeRetryStatuses(c *collector, field string, raw json.RawMessage) (task.RetryStatuses, bool) {
	es, ok := elements(raw, maxRetryStatusTokens)
	if !ok {
		c.add(field, `must be an array of strings such as ["429", "500-599", "timeout", "connection"], got %s`, kind(raw))
		return task.RetryStatuses{}, false
	}
	if len(es) > maxRetryStatusTokens {
		c.add(field, "must hold at most %d tokens", maxRetryStatusTokens)
		return task.RetryStatuses{}, false
	}
	tokens := make([]string, 0, len(es))
	valid := true
	for i, e := range es {
		f := field + "[" + strconv.Itoa(i) + "]"
		tok, ok := decodeString(c, f, e)
		if !ok {
			valid = false
			continue
		}
		// One token per element: ParseRetryStatuses would read "429,500"
		// as two, and "" as none.
		if strings.TrimSpace(tok) == "" || strings.Contains(tok, ",") {
			c.add(f, "must be one token: an HTTP status (300-599), a range such as \"500-599\", \"timeout\" or \"connection\", got %s", quoteInput(tok))
			valid = false
			continue
		}
		if _, err := task.ParseRetryStatuses(tok); err != nil {
			c.add(f, "%s", strings.TrimPrefix(err.Error(), "retry_statuses: "))
			valid = false
			continue
		}
		tokens = append(tokens, tok)
	}
	if !valid {
		return task.RetryStatuses{}, false
	}
	rs, err := task.ParseRetryStatuses(strings.Join(tokens, ","))
	if err != nil { // each token parsed alone, so this cannot happen
		c.add(field, "%s", err.Error())
		return task.RetryStatuses{}, false
	}
	return rs, true
}

// patchMembers parses a PATCH body: one JSON object whose null members
// mean absent (as most JSON clients serialize unset fields). It returns the
// other members and a collector that already holds a duplicate key, so each
// PATCH decoder only judges its own fields.
func patchMembers(body []byte) ([]member, *collector, error) {
	raw, err := parseJSON(body)
	if err != nil {
		return nil, nil, err
	}
	ms, ok, dup := members(raw)
	if !ok {
		return nil, nil, invalidField("", "the body must be a JSON object, got %s", kind(raw))
	}
	c := &collector{}
	if dup != "" {
		c.add(dup, "duplicate field")
	}
	set := ms[:0]
	for _, m := range ms {
		if !isNull(m.val) {
			set = append(set, m)
		}
	}
	return set, c, nil
}

// decodePatch turns a PATCH /v1/queues/{queue} body into a QueuePatch.
func decodePatch(body []byte) (task.QueuePatch, error) {
	var p task.QueuePatch
	ms, c, err := patchMembers(body)
	if err != nil {
		return p, err
	}
	for _, m := range ms {
		switch m.key {
		case "concurrency":
			if n, ok := decodeInt(c, m.key, m.val, 0, maxQueueConcurrency); ok {
				v := int(n)
				p.Concurrency = &v
			}
		case "rate_limit":
			if f, ok := decodeFloat(c, m.key, m.val, 0, maxQueueRateLimit); ok {
				p.RateLimit = &f
			}
		case "max_attempts":
			if n, ok := decodeInt(c, m.key, m.val, 1, task.MaxMaxAttempts); ok {
				v := int(n)
				p.MaxAttempts = &v
			}
		case "timeout":
			if d, ok := decodeDuration(c, m.key, m.val, time.Millisecond, task.MaxTimeout); ok {
				p.Timeout = &d
			}
		case "paused":
			if b, ok := decodeBool(c, m.key, m.val); ok {
				p.Paused = &b
			}
		case "weight":
			if n, ok := decodeInt(c, m.key, m.val, 1, task.MaxWeight); ok {
				v := int(n)
				p.Weight = &v
			}
		case "retry_statuses":
			if rs, ok := decodeRetryStatuses(c, m.key, m.val); ok {
				p.RetryStatuses = &rs
			}
		default:
			c.add(m.key, "unknown field")
		}
	}
	if err := c.err(); err != nil {
		return p, err
	}
	if p.Concurrency == nil && p.RateLimit == nil && p.MaxAttempts == nil && p.Timeout == nil && p.Paused == nil &&
		p.Weight == nil && p.RetryStatuses == nil {
		return p, invalidField("", "the patch changes nothing; give at least one of concurrency, rate_limit, max_attempts, timeout, paused, weight, retry_statuses")
	}
	return p, nil
}
