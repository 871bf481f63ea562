package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// The task lists: ranges of spool_tasks_queue_id (queue, id) and
// spool_tasks_queue_state (queue, state, id), in id order, read up to the
// LIMIT whatever else the queue holds. A list with row filters scans the
// same ranges (the columns the filters read, not the payload), up to
// ScanFactor × the page, filters in Go, and reads the matching rows by
// primary key; a key selects one row by the key's unique index. The
// ranges name their index: with both bounds on id, the planner took
// (queue, id) for a list of one state, which reads every state.
const (
	rangeAll     = ` FROM spool_tasks INDEXED BY spool_tasks_queue_id WHERE queue = ? AND id > ? AND id < ? ORDER BY id LIMIT ?`
	rangeState   = ` FROM spool_tasks INDEXED BY spool_tasks_queue_state WHERE queue = ? AND state = ? AND id > ? AND id < ? ORDER BY id LIMIT ?`
	listAllSQL   = `SELECT ` + taskCols + rangeAll
	listStateSQL = `SELECT ` + taskCols + rangeState
	scanCols     = `SELECT id, priority, run_at, target_url`
	scanAllSQL   = scanCols + rangeAll
	scanStateSQL = scanCols + rangeState
	listIDsSQL   = `SELECT ` + taskCols + ` FROM spool_tasks WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id`
	listKeySQL   = `SELECT ` + taskCols + ` FROM spool_tasks WHERE queue = ? AND idempotency_key = ?`
)

// maxID is above every id.
const maxID = "ffffffff-ffff-ffff-ffff-ffffffffffff"

// ListTasks returns a page of one queue's tasks in id order.
func (s *Store) ListTasks(ctx context.Context, p store.ListParams) (store.TaskPage, error) {
	if p.Limit <= 0 {
		p.Limit = 100
	}
	p.Limit = min(p.Limit, 1000)
	lo, before := p.IDRange()
	after := max(p.After, lo)
	if before == "" {
		before = maxID
	}
	page := store.TaskPage{Tasks: []task.Task{}}
	if after >= before {
		return page, nil
	}
	var err error
	switch {
	case p.IdempotencyKey != "":
		err = s.listQuery(ctx, &page, p, listKeySQL, p.Queue, p.IdempotencyKey)
	case p.RowFiltered():
		err = s.listScan(ctx, &page, p, after, before)
	case p.State != "":
		err = s.listQuery(ctx, &page, p, listStateSQL, p.Queue, string(p.State), after, before, p.Limit)
	default:
		err = s.listQuery(ctx, &page, p, listAllSQL, p.Queue, after, before, p.Limit)
	}
	if err != nil {
		return store.TaskPage{}, fmt.Errorf("list tasks: %w", classify(err))
	}
	if p.IdempotencyKey == "" && !p.RowFiltered() && len(page.Tasks) == p.Limit {
		page.Next = page.Tasks[len(page.Tasks)-1].ID // a full page may have a successor
	}
	return page, nil
}

// listQuery appends the tasks q selects that pass p (a key's task may
// fail the others; a row read after a scan may have changed since).
func (s *Store) listQuery(ctx context.Context, page *store.TaskPage, p store.ListParams, q string, args ...any) error {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return err
		}
		if p.Match(t.Task) && t.ID > p.After {
			page.Tasks = append(page.Tasks, t.Task)
		}
	}
	return rows.Err()
}

// listScan lists with row filters: it scans at most ScanFactor × Limit
// tasks of the range, stops at a full page, and reads the matches' rows.
func (s *Store) listScan(ctx context.Context, page *store.TaskPage, p store.ListParams, after, before string) error {
	scan := store.ScanFactor * p.Limit
	q, args := scanAllSQL, []any{p.Queue, after, before, scan}
	if p.State != "" {
		q, args = scanStateSQL, []any{p.Queue, string(p.State), after, before, scan}
	}
	hits, err := func() ([]string, error) {
		rows, err := s.read.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var (
			hits    []string
			scanned int
			last    string
		)
		for rows.Next() {
			var (
				id, url  string
				priority int
				runAt    int64
			)
			if err := rows.Scan(&id, &priority, &runAt, &url); err != nil {
				return nil, err
			}
			scanned++
			last = id
			if p.MatchRow(priority, url, fromMicros(runAt)) {
				hits = append(hits, id)
				if len(hits) == p.Limit {
					page.Next = id
					return hits, nil // stop reading: the page is full
				}
			}
		}
		if scanned == scan {
			page.Next = last // the bound, not the end: the client continues
		}
		return hits, rows.Err()
	}()
	if err != nil || len(hits) == 0 {
		return err
	}
	return s.listQuery(ctx, page, p, listIDsSQL, idsJSON(hits))
}

// idsJSON is ids as the JSON array json_each reads.
func idsJSON(ids []string) string {
	b, _ := json.Marshal(ids) // strings always encode
	return string(b)
}
