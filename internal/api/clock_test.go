package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestDelayIgnoresTheAPIClock runs the API with a process clock an hour
// behind and an hour ahead: a task enqueued with "delay": "30s" is due 30
// s after the store's now (PostgreSQL's now(); the test cluster shares this
// machine's clock, which the bounds read), never early, never an hour late.
// An explicit run_at is the client's absolute time and is stored as given.
func TestDelayIgnoresTheAPIClock(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, st store.Store) {
		for _, skew := range []time.Duration{-time.Hour, time.Hour} {
			e := newEnv(t, st, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(skew) } })
			before := time.Now()
			created := decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks",
				`{"target": {"url": "https://example.com/hook"}, "delay": "30s"}`), http.StatusCreated))
			after := time.Now()
			tk, err := st.GetTask(context.Background(), created.ID)
			if err != nil {
				t.Fatal(err)
			}
			if tk.State != task.Scheduled || tk.RunAt.Before(before.Add(30*time.Second-time.Millisecond)) || tk.RunAt.After(after.Add(30*time.Second+time.Millisecond)) {
				t.Errorf("API clock off by %s: delay 30s stored as %s, run_at %s from now; want scheduled, 30s",
					skew, tk.State, tk.RunAt.Sub(after).Round(time.Millisecond))
			}
			if n, err := st.PromoteDue(context.Background()); err != nil || n != 0 {
				t.Errorf("API clock off by %s: PromoteDue = %d, %v; want 0", skew, n, err)
			}

			at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Millisecond)
			created = decode[taskJSON](t, want(t, e.do("POST", "/v1/queues/q/tasks",
				fmt.Sprintf(`{"target": {"url": "https://example.com/hook"}, "run_at": %q}`, at.Format(time.RFC3339Nano))), http.StatusCreated))
			if tk, err = st.GetTask(context.Background(), created.ID); err != nil || !tk.RunAt.Equal(at) {
				t.Errorf("API clock off by %s: run_at %s stored as %s (%v)", skew, at, tk.RunAt, err)
			}
		}
	})
}
