package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// listAttemptsSQL reads a task's attempts through spool_attempts_task, in
// one statement that also tells a task with no attempts (one row of NULLs,
// from the outer join) from no task at all (no row).
const listAttemptsSQL = `SELECT a.attempt, a.outcome, a.started_at, a.finished_at, a.duration_us, a.status,
		a.error_class, a.error_message, a.response_excerpt, a.response_headers, a.replica, a.trace_id
	FROM spool_tasks t LEFT JOIN spool_attempts a ON a.task_id = t.id
	WHERE t.id = ?
	ORDER BY a.rowid`

// ListAttempts returns a task's attempts, oldest first.
func (s *Store) ListAttempts(ctx context.Context, taskID string) ([]task.Attempt, error) {
	op := "list attempts of " + taskID
	rows, err := s.read.QueryContext(ctx, listAttemptsSQL, taskID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, classify(err))
	}
	defer rows.Close()
	out := []task.Attempt{}
	found := false
	for rows.Next() {
		var (
			attempt, started, fin, durUS, status                    sql.NullInt64
			outcome, class, msg, excerpt, headers, replica, traceID sql.NullString
		)
		if err := rows.Scan(&attempt, &outcome, &started, &fin, &durUS, &status, &class, &msg, &excerpt, &headers, &replica, &traceID); err != nil {
			return nil, fmt.Errorf("%s: %w", op, classify(err))
		}
		found = true
		if !attempt.Valid { // the task, without attempts
			continue
		}
		a := task.Attempt{TaskID: taskID, Attempt: int(attempt.Int64), Outcome: task.AttemptOutcome(outcome.String),
			Status: int(status.Int64), ErrorClass: task.ErrorClass(class.String), ErrorMessage: msg.String,
			Replica: replica.String, TraceID: traceID.String}
		if started.Valid {
			a.StartedAt = fromMicros(started.Int64)
		}
		if fin.Valid {
			a.FinishedAt = fromMicros(fin.Int64)
		}
		if durUS.Valid {
			a.Duration = time.Duration(durUS.Int64) * time.Microsecond
		}
		if excerpt.Valid {
			e := excerpt.String
			a.ResponseExcerpt = &e
		}
		if a.ResponseHeaders, err = store.DecodeAttemptHeaders(headers.String); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, classify(err))
	}
	if !found {
		return nil, fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return out, nil
}
