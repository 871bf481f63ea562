package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// rangeIDs is the ids of one queue's tasks in one state (state: a literal
// or a parameter) in (after, before), in id order: a range of
// spool_tasks_queue_state_idx (queue, state, id) read up to the LIMIT. The
// range is ordered by all three columns, which is id order since queue and
// state are fixed: a generic plan does not take a parameter for a
// constant, so with ORDER BY id alone it saw no order in that index and
// walked the primary key instead, filtering on queue and state (the whole
// table read to list a rare state).
func rangeIDs(state, after, before, limit string) string {
	return `SELECT id FROM spool_tasks
		WHERE queue = $1 AND state = ` + state + ` AND id > ` + after + `::uuid AND id < ` + before + `::uuid
		ORDER BY queue, state, id LIMIT ` + limit
}

// allRangeIDs is rangeIDs over every state: one range per state (each
// reads at most LIMIT entries), merged in id order and cut at LIMIT, which
// is the first LIMIT ids of the queue in (after, before).
func allRangeIDs(after, before, limit string) string {
	parts := make([]string, len(task.States))
	for i, st := range task.States {
		parts[i] = `(` + rangeIDs(`'`+string(st)+`'`, after, before, limit) + `)`
	}
	return `SELECT id FROM (` + strings.Join(parts, "\n\tUNION ALL ") + `) r ORDER BY id LIMIT ` + limit
}

// listPage reads the rows of ids (a statement giving at most a page of
// ids) by primary key, in id order. ORDER BY names the table's id: a bare
// id would be taskCols' text cast, which no index is in the order of.
func listPage(ids string) string {
	return `SELECT ` + taskCols + ` FROM spool_tasks
	WHERE id = ANY (ARRAY(` + ids + `))
	ORDER BY spool_tasks.id`
}

// The lists. A page without row filters reads its range up to the page;
// a page with row filters first scans up to ScanFactor × the page of the
// range (scanStateSQL, scanAllSQL: the columns the filters read, not the
// payload), filters in Go, then reads the matching rows by primary key
// (listIDsSQL). A key selects one row by the key's unique index.
var (
	listStateSQL = listPage(rangeIDs("$2", "$3", "$4", "$5"))
	listAllSQL   = listPage(allRangeIDs("$2", "$3", "$4"))
	scanStateSQL = `SELECT id::text, priority, run_at, target_url FROM spool_tasks
	WHERE id = ANY (ARRAY(` + rangeIDs("$2", "$3", "$4", "$5") + `))
	ORDER BY spool_tasks.id`
	scanAllSQL = `SELECT id::text, priority, run_at, target_url FROM spool_tasks
	WHERE id = ANY (ARRAY(` + allRangeIDs("$2", "$3", "$4") + `))
	ORDER BY spool_tasks.id`
	listIDsSQL = `SELECT ` + taskCols + ` FROM spool_tasks WHERE id = ANY ($1::uuid[]) ORDER BY spool_tasks.id`
	listKeySQL = `SELECT ` + taskCols + ` FROM spool_tasks WHERE queue = $1 AND idempotency_key = $2`
)

// maxID is above every id.
const maxID = "ffffffff-ffff-ffff-ffff-ffffffffffff"

// ListTasks pages through one queue in id order.
func (s *Store) ListTasks(ctx context.Context, p store.ListParams) (store.TaskPage, error) {
	limit := min(max(p.Limit, 1), 1000)
	p.Limit = limit
	after := uuid.Nil.String() // below every id
	if p.After != "" {
		u, err := uuid.Parse(p.After)
		if err != nil {
			return store.TaskPage{}, fmt.Errorf("list tasks: invalid cursor %q", p.After)
		}
		p.After = u.String() // canonical, to compare as text with lo and ids
		after = p.After
	}
	lo, before := p.IDRange()
	after = max(after, lo)
	if before == "" {
		before = maxID
	}
	if after >= before {
		return store.TaskPage{Tasks: []task.Task{}}, nil
	}
	if p.IdempotencyKey != "" {
		return s.listKey(ctx, p)
	}
	if p.RowFiltered() {
		return s.listScan(ctx, p, after, before)
	}
	// Custom plans, in the same implicit transaction: a generic plan
	// guesses every state's share of a queue alike, and for a rare one
	// (failed among millions succeeded) preferred walking the primary key
	// in id order, filtering, to reading the (queue, state, id) range.
	var ts []task.Task
	err := s.customPlans(ctx, func(b *pgx.Batch) {
		collect := func(rows pgx.Rows) error {
			var err error
			ts, err = collectTasks(rows)
			return err
		}
		if p.State != "" {
			b.Queue(listStateSQL, p.Queue, string(p.State), after, before, limit).Query(collect)
		} else {
			b.Queue(listAllSQL, p.Queue, after, before, limit).Query(collect)
		}
	})
	if err != nil {
		return store.TaskPage{}, wrap("list tasks", err)
	}
	page := store.TaskPage{Tasks: ts}
	if page.Tasks == nil {
		page.Tasks = []task.Task{}
	}
	if len(ts) == limit {
		page.Next = ts[len(ts)-1].ID // a full page may have a successor
	}
	return page, nil
}

