package api_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/spoolhq/spool/internal/api"
	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store/sqlite"
)

// ExampleNew wires the API to an embedded store and enqueues a task.
func ExampleNew() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "spool-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, filepath.Join(dir, "spool.db"), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	h, err := api.New(api.Config{Store: st, APIKeys: []auth.Key{{Secret: "s3cret", Role: auth.Write}}})
	if err != nil {
		log.Fatal(err)
	}

	req := httptest.NewRequest("POST", "/v1/queues/emails/tasks",
		strings.NewReader(`{"target":{"url":"https://example.com/hook"},"payload":{"to":"a@example.com"}}`))
	req.Header.Set("Authorization", "Bearer s3cret")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))

	req = httptest.NewRequest("GET", "/v1/queues/emails", nil) // no key
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("Content-Type"))
	// Output:
	// 201 application/json
	// 401 application/problem+json
}
