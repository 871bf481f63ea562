package postgres

import (
	"context"
	"time"

	"github.com/spoolhq/spool/internal/store"
)

// finishedPerMinuteSQL repeats the finished index's predicate (all three
// final states) so the planner can use spool_tasks_finished_idx; cancelled
// tasks are read but counted in neither column.
const finishedPerMinuteSQL = `SELECT queue, EXTRACT(EPOCH FROM date_trunc('minute', finished_at))::bigint AS minute,
	count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed')
FROM spool_tasks
WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at >= now() - make_interval(secs => $1)
GROUP BY 1, 2
HAVING count(*) FILTER (WHERE state IN ('succeeded', 'failed')) > 0
ORDER BY 1, 2`

// FinishedPerMinute implements store.Store.
func (s *Store) FinishedPerMinute(ctx context.Context, window time.Duration) ([]store.FinishedMinute, error) {
	window = min(max(window, 0), store.MaxFinishedWindow)
	rows, err := s.pool.Query(ctx, finishedPerMinuteSQL, window.Seconds())
	if err != nil {
		return nil, wrap("finished per minute", err)
	}
	defer rows.Close()
	var out []store.FinishedMinute
	for rows.Next() {
		var m store.FinishedMinute
		var minute int64
		if err := rows.Scan(&m.Queue, &minute, &m.Succeeded, &m.Failed); err != nil {
			return nil, wrap("finished per minute", err)
		}
		m.Minute = time.Unix(minute, 0).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("finished per minute", err)
	}
	return out, nil
}
