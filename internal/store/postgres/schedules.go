package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

const scheduleCols = `name, cron, every_ms, timezone, missed, jitter_ms, start_at, end_at,
	queue, task, paused, source, next_run_at, last_run_at, created_at, updated_at`

func scanSchedule(row pgx.Row) (schedule.Schedule, error) {
	var (
		s                         schedule.Schedule
		everyMS, jitterMS         int64
		missed, source            string
		tmpl                      []byte
		start, end, next, lastRun *time.Time
	)
	err := row.Scan(&s.Name, &s.Spec.Cron, &everyMS, &s.Spec.Timezone, &missed, &jitterMS, &start, &end,
		&s.Queue, &tmpl, &s.Paused, &source, &next, &lastRun, &s.CreatedAt, &s.UpdatedAt)
	if err != nil {
		return schedule.Schedule{}, err
	}
	s.Spec.Every = time.Duration(everyMS) * time.Millisecond
	s.Spec.Jitter = time.Duration(jitterMS) * time.Millisecond
	s.Spec.Missed, s.Source = schedule.Missed(missed), schedule.Source(source)
	s.Spec.StartAt, s.Spec.EndAt, s.NextRunAt, s.LastRunAt = orZero(start), orZero(end), orZero(next), orZero(lastRun)
	s.CreatedAt, s.UpdatedAt = s.CreatedAt.UTC(), s.UpdatedAt.UTC()
	if s.Task, err = store.DecodeTemplate(tmpl); err != nil {
		return schedule.Schedule{}, fmt.Errorf("schedule %s: %w", s.Name, err)
	}
	return s, nil
}

