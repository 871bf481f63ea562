package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
)

// The fuzz targets here cover the small parsers the enqueue fuzzer reaches
// only by luck: duration strings (delay, timeout) and the list cursor.
// Each states what an accepted value must satisfy independently of the
// parser, so a parser bug that lets a bad value through fails the target.

// durationSeeds are spellings time.ParseDuration treats specially: signs,
// fractions, unit mixes, overflow edges, and the bounds themselves.
var durationSeeds = []string{
	"", "0", "0s", "-0s", "+0s", "1ns", "999us", "999µs", "999μs", "1ms", "30s", "1m30s", "1.5h", ".5s", "5.s",
	"-1s", "+1s", "30m", "30m0.000000001s", "1800s", "1800.000000001s", "8784h", "8784h0.000000001s", "8785h",
	"366d", "1d", "1w", "1e3s", "0x10s", "9223372036854775807ns", "9223372036854775808ns", "2562047h47m16.854775807s",
	"2562048h", "-9223372036854775808ns", "1h-1m", "1h 1m", " 1s", "1s ", "1S", "1H", "01s", "00000000000000000000001s",
	"0.0000000000000000000001s", "1.0000000000000000000000000001s", "\u00001s", "1s\x00", "∞s", "NaNs", "١s",
}

// FuzzDuration feeds arbitrary strings to the duration decoder as the
// enqueue fields delay and timeout and as the queue patch timeout. It
// must never panic; a refusal names the field; anything accepted is what
// time.ParseDuration reads and lies within the field's bounds, and the
// task built from it is due no earlier than now and no later than
// task.MaxScheduleAhead ahead.
func FuzzDuration(f *testing.F) {
	for _, s := range durationSeeds {
		f.Add(s)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		raw, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal %q: %v", s, err)
		}
		// json.Marshal replaces invalid UTF-8; the decoder sees what a
		// client's JSON library would have sent.
		var sent string
		if err := json.Unmarshal(raw, &sent); err != nil {
			t.Fatalf("unmarshal %s: %v", raw, err)
		}
		parsed, perr := time.ParseDuration(sent)

		for _, b := range []struct {
			field  string
			lo, hi time.Duration
		}{
			{"delay", 0, task.MaxScheduleAhead},
			{"timeout", time.Millisecond, task.MaxTimeout},
		} {
			c := &collector{}
			d, ok := decodeDuration(c, b.field, raw, b.lo, b.hi)
			if !ok {
				if len(c.errs) != 1 || c.errs[0].Field != b.field || c.errs[0].Detail == "" {
					t.Fatalf("%s %q refused without exactly one problem naming the field: %+v", b.field, sent, c.errs)
				}
				if perr == nil && parsed >= b.lo && parsed <= b.hi {
					t.Fatalf("%s %q refused, but it parses as %s, within [%s, %s]", b.field, sent, parsed, b.lo, b.hi)
				}
				continue
			}
			if len(c.errs) != 0 {
				t.Fatalf("%s %q accepted with problems %+v", b.field, sent, c.errs)
			}
			if perr != nil || d != parsed {
				t.Fatalf("%s %q accepted as %s; time.ParseDuration says %s, %v", b.field, sent, d, parsed, perr)
			}
			if d < b.lo || d > b.hi || d < 0 {
				t.Fatalf("%s %q accepted as %s, outside [%s, %s]", b.field, sent, d, b.lo, b.hi)
			}
		}

		// Through the whole enqueue decoder, as a client would send it.
		env := decodeEnv{queue: "q", now: now, maxBodyBytes: 1 << 16, maxBatch: 10}
		body := `{"target":{"url":"http://h/"},"delay":` + string(raw) + `,"timeout":` + string(raw) + `}`
		tasks, _, err := decodeEnqueue([]byte(body), env)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != http.StatusUnprocessableEntity {
				t.Fatalf("refusal of %q is not a 422 problem: %#v", sent, err)
			}
			if perr == nil && parsed >= time.Millisecond && parsed <= task.MaxTimeout {
				t.Fatalf("%q is a valid delay and timeout but was refused: %v", sent, err)
			}
		} else {
			if len(tasks) != 1 {
				t.Fatalf("%d tasks from one", len(tasks))
			}
			tk := tasks[0]
			if tk.Timeout < time.Millisecond || tk.Timeout > task.MaxTimeout || tk.Timeout != parsed {
				t.Fatalf("timeout %q stored as %s", sent, tk.Timeout)
			}
			if !tk.RunAt.IsZero() {
				ahead := tk.RunAt.Sub(now)
				if ahead <= 0 || ahead > task.MaxScheduleAhead || ahead != parsed {
					t.Fatalf("delay %q scheduled %s ahead", sent, ahead)
				}
			}
		}

		// The queue patch reads timeout with the same bounds.
		p, err := decodePatch([]byte(`{"timeout":` + string(raw) + `}`))
		if err == nil && (p.Timeout == nil || *p.Timeout < time.Millisecond || *p.Timeout > task.MaxTimeout) {
			t.Fatalf("patch timeout %q accepted as %v", sent, p.Timeout)
		}
	})
}

