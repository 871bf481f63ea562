package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/spoolhq/spool/internal/store"
)

// finishedPerMinuteSQL repeats spool_tasks_prune's predicate (all three
// final states) so the index serves the range; cancelled tasks are read but
// counted in neither column. Times are microseconds.
const finishedPerMinuteSQL = `SELECT queue, finished_at / 60000000 AS minute,
	sum(state = 'succeeded'), sum(state = 'failed')
FROM spool_tasks
WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at >= ?
GROUP BY queue, minute
HAVING sum(state IN ('succeeded', 'failed')) > 0
ORDER BY queue, minute`

// FinishedPerMinute implements store.Store.
func (s *Store) FinishedPerMinute(ctx context.Context, window time.Duration) ([]store.FinishedMinute, error) {
	window = min(max(window, 0), store.MaxFinishedWindow)
	rows, err := s.read.QueryContext(ctx, finishedPerMinuteSQL, micros(s.now().Add(-window)))
	if err != nil {
		return nil, fmt.Errorf("finished per minute: %w", classify(err))
	}
	defer rows.Close()
	var out []store.FinishedMinute
	for rows.Next() {
		var m store.FinishedMinute
		var minute int64
		if err := rows.Scan(&m.Queue, &minute, &m.Succeeded, &m.Failed); err != nil {
			return nil, fmt.Errorf("finished per minute: %w", classify(err))
		}
		m.Minute = time.Unix(minute*60, 0).UTC()
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finished per minute: %w", classify(err))
	}
	return out, nil
}