// dbNow reads the database clock, which every replica shares.
func dbNow(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (time.Time, error) {
	var now time.Time
	err := q.QueryRow(ctx, `SELECT now()`).Scan(&now)
	return now.UTC(), err
}

// writeSchedule upserts every column of s.
func writeSchedule(ctx context.Context, tx pgx.Tx, s schedule.Schedule) error {
	tmpl, err := store.EncodeTemplate(s.Task)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO spool_schedules (`+scheduleCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
		ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, every_ms = excluded.every_ms,
			timezone = excluded.timezone, missed = excluded.missed, jitter_ms = excluded.jitter_ms,
			start_at = excluded.start_at, end_at = excluded.end_at, queue = excluded.queue,
			task = excluded.task, paused = excluded.paused, source = excluded.source,
			next_run_at = excluded.next_run_at, last_run_at = excluded.last_run_at,
			updated_at = excluded.updated_at`,
		s.Name, s.Spec.Cron, s.Spec.Every.Milliseconds(), s.Spec.Timezone, string(s.Spec.Missed), s.Spec.Jitter.Milliseconds(),
		nullTime(s.Spec.StartAt), nullTime(s.Spec.EndAt), s.Queue, tmpl, s.Paused, string(s.Source),
		nullTime(s.NextRunAt), nullTime(s.LastRunAt), s.CreatedAt, s.UpdatedAt)
	return err
}

// lockSchedule reads and locks one schedule row; nil when absent.
func lockSchedule(ctx context.Context, tx pgx.Tx, name string) (*schedule.Schedule, error) {
	s, err := scanSchedule(tx.QueryRow(ctx, `SELECT `+scheduleCols+` FROM spool_schedules WHERE name = $1 FOR UPDATE`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// changeSchedule runs fn on a locked row (nil when absent) at the
// database's now and writes back what it returns, in one transaction.
func (s *Store) changeSchedule(ctx context.Context, op, name string, fn func(old *schedule.Schedule, now time.Time) (schedule.Schedule, bool, error)) (schedule.Schedule, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return schedule.Schedule{}, wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	now, err := dbNow(ctx, tx)
	if err != nil {
		return schedule.Schedule{}, wrap(op, err)
	}
	old, err := lockSchedule(ctx, tx, name)
	if err != nil {
		return schedule.Schedule{}, wrap(op, err)
	}
	sc, write, err := fn(old, now)
	if err != nil {
		return schedule.Schedule{}, err
	}
	if write {
		if err := writeSchedule(ctx, tx, sc); err != nil {
			return schedule.Schedule{}, wrap(op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return schedule.Schedule{}, wrap(op, err)
	}
	return sc, nil
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
	op := "pause schedule " + name
	return s.changeSchedule(ctx, op, name, func(old *schedule.Schedule, now time.Time) (schedule.Schedule, bool, error) {
		if old == nil {
			return schedule.Schedule{}, false, fmt.Errorf("%s: %w", op, store.ErrNotFound)
		}
		sc, err := store.PreparePause(*old, paused, by, now)
		return sc, err == nil && sc.Paused != old.Paused, err
	})
}

// DeleteSchedule deletes a schedule.
func (s *Store) DeleteSchedule(ctx context.Context, name string, by schedule.Source) error {
	op := "delete schedule " + name
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	old, err := lockSchedule(ctx, tx, name)
	switch {
	case err != nil:
		return wrap(op, err)
	case old == nil:
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	if err := store.CheckDelete(*old, by); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM spool_schedules WHERE name = $1`, name); err != nil {
		return wrap(op, err)
	}
	return wrap(op, tx.Commit(ctx))
}

// GetSchedule returns one schedule.
func (s *Store) GetSchedule(ctx context.Context, name string) (schedule.Schedule, error) {
	sc, err := scanSchedule(s.pool.QueryRow(ctx, `SELECT `+scheduleCols+` FROM spool_schedules WHERE name = $1`, name))
	if err != nil {
		return schedule.Schedule{}, notFound("get schedule "+name, err)
	}
	return sc, nil
}

// ListSchedules pages through schedules by name.
func (s *Store) ListSchedules(ctx context.Context, p store.ScheduleListParams) ([]schedule.Schedule, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+scheduleCols+` FROM spool_schedules WHERE name > $1 ORDER BY name LIMIT $2`,
		p.After, min(max(p.Limit, 1), 1000))
	if err != nil {
		return nil, wrap("list schedules", err)
	}
	defer rows.Close()
	out := []schedule.Schedule{}
	for rows.Next() {
		sc, err := scanSchedule(rows)
		if err != nil {
			return nil, wrap("list schedules", err)
		}
		out = append(out, sc)
	}
	return out, wrap("list schedules", rows.Err())
}

// ClaimSchedules enqueues the due runs of up to limit schedules in one
// transaction. SKIP LOCKED leaves a row another claimer holds to it; once
// that claimer commits, the row's next_run_at is in the future and no
// longer matches, so a stale leader running beside the new one cannot
// enqueue a run twice (and the runs' idempotency keys would stop it if it
// could).
func (s *Store) ClaimSchedules(ctx context.Context, limit int) ([]store.ScheduleClaim, error) {
	const op = "claim schedules"
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // after Commit it is a no-op
	now, err := dbNow(ctx, tx)
	if err != nil {
		return nil, wrap(op, err)
	}
	rows, err := tx.Query(ctx, `SELECT `+scheduleCols+` FROM spool_schedules
		WHERE NOT paused AND next_run_at <= $1
		ORDER BY next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED`, now, max(limit, 1))
	if err != nil {
		return nil, wrap(op, err)
	}
	var due []schedule.Schedule
	for rows.Next() {
		sc, err := scanSchedule(rows)
		if err != nil {
			rows.Close()
			return nil, wrap(op, err)
		}
		due = append(due, sc)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	var (
		claims []store.ScheduleClaim
		wake   bool
	)
	for _, sc := range due {
		nts, next, skipped, err := store.PlanClaim(sc, now)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		enq, err := insertRuns(ctx, tx, nts)
		if err != nil {
			return nil, wrap(op+": "+sc.Name, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE spool_schedules SET next_run_at = $2, last_run_at = $3 WHERE name = $1`,
			sc.Name, nullTime(next.NextRunAt), nullTime(next.LastRunAt)); err != nil {
			return nil, wrap(op+": "+sc.Name, err)
		}
		wake = wake || len(nts) > 0
		claims = append(claims, store.ScheduleClaim{Schedule: sc.Name, Enqueued: enq, Skipped: skipped, Now: now})
	}
	if wake {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, wakeupChannel); err != nil {
			return nil, wrap(op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, wrap(op, err)
	}
	return claims, nil
}

// insertRuns inserts one schedule's run tasks (distinct keys, one queue)
// in tx; a run whose task exists already is returned as Existing.
func insertRuns(ctx context.Context, tx pgx.Tx, nts []store.NewTask) ([]store.Enqueued, error) {
	if len(nts) == 0 {
		return nil, nil
	}
	send := make([]int, len(nts))
	for i := range send {
		send[i] = i
	}
	ir, err := newInsertRows(nts, send, []string{nts[0].Queue})
	if err != nil {
		return nil, err
	}
	// The runs' keys live on their tasks only (no reservation): a run's
	// scheduled time is claimed once, in the transaction that advances
	// the schedule past it.
	rows, err := tx.Query(ctx, insertTasksSQL, ir.args(0, len(nts), false)...)
	if err != nil {
		return nil, err
	}
	inserted, err := collectTasks(rows)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]task.Task, len(inserted))
	for _, t := range inserted {
		byID[t.ID] = t
	}
	out := make([]store.Enqueued, len(nts))
	for i, nt := range nts {
		if t, ok := byID[nt.ID]; ok {
			t.Payload = nt.Payload // stored as given; not returned by the insert
			out[i] = store.Enqueued{Task: t}
			continue
		}
		t, err := scanTask(tx.QueryRow(ctx, `SELECT `+taskCols+` FROM spool_tasks WHERE queue = $1 AND idempotency_key = $2`,
			nt.Queue, nt.IdempotencyKey))
		if err != nil {
			return nil, fmt.Errorf("run %s: existing task: %w", nt.IdempotencyKey, err)
		}
		out[i] = store.Enqueued{Task: t, Existing: true}
	}
	return out, nil
}
