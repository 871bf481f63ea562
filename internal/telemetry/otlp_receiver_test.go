package telemetry

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// OTLPReceiver is a real OTLP/HTTP receiver on loopback for tests (this
// file is compiled only into tests, so the external test package uses it
// too). It decodes each request with the official OTLP protobuf types and
// protojson, so what it accepts is what the OTLP schema accepts.
type OTLPReceiver struct {
	URL string // base URL: post to URL + "/v1/traces"

	respond func(n int, w http.ResponseWriter) bool

	mu   sync.Mutex
	reqs []OTLPReceived
}

// OTLPReceived is one request as the receiver saw it.
type OTLPReceived struct {
	At     time.Time
	Path   string
	Header http.Header
	Body   []byte // after gzip decoding
	Req    *collectortrace.ExportTraceServiceRequest
	Err    error // why Body is not a valid OTLP/JSON export request
}

// StartOTLPReceiver starts a receiver that lives until the test ends.
// respond, when not nil, answers request n (1-based) instead of the
// default 200 with an empty JSON response; it returns false to fall back
// to the default. A request that is not a valid OTLP/JSON export gets 400.
func StartOTLPReceiver(t testing.TB, respond func(n int, w http.ResponseWriter) bool) *OTLPReceiver {
	t.Helper()
	r := &OTLPReceiver{respond: respond}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *OTLPReceiver) serve(w http.ResponseWriter, hr *http.Request) {
	got := OTLPReceived{At: time.Now(), Path: hr.URL.Path, Header: hr.Header.Clone()}
	var body io.Reader = hr.Body
	if hr.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(hr.Body)
		if err != nil {
			got.Err = fmt.Errorf("gzip: %w", err)
		} else {
			body = zr
		}
	}
	if got.Err == nil {
		got.Body, got.Err = io.ReadAll(body)
	}
	switch {
	case got.Err != nil:
	case hr.Method != http.MethodPost:
		got.Err = fmt.Errorf("method %s", hr.Method)
	case hr.Header.Get("Content-Type") != "application/json":
		got.Err = fmt.Errorf("content type %q", hr.Header.Get("Content-Type"))
	default:
		got.Req, got.Err = DecodeOTLPJSON(got.Body)
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, got)
	n := len(r.reqs)
	r.mu.Unlock()

	if got.Err != nil {
		http.Error(w, got.Err.Error(), http.StatusBadRequest)
		return
	}
	if r.respond != nil && r.respond(n, w) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{}`))
}

// Received returns the requests so far.
func (r *OTLPReceiver) Received() []OTLPReceived {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]OTLPReceived(nil), r.reqs...)
}

// DecodeOTLPJSON decodes an OTLP/JSON export request strictly (unknown
// fields are errors). OTLP/JSON differs from plain proto3 JSON in one way:
// trace and span ids are hex, not base64. So ids are checked to be hex of
// the right length and rewritten as base64 first, after which protojson
// must accept the document as is.
func DecodeOTLPJSON(body []byte) (*collectortrace.ExportTraceServiceRequest, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep numbers exactly as sent
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if err := hexIDsToBase64(doc); err != nil {
		return nil, err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	req := &collectortrace.ExportTraceServiceRequest{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("not an OTLP ExportTraceServiceRequest: %w", err)
	}
	return req, nil
}

func hexIDsToBase64(v any) error {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			size := map[string]int{"traceId": 16, "spanId": 8, "parentSpanId": 8}[k]
			if size == 0 {
				if err := hexIDsToBase64(e); err != nil {
					return err
				}
				continue
			}
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("%s is %T, want a hex string", k, e)
			}
			b, err := hex.DecodeString(s)
			if err != nil || len(b) != size {
				return fmt.Errorf("%s %q is not %d bytes of hex", k, s, size)
			}
			v[k] = base64.StdEncoding.EncodeToString(b)
		}
	case []any:
		for _, e := range v {
			if err := hexIDsToBase64(e); err != nil {
				return err
			}
		}
	}
	return nil
}