// cursorSeeds: cursors this server issues, and near misses of them.
func cursorSeeds() []string {
	id := "01890a5d-ac96-774b-bcce-b302099a8057"
	good := encodeCursor(id)
	return []string{
		"", good, encodeCursor(strings.ToUpper(id)), good + "=", good + "A", good[:len(good)-1],
		base64.StdEncoding.EncodeToString([]byte(id)), base64.URLEncoding.EncodeToString([]byte(id)),
		encodeCursor("01890a5dac96774bbcceb302099a8057"), encodeCursor("{01890a5d-ac96-774b-bcce-b302099a8057}"),
		encodeCursor("urn:uuid:01890a5d-ac96-774b-bcce-b302099a8057"), encodeCursor("01890a5d-ac96-774b-bcce-b302099a805g"),
		encodeCursor("01890a5d+ac96-774b-bcce-b302099a8057"), encodeCursor("00000000-0000-0000-0000-000000000000"),
		encodeCursor("ffffffff-ffff-ffff-ffff-ffffffffffff"), encodeCursor(strings.Repeat("-", 36)),
		encodeCursor("01890a5d-ac96-774b-bcce-b302099a8057\x00"), "!!!", "%", "%00", "\xff\xfe", strings.Repeat("A", 48),
		"a b", "a&cursor=b", "a+b/c", "MDE4OTBhNWQtYWM5Ni03NzRiLWJjY2UtYjMwMjA5OWE4MDU3\n",
	}
}

