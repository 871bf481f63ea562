package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

const scheduleCols = `name, cron, every_ms, timezone, missed, jitter_ms, start_at, end_at,
	queue, task, paused, source, next_run_at, last_run_at, created_at, updated_at`

func scanSchedule(r rowScanner) (schedule.Schedule, error) {
	var (
		s                         schedule.Schedule
		everyMS, jitterMS         int64
		missed, source, tmpl      string
		start, end, next, lastRun sql.NullInt64
		created, updated          int64
	)
	err := r.Scan(&s.Name, &s.Spec.Cron, &everyMS, &s.Spec.Timezone, &missed, &jitterMS, &start, &end,
		&s.Queue, &tmpl, &s.Paused, &source, &next, &lastRun, &created, &updated)
	if err != nil {
		return schedule.Schedule{}, err
	}
	s.Spec.Every = time.Duration(everyMS) * time.Millisecond
	s.Spec.Jitter = time.Duration(jitterMS) * time.Millisecond
	s.Spec.Missed, s.Source = schedule.Missed(missed), schedule.Source(source)
	s.Spec.StartAt, s.Spec.EndAt = fromNullMicros(start), fromNullMicros(end)
	s.NextRunAt, s.LastRunAt = fromNullMicros(next), fromNullMicros(lastRun)
	s.CreatedAt, s.UpdatedAt = fromMicros(created), fromMicros(updated)
	if s.Task, err = store.DecodeTemplate([]byte(tmpl)); err != nil {
		return schedule.Schedule{}, fmt.Errorf("schedule %s: %w", s.Name, err)
	}
	return s, nil
}

// writeSchedule upserts every column of s.
func writeSchedule(ctx context.Context, tx *sql.Tx, s schedule.Schedule) error {
	tmpl, err := store.EncodeTemplate(s.Task)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO spool_schedules (`+scheduleCols+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, every_ms = excluded.every_ms,
			timezone = excluded.timezone, missed = excluded.missed, jitter_ms = excluded.jitter_ms,
			start_at = excluded.start_at, end_at = excluded.end_at, queue = excluded.queue,
			task = excluded.task, paused = excluded.paused, source = excluded.source,
			next_run_at = excluded.next_run_at, last_run_at = excluded.last_run_at,
			updated_at = excluded.updated_at`,
		s.Name, s.Spec.Cron, s.Spec.Every.Milliseconds(), s.Spec.Timezone, string(s.Spec.Missed), s.Spec.Jitter.Milliseconds(),
		nullMicros(s.Spec.StartAt), nullMicros(s.Spec.EndAt), s.Queue, string(tmpl), s.Paused, string(s.Source),
		nullMicros(s.NextRunAt), nullMicros(s.LastRunAt), micros(s.CreatedAt), micros(s.UpdatedAt))
	return err
}

// readSchedule reads one schedule in tx; nil when absent.
func readSchedule(ctx context.Context, tx *sql.Tx, name string) (*schedule.Schedule, error) {
	s, err := scanSchedule(tx.QueryRowContext(ctx, `SELECT `+scheduleCols+` FROM spool_schedules WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// changeSchedule runs fn on a schedule (nil when absent) under the write
// lock and writes back what it returns.
func (s *Store) changeSchedule(ctx context.Context, op, name string, fn func(old *schedule.Schedule, now time.Time) (schedule.Schedule, bool, error)) (schedule.Schedule, error) {
	var out schedule.Schedule
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		old, err := readSchedule(ctx, tx, name)
		if err != nil {
			return err
		}
		sc, write, err := fn(old, s.now())
		if err != nil {
			return err
		}
		out = sc
		if write {
			return writeSchedule(ctx, tx, sc)
		}
		return nil
	})
	if err != nil {
		return schedule.Schedule{}, fmt.Errorf("%s: %w", op, classify(err))
	}
	return out, nil
}

// PutSchedule creates or replaces a schedule.
func (s *Store) PutSchedule(ctx context.Context, in schedule.Schedule) (schedule.Schedule, bool, error) {
	var created bool
	out, err := s.changeSchedule(ctx, "put schedule "+in.Name, in.Name, func(old *schedule.Schedule, now time.Time) (schedule.Schedule, bool, error) {
		created = old == nil
		sc, err := store.PreparePut(in, old, now)
		return sc, err == nil, err
	})
	return out, created, err
}

// SetSchedulePaused pauses or resumes a schedule.
func (s *Store) SetSchedulePaused(ctx context.Context, name string, paused bool, by schedule.Source) (schedule.Schedule, error) {
	return s.changeSchedule(ctx, "pause schedule "+name, name, func(old *schedule.Schedule, now time.Time) (schedule.Schedule, bool, error) {
		if old == nil {
			return schedule.Schedule{}, false, store.ErrNotFound
		}
		sc, err := store.PreparePause(*old, paused, by, now)
		return sc, err == nil && sc.Paused != old.Paused, err
	})
}

// DeleteSchedule deletes a schedule.
func (s *Store) DeleteSchedule(ctx context.Context, name string, by schedule.Source) error {
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		old, err := readSchedule(ctx, tx, name)
		switch {
		case err != nil:
			return err
		case old == nil:
			return store.ErrNotFound
		}
		if err := store.CheckDelete(*old, by); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM spool_schedules WHERE name = ?`, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete schedule %s: %w", name, classify(err))
	}
	return nil
}

// GetSchedule returns one schedule.
func (s *Store) GetSchedule(ctx context.Context, name string) (schedule.Schedule, error) {
	sc, err := scanSchedule(s.read.QueryRowContext(ctx, `SELECT `+scheduleCols+` FROM spool_schedules WHERE name = ?`, name))
	if err != nil {
		return schedule.Schedule{}, fmt.Errorf("get schedule %s: %w", name, classify(err))
	}
	return sc, nil
}

// ListSchedules pages through schedules by name.
func (s *Store) ListSchedules(ctx context.Context, p store.ScheduleListParams) ([]schedule.Schedule, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+scheduleCols+` FROM spool_schedules WHERE name > ? ORDER BY name LIMIT ?`,
		p.After, min(max(p.Limit, 1), 1000))
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", classify(err))
	}
	defer rows.Close()
	out := []schedule.Schedule{}
	for rows.Next() {
		sc, err := scanSchedule(rows)
		if err != nil {
			return nil, fmt.Errorf("list schedules: %w", err)
		}
		out = append(out, sc)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list schedules: %w", classify(err))
	}
	return out, nil
}

