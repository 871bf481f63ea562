package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// hangingStore answers GetTask only when the request's context ends, like
// a database whose packets are being dropped.
type hangingStore struct{ store.Store }

func (hangingStore) GetTask(ctx context.Context, _ string) (task.Task, error) {
	<-ctx.Done()
	return task.Task{}, ctx.Err()
}

// A store that stops answering costs a request RequestTimeout, then a 503
// problem, never an open-ended hang.
func TestRequestTimeoutBoundsStoreCalls(t *testing.T) {
	e := newEnv(t, hangingStore{}, func(c *Config) { c.RequestTimeout = 200 * time.Millisecond })
	start := time.Now()
	res := e.do("GET", "/v1/tasks/0192f0c1-7b7a-7c4e-9a1b-123456789abc", "")
	if res.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %s", res.Code, res)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s with a 200ms request timeout", took)
	}
}

// A client that goes away while the store works gets no 5xx: the answer
// nobody reads is a 499, so a disconnect never counts as a server error.
func TestClientGoneIsNotAServerError(t *testing.T) {
	e := newEnv(t, hangingStore{}, func(*Config) {})
	ctx, cancel := context.WithCancel(context.Background())
	req := e.newReq("GET", "/v1/tasks/0192f0c1-7b7a-7c4e-9a1b-123456789abc", "").WithContext(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	res := e.doReq(req)
	if res.Code != statusClientClosedRequest {
		t.Fatalf("status %d, want 499: %s", res.Code, res)
	}
}

type notMigratedStore struct{ store.Store }

func (notMigratedStore) Ping(context.Context) error {
	return fmt.Errorf("ping: %w: version 2, needs 3", store.ErrNotMigrated)
}

// A database without the schema keeps the replica out of service and
// says why.
func TestReadyzNotMigrated(t *testing.T) {
	e := newEnv(t, notMigratedStore{}, func(*Config) {})
	res := e.do("GET", "/readyz", "")
	if res.Code != http.StatusServiceUnavailable || !strings.Contains(string(res.Body), "schema is not migrated") {
		t.Fatalf("readyz = %d %s, want 503 naming the schema", res.Code, res.Body)
	}
}