// FuzzCursor checks the list cursor: decodeCursor must never panic, what
// it accepts is a UUID in canonical form that re-encodes to a cursor
// decoding to the same id, and the list endpoint on the real SQLite store
// answers any cursor with 200 or a 422 problem naming "cursor", never a
// 5xx, exactly as decodeCursor decided.
func FuzzCursor(f *testing.F) {
	for _, s := range cursorSeeds() {
		f.Add(s)
	}
	st := openFuzzSQLite(f)
	h, err := New(Config{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	seedQueue(f, st)
	f.Fuzz(func(t *testing.T, c string) {
		id, ok := decodeCursor(c)
		if ok {
			u, err := uuid.Parse(id)
			if err != nil || u.String() != id {
				t.Fatalf("cursor %q accepted as %q, not a canonical UUID (%v)", c, id, err)
			}
			back, ok2 := decodeCursor(encodeCursor(id))
			if !ok2 || back != id {
				t.Fatalf("cursor %q → %q does not round-trip: %q %v", c, id, back, ok2)
			}
			// Independently: the cursor is base64url of 36 bytes spelling that UUID.
			b, err := base64.RawURLEncoding.DecodeString(c)
			if err != nil || !strings.EqualFold(string(b), id) {
				t.Fatalf("cursor %q accepted as %q but decodes to %q (%v)", c, id, b, err)
			}
		} else if id != "" {
			t.Fatalf("refused cursor %q came with id %q", c, id)
		}

		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/queues/q/tasks?cursor="+queryEscape(c), nil)
		h.ServeHTTP(rec, req)
		switch {
		case c == "" || ok:
			if rec.Code != http.StatusOK {
				t.Fatalf("cursor %q (valid or empty): status %d: %s", c, rec.Code, rec.Body)
			}
		default:
			if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(rec.Body.String(), `"field":"cursor"`) {
				t.Fatalf("cursor %q: status %d, want a 422 naming cursor: %s", c, rec.Code, rec.Body)
			}
		}
	})
}

// FuzzListQuery sends arbitrary raw query strings to the task list, so the
// query parser, state, limit and cursor meet whatever a client may type.
// Never a 5xx; a refusal is a 400 (unparseable query) or 422 (a bad
// parameter) problem; an accepted page holds at most MaxListLimit tasks.
func FuzzListQuery(f *testing.F) {
	for _, s := range []string{
		"", "limit=1", "limit=1000", "limit=1001", "limit=0", "limit=-1", "limit=1e3", "limit=01", "limit=+5",
		"limit=99999999999999999999", "state=available", "state=AVAILABLE", "state=done", "state=", "cursor=",
		"cursor=" + encodeCursor("01890a5d-ac96-774b-bcce-b302099a8057"), "cursor=%", "cursor=%zz", "limit=1&limit=2",
		"lmit=5", ";", "&&&", "=", "a=%00", "state=failed&limit=2&cursor=x", "state=available;limit=1", "%ff=1",
		"priority=3", "priority=10", "priority=-0", "target_host=h", "target_host=%5B::1%5D", "target_host=a:1",
		"idempotency_key=k", "idempotency_key=%7F", "created_after=2026-01-02T03:04:05Z", "created_before=2026-01-02T03:04:05.999999999%2B14:00",
		"run_after=0001-01-01T00:00:00Z", "run_before=9999-12-31T23:59:59Z", "created_after=1969-12-31T23:59:59Z&limit=1",
		"created_after=2026-01-02T00:00:00Z&created_before=2026-01-01T00:00:00Z", "priority=1&target_host=h&limit=1&state=available",
	} {
		f.Add(s)
	}
	st := openFuzzSQLite(f)
	h, err := New(Config{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	seedQueue(f, st)
	f.Fuzz(func(t *testing.T, q string) {
		if strings.ContainsAny(q, "# \t\r\n") || strings.ContainsFunc(q, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			// Not a query a client can put on a request line: net/http
			// refuses the request before any handler sees it.
			return
		}
		req := httptest.NewRequest("GET", "/v1/queues/q/tasks", nil)
		req.URL.RawQuery = q
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var l taskListJSON
			if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
				t.Fatalf("?%s: 200 with an unreadable body: %v", q, err)
			}
			if len(l.Tasks) > MaxListLimit {
				t.Fatalf("?%s: %d tasks on one page", q, len(l.Tasks))
			}
		case http.StatusBadRequest, http.StatusUnprocessableEntity:
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("?%s: 400 as %q", q, ct)
			}
		default:
			t.Fatalf("?%s: status %d: %s", q, rec.Code, rec.Body)
		}
	})
}

// queryEscape percent-encodes every byte outside the unreserved set, so
// the cursor reaches the handler exactly as given.
func queryEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// openFuzzSQLite opens a migrated embedded store for a fuzz target (each
// fuzz worker process gets its own).
func openFuzzSQLite(tb testing.TB) store.Store {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatalf("sqlite.Open: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	if err := st.Migrate(ctx); err != nil {
		tb.Fatalf("sqlite migrate: %v", err)
	}
	return st
}

// seedQueue gives queue q a few tasks so cursors land inside a real list.
func seedQueue(tb testing.TB, st store.Store) {
	tb.Helper()
	var ts []store.NewTask
	for range 5 {
		id, _ := uuid.NewV7()
		ts = append(ts, store.NewTask{ID: id.String(), Queue: "q", Priority: task.DefaultPriority,
			Target: task.Target{URL: "http://h/", Method: "POST", Headers: map[string]string{}}})
	}
	if _, err := st.Enqueue(context.Background(), ts); err != nil {
		tb.Fatalf("seed: %v", err)
	}
}