// ClaimSchedules enqueues the due runs of up to limit schedules in one
// write transaction: SQLite serves one process, whose writes the write
// lock serializes, so reading the due rows under it is the claim.
func (s *Store) ClaimSchedules(ctx context.Context, limit int) ([]store.ScheduleClaim, error) {
	st, err := s.statements(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim schedules: %w", classify(err))
	}
	var (
		claims []store.ScheduleClaim
		wake   bool
	)
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		claims, wake = nil, false
		ts := s.now()
		rows, err := tx.QueryContext(ctx, `SELECT `+scheduleCols+` FROM spool_schedules
			WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= ?
			ORDER BY next_run_at LIMIT ?`, micros(ts), max(limit, 1))
		if err != nil {
			return err
		}
		var due []schedule.Schedule
		for rows.Next() {
			sc, err := scanSchedule(rows)
			if err != nil {
				rows.Close()
				return err
			}
			due = append(due, sc)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, sc := range due {
			nts, next, skipped, err := store.PlanClaim(sc, ts)
			if err != nil {
				return err
			}
			enq, err := s.insertRuns(ctx, tx, st, nts, ts)
			if err != nil {
				return fmt.Errorf("%s: %w", sc.Name, err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE spool_schedules SET next_run_at = ?, last_run_at = ? WHERE name = ?`,
				nullMicros(next.NextRunAt), nullMicros(next.LastRunAt), sc.Name); err != nil {
				return fmt.Errorf("%s: %w", sc.Name, err)
			}
			for _, e := range enq {
				wake = wake || (!e.Existing && e.Task.State == task.Available)
			}
			claims = append(claims, store.ScheduleClaim{Schedule: sc.Name, Enqueued: enq, Skipped: skipped, Now: ts})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim schedules: %w", classify(err))
	}
	if wake {
		s.hub.broadcast()
	}
	return claims, nil
}

// insertRuns inserts one schedule's run tasks in tx (under the write
// lock); a run whose task exists already is returned as Existing.
func (s *Store) insertRuns(ctx context.Context, tx *sql.Tx, st *statements, nts []store.NewTask, ts time.Time) ([]store.Enqueued, error) {
	if len(nts) == 0 {
		return nil, nil
	}
	defaults, err := ensureQueues(ctx, tx, st, nts[:1], ts)
	if err != nil {
		return nil, err
	}
	out := make([]store.Enqueued, len(nts))
	fresh := make([]int, 0, len(nts))
	byKey := tx.StmtContext(ctx, st.taskByKey)
	for i, nt := range nts {
		t, err := scanTask(byKey.QueryRowContext(ctx, nt.Queue, nt.IdempotencyKey))
		if err == nil {
			out[i] = store.Enqueued{Task: t.Task, Existing: true}
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("run %s: %w", nt.IdempotencyKey, err)
		}
		out[i] = store.Enqueued{Task: newTaskRow(nt, defaults[nt.Queue], ts)}
		fresh = append(fresh, i)
	}
	return out, insertTasks(ctx, tx, st, out, fresh)
}
