package dispatch

// BenchmarkDrain measures the delivery path end to end without the API:
// b.N tasks already in the embedded store are leased, delivered as signed
// POSTs over loopback to a verifying sink, and completed by a Dispatcher
// with the default worker count. The PostgreSQL drain, next to River's, is
// measured by bench/river.
//
//	go test -run '^$' -bench . -benchtime 5000x ./internal/dispatch

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/sink"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/webhook"
)

func BenchmarkDrain(b *testing.B) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	keyStr, _ := webhook.GenerateKey()
	key, _ := webhook.ParseKey(keyStr)
	sk := sink.New(sink.Config{Keys: [][]byte{key}})
	srv := httptest.NewServer(sk)
	defer srv.Close()

	for left := b.N; left > 0; {
		batch := make([]store.NewTask, min(left, 1000))
		for i := range batch {
			batch[i] = store.NewTask{ID: uuid.Must(uuid.NewV7()).String(), Queue: "bench",
				Target: task.Target{URL: srv.URL + "/hook", Method: "POST"}, Payload: []byte(`{"seq":1}`),
				ContentType: "application/json", Priority: task.DefaultPriority}
		}
		if _, err := st.Enqueue(ctx, batch); err != nil {
			b.Fatal(err)
		}
		left -= len(batch)
	}

	b.ResetTimer()
	d := New(Config{
		Store:       st,
		Client:      NewHTTPClient(Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
		SigningKeys: [][]byte{key},
		// As spool serve runs it: every attempt recorded, with an excerpt.
		AttemptBodyBytes: task.DefaultAttemptBodyBytes,
	})
	if err := d.Start(ctx); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for sk.Stats().Unique < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d delivered after 5 minutes", sk.Stats().Unique, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	stop, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d.Stop(stop)
	if st := sk.Stats(); st.BadSignatures != 0 || st.Duplicates != 0 {
		b.Fatalf("sink stats %+v", st)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
