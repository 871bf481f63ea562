package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// This file is Spool's OTLP/HTTP trace exporter. The official exporters
// (otlptracehttp, otlptracegrpc) pull gRPC, grpc-gateway and the generated
// OTLP protobuf packages into the binary and double its size; this one
// sends the same data as OTLP/JSON with net/http and encoding/json. It
// reads the standard OTEL_EXPORTER_OTLP_* variables as the OpenTelemetry
// specification defines them for OTLP/HTTP.

// DefaultOTLPTracesEndpoint is where spans go when no endpoint is set
// (OTEL_TRACES_EXPORTER=otlp alone): a Collector beside the process.
const DefaultOTLPTracesEndpoint = "http://localhost:4318/v1/traces"

const (
	defaultOTLPTimeout = 10 * time.Second
	// Exponential backoff between attempts on a retryable failure, with
	// jitter; every attempt and wait fits within the export timeout.
	defaultOTLPBackoff    = time.Second
	defaultOTLPMaxBackoff = 5 * time.Second
	// A receiver's answer is read up to this size: enough for an OTLP
	// response or an error message, and bounded against a hostile one.
	maxOTLPResponse = 64 << 10
)

// errOTLPShutdown is returned by exports after Shutdown.
var errOTLPShutdown = errors.New("otlp exporter: shut down")

// otlpHTTPConfig is the exporter's configuration, resolved once at start
// from the OTEL_EXPORTER_OTLP_* variables.
type otlpHTTPConfig struct {
	endpoint *url.URL // the full traces URL
	headers  []otlpHeader
	timeout  time.Duration // for one export, its retries included
	gzip     bool
	tls      *tls.Config // nil: the system roots, no client certificate
}

// otlpHeader is one extra request header. Values often carry credentials
// (Authorization, api keys): they are sent, and never printed.
type otlpHeader struct{ name, value string }

// otlpHTTPConfigFromEnv reads, with get returning "" for an unset
// variable, and the signal-specific OTEL_EXPORTER_OTLP_TRACES_* form
// winning over the general one:
//
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, used as is (a URL with no path
//     gets "/"); else OTEL_EXPORTER_OTLP_ENDPOINT with "/v1/traces"
//     appended to its path; else DefaultOTLPTracesEndpoint. The scheme
//     must be http or https.
//   - …_HEADERS: "k=v,k2=v2", values URL-decoded.
//   - …_TIMEOUT: milliseconds (default 10000).
//   - …_COMPRESSION: "gzip" or "none" (the default).
//   - …_CERTIFICATE (a PEM file of CAs to trust instead of the system's),
//     …_CLIENT_CERTIFICATE and …_CLIENT_KEY (PEM files, for mutual TLS).
//
// Errors name the variable and never quote a header value.
func otlpHTTPConfigFromEnv(get func(string) string) (otlpHTTPConfig, error) {
	// pick returns the TRACES_ form of a setting if set, else the general
	// one, with the name of the variable it came from.
	pick := func(suffix string) (value, name string) {
		name = "OTEL_EXPORTER_OTLP_TRACES_" + suffix
		if v := strings.TrimSpace(get(name)); v != "" {
			return v, name
		}
		name = "OTEL_EXPORTER_OTLP_" + suffix
		return strings.TrimSpace(get(name)), name
	}
	cfg := otlpHTTPConfig{timeout: defaultOTLPTimeout}

	// Endpoint.
	raw, name := "", ""
	if v := strings.TrimSpace(get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); v != "" {
		raw, name = v, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	} else if v := strings.TrimSpace(get("OTEL_EXPORTER_OTLP_ENDPOINT")); v != "" {
		raw, name = v, "OTEL_EXPORTER_OTLP_ENDPOINT"
	}
	if raw == "" {
		u, _ := url.Parse(DefaultOTLPTracesEndpoint)
		cfg.endpoint = u
	} else {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			// Not the parse error: it quotes the URL, which may hold a token.
			return cfg, fmt.Errorf("%s: want an http:// or https:// URL such as http://otel-collector:4318", name)
		}
		if name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			// A base URL: the signal's path goes under its own path.
			u.Path = path.Join("/", u.Path, "v1/traces")
			u.RawPath = ""
		} else if u.Path == "" {
			u.Path = "/"
		}
		cfg.endpoint = u
	}

	// Headers.
	if v, name := pick("HEADERS"); v != "" {
		for i, pair := range strings.Split(v, ",") {
			if strings.TrimSpace(pair) == "" {
				continue
			}
			k, val, ok := strings.Cut(pair, "=")
			k = strings.TrimSpace(k)
			if !ok || k == "" || !validHeaderName(k) {
				return cfg, fmt.Errorf("%s: entry %d is not name=value with a valid header name", name, i+1)
			}
			dec, err := url.PathUnescape(val)
			if err != nil {
				return cfg, fmt.Errorf("%s: the value of %q is not URL-encoded correctly", name, k)
			}
			cfg.headers = append(cfg.headers, otlpHeader{name: k, value: strings.TrimSpace(dec)})
		}
	}

	// Timeout.
	if v, name := pick("TIMEOUT"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 || ms > int64(time.Hour/time.Millisecond) {
			return cfg, fmt.Errorf("%s=%q: want a positive number of milliseconds", name, v)
		}
		cfg.timeout = time.Duration(ms) * time.Millisecond
	}

	// Compression.
	switch v, name := pick("COMPRESSION"); strings.ToLower(v) {
	case "", "none":
	case "gzip":
		cfg.gzip = true
	default:
		return cfg, fmt.Errorf("%s=%q: want \"gzip\" or \"none\"", name, v)
	}

	// TLS.
	caFile, caVar := pick("CERTIFICATE")
	certFile, certVar := pick("CLIENT_CERTIFICATE")
	keyFile, keyVar := pick("CLIENT_KEY")
	if caFile != "" || certFile != "" || keyFile != "" {
		cfg.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", caVar, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("%s: no PEM certificate in %s", caVar, caFile)
		}
		cfg.tls.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return cfg, fmt.Errorf("%s and %s: set both or neither", certVar, keyVar)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return cfg, fmt.Errorf("%s, %s: %w", certVar, keyVar, err)
		}
		cfg.tls.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110).
