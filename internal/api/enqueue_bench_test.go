package api

// Benchmarks of the enqueue request path: decoding and validation alone,
// then the whole handler (auth, decode, store, encode) on each real store,
// called in-process so no socket is measured.
//
//	go test -run '^$' -bench . -benchmem ./internal/api

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/dispatch"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/testbody"
	"github.com/spoolhq/spool/internal/testpg"
)

// benchTask is the shape of a typical task: a target with a header, a
// small JSON payload, a priority and an idempotency-free enqueue.
const benchTask = `{"target":{"url":"https://hooks.example.com/orders","headers":{"X-Tenant":"acme"}},` +
	`"payload":{"order":12345,"items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}]},"priority":3,"max_attempts":5,"timeout":"10s"}`

func benchBatch(n int) []byte {
	return []byte(`{"tasks":[` + strings.TrimSuffix(strings.Repeat(benchTask+",", n), ",") + `]}`)
}

func benchDecodeEnv() decodeEnv {
	guard := dispatch.Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	return decodeEnv{queue: "orders", now: time.Now(), maxBodyBytes: DefaultMaxBodyBytes, maxBatch: DefaultMaxBatch, checkTarget: guard.CheckURL}
}

// BenchmarkDecodeEnqueue: JSON decoding and validation of a request body
// into store.NewTasks, the CPU the API spends per task before the store.
func BenchmarkDecodeEnqueue(b *testing.B) {
	for _, c := range []struct {
		name  string
		body  []byte
		tasks int
	}{{"single", []byte(benchTask), 1}, {"batch100", benchBatch(100), 100}} {
		b.Run(c.name, func(b *testing.B) {
			env := benchDecodeEnv()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				ts, _, err := decodeEnqueue(c.body, env)
				if err != nil || len(ts) != c.tasks {
					b.Fatalf("decode: %d tasks, %v", len(ts), err)
				}
			}
			b.ReportMetric(float64(b.N*c.tasks)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

func benchStores(b *testing.B) map[string]store.Store {
	b.Helper()
	ctx := context.Background()
	lite, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = lite.Close() })
	pg, err := postgres.Open(ctx, testpg.Shared(b).CreateDB(b), postgres.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pg.Close() })
	for _, m := range []interface{ Migrate(context.Context) error }{lite, pg} {
		if err := m.Migrate(ctx); err != nil {
			b.Fatal(err)
		}
	}
	return map[string]store.Store{"sqlite": lite, "postgres": pg}
}

// BenchmarkEnqueueHandler: POST /v1/queues/orders/tasks through the whole
// handler on each store; "parallel" runs 32 requests per GOMAXPROCS at once
// as many clients would.
func BenchmarkEnqueueHandler(b *testing.B) {
	stores := benchStores(b)
	for _, name := range []string{"sqlite", "postgres"} {
		h, err := New(Config{Store: stores[name], APIKeys: []auth.Key{{Secret: testKey, Role: auth.Admin}}})
		if err != nil {
			b.Fatal(err)
		}
		send := func(b *testing.B, body []byte) {
			req := httptest.NewRequest(http.MethodPost, "/v1/queues/orders/tasks", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusCreated {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
		for _, c := range []struct {
			mode  string
			body  []byte
			tasks int
		}{{"single", []byte(benchTask), 1}, {"batch100", benchBatch(100), 100}} {
			b.Run(fmt.Sprintf("%s/%s", name, c.mode), func(b *testing.B) {
				for b.Loop() {
					send(b, c.body)
				}
				b.ReportMetric(float64(b.N*c.tasks)/b.Elapsed().Seconds(), "tasks/s")
			})
		}
		b.Run(name+"/single-parallel", func(b *testing.B) {
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					send(b, []byte(benchTask))
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// maxBatch is a batch of DefaultMaxBatch tasks whose body is just under
// the default batch limit (10 MiB).
func maxBatch(b64 bool) []byte {
	return testbody.Batch(DefaultMaxBatch, DefaultMaxBodyBytes*BatchBodyFactor, "https://hooks.example.com/orders", b64)
}

// BenchmarkReadDecodeMaxBatch: reading and decoding a maximum-size batch
// (1,000 tasks, 10 MiB), the request's memory before the store. B/op is
// the figure: issue 14 item 3 asks for fewer copies of the body.
func BenchmarkReadDecodeMaxBatch(b *testing.B) {
	for _, b64 := range []bool{false, true} {
		body := maxBatch(b64)
		if len(body) > DefaultMaxBodyBytes*BatchBodyFactor {
			b.Fatalf("body %d bytes, over the limit", len(body))
		}
		b.Run(map[bool]string{false: "payload", true: "payload_base64"}[b64], func(b *testing.B) {
			env := benchDecodeEnv()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/queues/orders/tasks", bytes.NewReader(body))
				rd, err := readBody(req)
				if err != nil {
					b.Fatal(err)
				}
				ts, _, err := decodeEnqueue(rd, env)
				if err != nil || len(ts) != DefaultMaxBatch {
					b.Fatalf("decode: %d tasks, %v", len(ts), err)
				}
			}
		})
	}
}

// BenchmarkEnqueueMaxBatch: a maximum-size batch through the whole
// handler on each store; B/op is the memory one such request allocates,
// store drivers included.
func BenchmarkEnqueueMaxBatch(b *testing.B) {
	stores := benchStores(b)
	body := maxBatch(false)
	for _, name := range []string{"sqlite", "postgres"} {
		h, err := New(Config{Store: stores[name], APIKeys: []auth.Key{{Secret: testKey, Role: auth.Admin}}})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/queues/orders/tasks", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+testKey)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusCreated {
					b.Fatalf("status %d: %.300s", rec.Code, rec.Body)
				}
			}
		})
	}
}
