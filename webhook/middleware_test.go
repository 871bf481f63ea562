package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// signedRequest builds a delivery as Spool's dispatcher does: SetHeaders
// with every sender key, plus spool-attempt.
func signedRequest(t *testing.T, senderKeys [][]byte, id string, ts time.Time, body string, attempt string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
	SetHeaders(r.Header, senderKeys, id, ts, []byte(body))
	if attempt != "" {
		r.Header.Set(HeaderAttempt, attempt)
	}
	return r
}

// recordingHandler notes what the handler behind the middleware saw.
type recordingHandler struct {
	calls   atomic.Int32
	body    string
	id      string
	idOK    bool
	attempt int
}

func (h *recordingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.calls.Add(1)
	b, err := io.ReadAll(r.Body)
	if err != nil {
		panic(err)
	}
	h.body = string(b)
	h.id, h.idOK = IDFromContext(r.Context())
	h.attempt, _ = AttemptFromContext(r.Context())
	w.WriteHeader(http.StatusNoContent)
}

func TestMiddlewarePassesVerifiedRequest(t *testing.T) {
	t.Parallel()
	oldKey, current := newKey(t), newKey(t)
	now := time.Now()
	// Mid-rotation: the sender signs with both keys, this receiver already
	// knows only the new one, and must still accept.
	r := signedRequest(t, [][]byte{oldKey, current}, "msg-1", now, `{"order":42}`, "3")
	h := &recordingHandler{}
	w := httptest.NewRecorder()
	Middleware([][]byte{current})(h).ServeHTTP(w, r)
	if w.Code != http.StatusNoContent || h.calls.Load() != 1 {
		t.Fatalf("status %d, handler calls %d: %s", w.Code, h.calls.Load(), w.Body)
	}
	if h.body != `{"order":42}` {
		t.Errorf("handler read body %q, want it restored", h.body)
	}
	if h.id != "msg-1" || !h.idOK || h.attempt != 3 {
		t.Errorf("context: id %q (ok %v), attempt %d", h.id, h.idOK, h.attempt)
	}
}

func TestMiddlewareRefuses(t *testing.T) {
	t.Parallel()
	key, other := newKey(t), newKey(t)
	now := time.Unix(1_800_000_000, 0)
	cases := []struct {
		name   string
		keys   [][]byte
		opts   []Option
		req    func() *http.Request
		status int
		is     error
	}{
		{"unsigned", [][]byte{key}, nil, func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader("x"))
		}, http.StatusUnauthorized, ErrMissingHeaders},
		{"another key", [][]byte{key}, nil, func() *http.Request {
			return signedRequest(t, [][]byte{other}, "m", now, "x", "1")
		}, http.StatusUnauthorized, ErrNoMatch},
		{"tampered body", [][]byte{key}, nil, func() *http.Request {
			r := signedRequest(t, [][]byte{key}, "m", now, "amount=1", "1")
			r.Body = io.NopCloser(strings.NewReader("amount=9"))
			return r
		}, http.StatusUnauthorized, ErrNoMatch},
		{"tampered id", [][]byte{key}, nil, func() *http.Request {
			r := signedRequest(t, [][]byte{key}, "m", now, "x", "1")
			r.Header.Set(HeaderID, "m2")
			return r
		}, http.StatusUnauthorized, ErrNoMatch},
		{"stale beyond the default 5 minutes", [][]byte{key}, nil, func() *http.Request {
			return signedRequest(t, [][]byte{key}, "m", now.Add(-5*time.Minute-time.Second), "x", "1")
		}, http.StatusUnauthorized, ErrTimestamp},
		{"future beyond a 10s tolerance", [][]byte{key}, []Option{WithTolerance(10 * time.Second)}, func() *http.Request {
			return signedRequest(t, [][]byte{key}, "m", now.Add(11*time.Second), "x", "1")
		}, http.StatusUnauthorized, ErrTimestamp},
		{"no keys configured", nil, nil, func() *http.Request {
			return signedRequest(t, [][]byte{key}, "m", now, "x", "1")
		}, http.StatusUnauthorized, ErrNoMatch},
		{"body over the limit", [][]byte{key}, []Option{WithMaxBodyBytes(8)}, func() *http.Request {
			return signedRequest(t, [][]byte{key}, "m", now, "123456789", "1")
		}, http.StatusRequestEntityTooLarge, ErrBodyTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got error
			opts := append([]Option{WithClock(func() time.Time { return now })}, tc.opts...)
			record := WithErrorHandler(func(w http.ResponseWriter, r *http.Request, err error) {
				got = err
				DefaultErrorHandler(w, r, err)
			})
			h := &recordingHandler{}
			w := httptest.NewRecorder()
			Middleware(tc.keys, append(opts, record)...)(h).ServeHTTP(w, tc.req())
			if w.Code != tc.status {
				t.Errorf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if h.calls.Load() != 0 {
				t.Error("handler called for a refused request")
			}
			if !errors.Is(got, tc.is) {
				t.Errorf("error %v, want %v", got, tc.is)
			}
		})
	}
}