func validHeaderName(s string) bool {
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}

// safeURL prints u without what may be a credential: its user info and
// its query (some vendors put an API key there).
func safeURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		c.RawQuery = "REDACTED"
	}
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// otlpHTTPExporter is the spanExporter sending OTLP/JSON over HTTP. It is
// safe for concurrent use, though the batch span processor calls it from
// one goroutine.
type otlpHTTPExporter struct {
	cfg        otlpHTTPConfig
	client     *http.Client
	userAgent  string
	backoff    time.Duration // first wait before a retry; doubles
	maxBackoff time.Duration

	stop     chan struct{} // closed by Shutdown
	stopOnce sync.Once
}

var _ spanExporter = (*otlpHTTPExporter)(nil)

func newOTLPHTTPExporter(cfg otlpHTTPConfig, version string) *otlpHTTPExporter {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.tls != nil {
		tr.TLSClientConfig = cfg.tls
	}
	return &otlpHTTPExporter{
		cfg: cfg,
		// No client timeout: each export has a deadline (cfg.timeout)
		// spanning its retries.
		client:     &http.Client{Transport: tr},
		userAgent:  "spool/" + version + " (OTLP/JSON trace exporter)",
		backoff:    defaultOTLPBackoff,
		maxBackoff: defaultOTLPMaxBackoff,
		stop:       make(chan struct{}),
	}
}

// Endpoint is the traces URL, safe to log.
func (e *otlpHTTPExporter) Endpoint() string { return safeURL(e.cfg.endpoint) }

