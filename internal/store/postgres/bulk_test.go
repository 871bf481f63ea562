package postgres

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// TestBulkSurvivesDeadlock: a bulk cancel that meets another transaction
// locking the same rows in the other order (as a completion batch may) is
// the deadlock's victim, and runs again instead of failing the request.
func TestBulkSurvivesDeadlock(t *testing.T) {
	t.Parallel()
	s, _ := migratedConns(t, 4)
	ctx := t.Context()
	var ids []string
	var nts []store.NewTask
	for range 2 {
		id := uuid.Must(uuid.NewV7()).String()
		ids = append(ids, id)
		nts = append(nts, store.NewTask{ID: id, Queue: "q", Target: task.Target{URL: "http://127.0.0.1:9/"}})
	}
	slices.Sort(ids)
	if _, err := s.Enqueue(ctx, nts); err != nil {
		t.Fatal(err)
	}
	// Another transaction holds the second row...
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE spool_tasks SET updated_at = now() WHERE id = $1`, ids[1]); err != nil {
		t.Fatal(err)
	}
	// ...the bulk cancel locks the first and waits for the second...
	type answer struct {
		res []store.BulkResult
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := s.CancelTasks(ctx, "q", ids)
		done <- answer{res, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for waiting := 0; waiting == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the bulk cancel never waited for the row")
		}
		time.Sleep(20 * time.Millisecond)
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%cancelled%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	// ...and the other transaction now wants the first: a cycle. The bulk
	// statement, waiting longer, is the victim.
	_, err = tx.Exec(ctx, `UPDATE spool_tasks SET updated_at = now() WHERE id = $1`, ids[0])
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "40P01" {
		t.Skip("the other transaction was the deadlock's victim; the bulk retry was not exercised")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil {
		t.Fatalf("CancelTasks after a deadlock: %v", a.err)
	}
	for i, r := range a.res {
		if r.Err != nil || r.State != task.Cancelled {
			t.Errorf("result %d: %+v", i, r)
		}
	}
}