func TestMiddlewareToleranceBoundary(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	now := time.Unix(1_800_000_000, 0)
	mw := Middleware([][]byte{key}, WithClock(func() time.Time { return now }), WithTolerance(10*time.Second))
	for _, skew := range []time.Duration{-10 * time.Second, 10 * time.Second} {
		h := &recordingHandler{}
		w := httptest.NewRecorder()
		mw(h).ServeHTTP(w, signedRequest(t, [][]byte{key}, "m", now.Add(skew), "x", ""))
		if w.Code != http.StatusNoContent {
			t.Errorf("skew %s: status %d, want the handler's 204", skew, w.Code)
		}
		if h.attempt != 0 {
			t.Errorf("no spool-attempt header: attempt %d, want 0", h.attempt)
		}
	}
}

func TestMiddlewareSeen(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	var asked atomic.Int32
	handled := map[string]bool{"done": true}
	seen := func(ctx context.Context, id string) (bool, error) {
		asked.Add(1)
		if id == "broken" {
			return false, errors.New("database down")
		}
		return handled[id], nil
	}
	mw := Middleware([][]byte{key}, WithSeen(seen))
	cases := []struct {
		id          string
		status      int
		handlerRuns bool
	}{
		{"new", http.StatusNoContent, true},
		{"done", http.StatusOK, false},                    // a duplicate: 2xx so Spool stops redelivering
		{"broken", http.StatusInternalServerError, false}, // check failed: Spool retries later
	}
	for _, tc := range cases {
		h := &recordingHandler{}
		w := httptest.NewRecorder()
		mw(h).ServeHTTP(w, signedRequest(t, [][]byte{key}, tc.id, time.Now(), "x", "2"))
		if w.Code != tc.status || (h.calls.Load() == 1) != tc.handlerRuns {
			t.Errorf("%s: status %d, handler calls %d; want %d, runs %v", tc.id, w.Code, h.calls.Load(), tc.status, tc.handlerRuns)
		}
		if strings.Contains(w.Body.String(), "database down") {
			t.Errorf("%s: the duplicate check's error reached the sender: %s", tc.id, w.Body)
		}
	}
	// An unverified request never reaches the duplicate check: its id is
	// the sender's word only.
	before := asked.Load()
	w := httptest.NewRecorder()
	mw(&recordingHandler{}).ServeHTTP(w, signedRequest(t, [][]byte{newKey(t)}, "done", time.Now(), "x", "1"))
	if w.Code != http.StatusUnauthorized || asked.Load() != before {
		t.Errorf("forged request: status %d, seen asked %d more times", w.Code, asked.Load()-before)
	}
}

func TestVerifyRequestRestoresBody(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	r := signedRequest(t, [][]byte{key}, "m", time.Now(), "payload", "1")
	body, err := VerifyRequest(r, [][]byte{key})
	if err != nil || string(body) != "payload" {
		t.Fatalf("VerifyRequest = %q, %v", body, err)
	}
	again, _ := io.ReadAll(r.Body)
	if string(again) != "payload" {
		t.Fatalf("body after VerifyRequest = %q", again)
	}
	r = signedRequest(t, [][]byte{key}, "m", time.Now(), "payload", "1")
	if _, err := VerifyRequest(r, [][]byte{key}, WithMaxBodyBytes(6)); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	r = signedRequest(t, [][]byte{key}, "m", time.Now(), "payload", "1")
	if _, err := VerifyRequest(r, [][]byte{key}, WithMaxBodyBytes(7)); err != nil {
		t.Fatalf("exactly the limit: %v", err)
	}
}

func TestContextOutsideMiddleware(t *testing.T) {
	t.Parallel()
	if id, ok := IDFromContext(context.Background()); ok || id != "" {
		t.Errorf("IDFromContext = %q, %v", id, ok)
	}
	if n, ok := AttemptFromContext(context.Background()); ok || n != 0 {
		t.Errorf("AttemptFromContext = %d, %v", n, ok)
	}
}
