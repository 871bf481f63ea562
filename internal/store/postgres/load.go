package postgres

import (
	"context"
	"fmt"
	"time"
)

// loadFinishedSQL inserts finished tasks $2..$3 (numbers) spread over the
// queues $1, finished $4 ago and one millisecond apart: ids in time order
// (UUIDv7 layout, from the number), one in a thousand failed and one in a
// thousand cancelled, the rest succeeded.
const loadFinishedSQL = `INSERT INTO spool_tasks (id, queue, state, priority, run_at, attempt, max_attempts,
		timeout_ms, target_url, target_method, payload, content_type, created_at, updated_at, finished_at)
	SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7000' || '8000'
			|| lpad(to_hex(i), 12, '0'))::uuid,
		($1::text[])[1 + i % cardinality($1::text[])],
		CASE i % 1000 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'succeeded' END,
		5, at, 1, 25, 30000, 'http://127.0.0.1:9/hook', 'POST', '{"n":1}'::bytea, 'application/json', at, at, at
	FROM generate_series($2::bigint, $3::bigint) AS i,
		LATERAL (SELECT now() - $4 * interval '1 millisecond' - ($3 - i) * interval '1 millisecond' AS at) a`

// recountSQL sets the totals of finished tasks from the table itself, as
// migration 00010 does, for tasks inserted around the statements that
// keep them.
const recountSQL = `DELETE FROM spool_task_count_deltas;
	DELETE FROM spool_task_counts;
	INSERT INTO spool_task_counts (queue, state, n)
		SELECT queue, state, count(*) FROM spool_tasks
		WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY queue, state`

// LoadFinished inserts n finished tasks over queues with generate_series
// (a million per statement), the newest finished age ago and each one
// millisecond before the next, then recounts the finished totals. It is
// how tests and benchmarks build a long history in seconds instead of
// enqueueing and delivering it; it is no part of serving, and must not run
// beside a live leader (the recount replaces the totals). Numbers (and so
// ids) restart at 1 on each call; the ids also hold the finishing time,
// so calls with ages apart by more than n milliseconds do not collide.
func (s *Store) LoadFinished(ctx context.Context, queues []string, n int64, age time.Duration) error {
	const step = 1_000_000
	for from := int64(1); from <= n; from += step {
		to := min(from+step-1, n)
		if _, err := s.pool.Exec(ctx, loadFinishedSQL, queues, from, to, age.Milliseconds()); err != nil {
			return fmt.Errorf("load finished tasks %d-%d: %w", from, to, err)
		}
	}
	if _, err := s.pool.Exec(ctx, recountSQL); err != nil {
		return fmt.Errorf("recount: %w", err)
	}
	return nil
}