// ExportSpans sends one batch in one request, retrying on 429, 502, 503,
// 504 and on connection failures with backoff (or the receiver's
// Retry-After) until the export timeout. Any other non-2xx answer is an
// error at once.
func (e *otlpHTTPExporter) ExportSpans(ctx context.Context, spans []*spanData) error {
	select {
	case <-e.stop:
		return errOTLPShutdown
	default:
	}
	if len(spans) == 0 {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(encodeSpans(spans)); err != nil {
		return fmt.Errorf("otlp export: encode: %w", err)
	}
	body := buf.Bytes()
	if e.cfg.gzip {
		var zbuf bytes.Buffer
		zw := gzip.NewWriter(&zbuf)
		if _, err := zw.Write(body); err != nil {
			return fmt.Errorf("otlp export: gzip: %w", err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("otlp export: gzip: %w", err)
		}
		body = zbuf.Bytes()
	}

	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	// Shutdown abandons an export still retrying.
	go func() {
		select {
		case <-e.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	wait := e.backoff
	for attempt := 1; ; attempt++ {
		retryAfter, err := e.send(ctx, body)
		if err == nil {
			return nil
		}
		var re *retryableError
		if !errors.As(err, &re) {
			return err
		}
		delay := jitter(wait)
		if retryAfter > 0 {
			delay = retryAfter // the receiver knows best when it can take more
		}
		wait = min(2*wait, e.maxBackoff)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return fmt.Errorf("%w (attempt %d; no time left to retry within the export timeout of %s)", re.err, attempt, e.cfg.timeout)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (attempt %d; %w)", re.err, attempt, ctxCause(ctx, e.stop))
		case <-t.C:
		}
	}
}

// ctxCause says why an export's context ended.
func ctxCause(ctx context.Context, stop chan struct{}) error {
	select {
	case <-stop:
		return errOTLPShutdown
	default:
		return ctx.Err()
	}
}

// retryableError is a failure worth another attempt.
type retryableError struct{ err error }

func (r *retryableError) Error() string { return r.err.Error() }
func (r *retryableError) Unwrap() error { return r.err }

// send makes one attempt. On a retryable failure it returns a
// *retryableError and the receiver's Retry-After, if any.
func (e *otlpHTTPExporter) send(ctx context.Context, body []byte) (time.Duration, error) {
	where := "otlp export to " + safeURL(e.cfg.endpoint)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.endpoint.String(), bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("%s: build request failed", where)
	}
	for _, h := range e.cfg.headers {
		req.Header.Set(h.name, h.value)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", e.userAgent)
	if e.cfg.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}

	resp, err := e.client.Do(req)
	if err != nil {
		// url.Error quotes the full URL; keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("%s: %w", where, ctxCause(ctx, e.stop))
		}
		err = fmt.Errorf("%s: %w", where, err)
		var opErr *net.OpError
		if errors.As(err, &opErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// The receiver is restarting or a connection was cut.
			return 0, &retryableError{err}
		}
		return 0, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxOTLPResponse))

	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return 0, partialSuccess(where, resp.Header.Get("Content-Type"), answer)
	}
	err = fmt.Errorf("%s: %s%s", where, resp.Status, e.describe(answer))
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return parseRetryAfter(resp.Header.Get("Retry-After")), &retryableError{err}
	default:
		return 0, err
	}
}

// describe quotes the start of a receiver's error answer, on one line,
// with any configured header value blanked in case the receiver echoes a
// credential back.
func (e *otlpHTTPExporter) describe(answer []byte) string {
	s := strings.TrimSpace(string(answer))
	if s == "" {
		return ""
	}
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	for _, h := range e.cfg.headers {
		// The whole value, and its parts long enough to be a token
		// ("Bearer <token>" may come back as the token alone); shorter
		// strings would blank innocent text.
		if len(h.value) >= 4 {
			s = strings.ReplaceAll(s, h.value, "REDACTED")
		}
		for _, part := range strings.Fields(h.value) {
			if len(part) >= 8 {
				s = strings.ReplaceAll(s, part, "REDACTED")
			}
		}
	}
	if p, ok := e.cfg.endpoint.User.Password(); ok && len(p) >= 4 {
		s = strings.ReplaceAll(s, p, "REDACTED")
	}
	if q := e.cfg.endpoint.RawQuery; q != "" {
		s = strings.ReplaceAll(s, q, "REDACTED")
	}
	return ": " + strings.Join(strings.Fields(s), " ")
}

// partialSuccess reports the spans a receiver accepted the request for but
// rejected (ExportTraceServiceResponse.partial_success). Retrying would not
// help, so it is an error to log, not to retry.
func partialSuccess(where, contentType string, answer []byte) error {
	if len(answer) == 0 || !strings.HasPrefix(contentType, "application/json") {
		return nil // a protobuf answer is not expected, since we send JSON
	}
	var r struct {
		PartialSuccess *struct {
			RejectedSpans json.RawMessage `json:"rejectedSpans"`
			ErrorMessage  string          `json:"errorMessage"`
		} `json:"partialSuccess"`
	}
	if json.Unmarshal(answer, &r) != nil || r.PartialSuccess == nil {
		return nil
	}
	n, _ := strconv.ParseInt(strings.Trim(string(r.PartialSuccess.RejectedSpans), `"`), 10, 64)
	if n == 0 && r.PartialSuccess.ErrorMessage == "" {
		return nil
	}
	return fmt.Errorf("%s: the receiver rejected %d spans: %s", where, n, r.PartialSuccess.ErrorMessage)
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// jitter spreads d over [d/2, 3d/2) so that replicas do not retry in step.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

// Shutdown makes later exports fail at once and abandons one still
// retrying. The batch span processor calls it after its last export.
func (e *otlpHTTPExporter) Shutdown(ctx context.Context) error {
	e.stopOnce.Do(func() { close(e.stop) })
	e.client.CloseIdleConnections()
	return ctx.Err()
}
