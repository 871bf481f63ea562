package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// listAttemptsSQL reads a task's attempts through spool_attempts' primary
// key, in one statement that also tells a task with no attempts (one row
// of NULLs, from the outer join) from no task at all (no row).
const listAttemptsSQL = `SELECT a.attempt, a.outcome, a.started_at, a.finished_at, a.duration_us, a.status,
		a.error_class, a.error_message, a.response_excerpt, a.response_headers::text, a.replica, a.trace_id
	FROM spool_tasks t LEFT JOIN spool_attempts a ON a.task_id = t.id
	WHERE t.id = $1
	ORDER BY a.seq`

// ListAttempts returns a task's attempts, oldest first.
func (s *Store) ListAttempts(ctx context.Context, taskID string) ([]task.Attempt, error) {
	op := "list attempts of " + taskID
	if !validID(taskID) {
		return nil, fmt.Errorf("list attempts %q: %w", taskID, store.ErrNotFound)
	}
	rows, err := s.pool.Query(ctx, listAttemptsSQL, taskID)
	if err != nil {
		return nil, wrap(op, err)
	}
	var (
		out     = []task.Attempt{}
		found   bool
		attempt *int32
		outcome *string
		started *time.Time
		fin     *time.Time
		durUS   *int64
		status  *int32
		class   *string
		msg     *string
		excerpt *string
		headers *string
		replica *string
		traceID *string
	)
	_, err = pgx.ForEachRow(rows, []any{&attempt, &outcome, &started, &fin, &durUS, &status, &class, &msg, &excerpt, &headers, &replica, &traceID}, func() error {
		found = true
		if attempt == nil { // the task, without attempts
			return nil
		}
		a := task.Attempt{TaskID: taskID, Attempt: int(*attempt), Outcome: task.AttemptOutcome(*outcome),
			ErrorClass: task.ErrorClass(deref(class)), ErrorMessage: deref(msg), Replica: deref(replica), TraceID: deref(traceID)}
		if started != nil {
			a.StartedAt = started.UTC()
		}
		if fin != nil {
			a.FinishedAt = fin.UTC()
		}
		if durUS != nil {
			a.Duration = time.Duration(*durUS) * time.Microsecond
		}
		if status != nil {
			a.Status = int(*status)
		}
		if excerpt != nil {
			e := *excerpt
			a.ResponseExcerpt = &e
		}
		h, err := store.DecodeAttemptHeaders(deref(headers))
		if err != nil {
			return err
		}
		a.ResponseHeaders = h
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	if !found {
		return nil, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