// customPlans sends the statements queue adds in one batch (one implicit
// transaction) that plans them for their parameters (see ListTasks).
func (s *Store) customPlans(ctx context.Context, queue func(b *pgx.Batch)) error {
	var b pgx.Batch
	b.Queue(`SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`)
	queue(&b)
	return s.pool.SendBatch(ctx, &b).Close()
}

// listKey lists the one task holding p.IdempotencyKey, if it passes p.
func (s *Store) listKey(ctx context.Context, p store.ListParams) (store.TaskPage, error) {
	rows, err := s.pool.Query(ctx, listKeySQL, p.Queue, p.IdempotencyKey)
	if err != nil {
		return store.TaskPage{}, wrap("list tasks", err)
	}
	ts, err := collectTasks(rows)
	if err != nil {
		return store.TaskPage{}, wrap("list tasks", err)
	}
	page := store.TaskPage{Tasks: []task.Task{}}
	for _, t := range ts {
		if p.Match(t) && (p.After == "" || t.ID > p.After) {
			page.Tasks = append(page.Tasks, t)
		}
	}
	return page, nil
}

// listScan lists with row filters: it scans at most ScanFactor × Limit
// tasks of the range, stops at a full page, and reads the matches' rows.
func (s *Store) listScan(ctx context.Context, p store.ListParams, after, before string) (store.TaskPage, error) {
	scan := store.ScanFactor * p.Limit
	var (
		hits    []string
		scanned int
		last    string
	)
	err := s.customPlans(ctx, func(b *pgx.Batch) {
		var q *pgx.QueuedQuery
		if p.State != "" {
			q = b.Queue(scanStateSQL, p.Queue, string(p.State), after, before, scan)
		} else {
			q = b.Queue(scanAllSQL, p.Queue, after, before, scan)
		}
		q.Query(func(rows pgx.Rows) error {
			defer rows.Close()
			for rows.Next() {
				var r scannedRow
				if err := rows.Scan(&r.id, &r.priority, &r.runAt, &r.url); err != nil {
					return err
				}
				scanned++
				last = r.id
				if len(hits) < p.Limit && p.MatchRow(r.priority, r.url, r.runAt) {
					hits = append(hits, r.id)
				}
			}
			return rows.Err()
		})
	})
	if err != nil {
		return store.TaskPage{}, wrap("list tasks", err)
	}
	page := store.TaskPage{Tasks: []task.Task{}}
	switch {
	case len(hits) == p.Limit:
		page.Next = hits[len(hits)-1]
	case scanned == scan:
		page.Next = last // the bound, not the end: the client continues
	}
	if len(hits) == 0 {
		return page, nil
	}
	rows, err := s.pool.Query(ctx, listIDsSQL, hits)
	if err != nil {
		return store.TaskPage{}, wrap("list tasks", err)
	}
	ts, err := collectTasks(rows)
	if err != nil {
		return store.TaskPage{}, wrap("list tasks", err)
	}
	for _, t := range ts {
		if p.Match(t) { // it may have changed since the scan
			page.Tasks = append(page.Tasks, t)
		}
	}
	return page, nil
}

// scannedRow is what a filtered list's scan reads of a task.
type scannedRow struct {
	id       string
	priority int
	runAt    time.Time
	url      string
}
