package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// Destinations. Every replica's dispatcher changes a destination's row
// under the row's lock (SyncDestinations about once a second while it
// delivers there, ChangeDestination for breaker transitions), so the policy
// it applies in Go always starts from the latest row.

const destinationCols = `name, max_concurrency, rate_limit, adaptive_limit, limit_decreased_at, breaker, failures,
	open_until, cooldown_ms, probe_owner, probe_until, hold_until, created_at, updated_at`

// scanDestination reads destinationCols, then extra.
func scanDestination(row pgx.Row, extra ...any) (task.Destination, error) {
	var (
		d                            task.Destination
		decreased, open, probe, hold *time.Time
		breaker                      string
		cooldownMS                   int64
	)
	dest := append([]any{&d.Name, &d.MaxConcurrency, &d.RateLimit, &d.Limit, &decreased, &breaker, &d.Failures,
		&open, &cooldownMS, &d.ProbeOwner, &probe, &hold, &d.CreatedAt, &d.UpdatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return task.Destination{}, err
	}
	d.Breaker = task.Breaker(breaker)
	d.Cooldown = time.Duration(cooldownMS) * time.Millisecond
	d.LimitDecreasedAt, d.OpenUntil, d.ProbeUntil, d.HoldUntil = orZero(decreased), orZero(open), orZero(probe), orZero(hold)
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d, nil
}

// orZero reads a nullable time: NULL is the zero time.
func orZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// nullTime stores a time that may be zero as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// lockDestinationSQL creates a destination's row if missing and locks it,
// without writing an existing row: ON CONFLICT DO UPDATE locks the
// conflicting row even when its WHERE rejects the update. Unlike INSERT …
// DO NOTHING followed by SELECT … FOR UPDATE, it cannot come back empty
// when PruneDestinations deletes the row in between: the insert is then
// retried.
const lockDestinationSQL = `INSERT INTO spool_destinations (name) VALUES ($1)
	ON CONFLICT (name) DO UPDATE SET name = excluded.name WHERE false`

// readDestinationSQL reads a locked row and the transaction's now().
const readDestinationSQL = `SELECT ` + destinationCols + `, now() FROM spool_destinations WHERE name = $1`

// queueWrite queues the store of d's policy fields (never its ceilings).
func queueWrite(b *pgx.Batch, d task.Destination) {
	b.Queue(`UPDATE spool_destinations SET
			adaptive_limit = $2, limit_decreased_at = $3, breaker = $4, failures = $5, open_until = $6,
			cooldown_ms = $7, probe_owner = $8, probe_until = $9, hold_until = $10, updated_at = now()
		WHERE name = $1`,
		d.Name, d.Limit, nullTime(d.LimitDecreasedAt), string(d.Breaker), d.Failures, nullTime(d.OpenUntil),
		d.Cooldown.Milliseconds(), d.ProbeOwner, nullTime(d.ProbeUntil), nullTime(d.HoldUntil))
}

// queueLiveReports queues the read of the reports stamped within live, by
// destination, of the destinations named (all when names is nil).
func queueLiveReports(b *pgx.Batch, names []string, live time.Duration, into map[string][]store.ReplicaReport) {
	b.Queue(`SELECT destination, replica, in_flight, successes, failures, latency_us
		FROM spool_destination_reports
		WHERE ($1::text[] IS NULL OR destination = ANY ($1)) AND reported_at >= now() - $2 * interval '1 microsecond'`,
		names, live.Microseconds()).Query(func(rows pgx.Rows) error {
		var (
			dest      string
			r         store.ReplicaReport
			latencyUS int64
		)
		_, err := pgx.ForEachRow(rows, []any{&dest, &r.Replica, &r.InFlight, &r.Successes, &r.Failures, &latencyUS}, func() error {
			r.Latency = time.Duration(latencyUS) * time.Microsecond
			into[dest] = append(into[dest], r)
			return nil
		})
		return err
	})
}

// SyncDestinations stores replica's reports and applies the dispatcher's
// policy to each destination, in one transaction and three round trips
// (four when apply changed a row): BEGIN; one batch that locks and reads
// every row, stores every report and reads the live reports; the batch of
// write-backs; COMMIT.
func (s *Store) SyncDestinations(ctx context.Context, replica string, live time.Duration, reports []store.DestinationReport,
	apply func(d *task.Destination, r store.DestinationReport, now time.Time) bool) ([]store.DestinationSync, error) {
	const op = "sync destinations"
	if len(reports) == 0 {
		return nil, nil
	}
	order, err := store.SyncOrder(reports)
	if err != nil {
		return nil, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var (
		b      pgx.Batch
		out    = make([]store.DestinationSync, len(reports))
		names  = make([]string, len(reports))
		now    time.Time // the transaction's: the same in every statement
		byName = make(map[string][]store.ReplicaReport, len(reports))
	)
	for _, i := range order {
		r := reports[i]
		names[i] = r.Name
		b.Queue(lockDestinationSQL, r.Name)
		b.Queue(readDestinationSQL, r.Name).QueryRow(func(row pgx.Row) error {
			var err error
			out[i].Destination, err = scanDestination(row, &now)
			return err
		})
		b.Queue(`INSERT INTO spool_destination_reports
				(destination, replica, in_flight, successes, failures, latency_us, reported_at)
			VALUES ($1, $2, $3, $4, $5, $6, now())
			ON CONFLICT (destination, replica) DO UPDATE SET
				in_flight = excluded.in_flight, successes = excluded.successes, failures = excluded.failures,
				latency_us = excluded.latency_us, reported_at = excluded.reported_at`,
			r.Name, replica, r.InFlight, r.Successes, r.Failures, r.Latency.Microseconds())
	}
	queueLiveReports(&b, names, live, byName)
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, wrap(op, err)
	}
	now = now.UTC()
	var writes pgx.Batch
	for _, i := range order {
		if d, ok := store.ApplyPolicy(out[i].Destination, func(d *task.Destination) bool { return apply(d, reports[i], now) }); ok {
			queueWrite(&writes, d)
			d.UpdatedAt = now
			out[i].Destination = d
		}
	}
	if writes.Len() > 0 {
		if err := tx.SendBatch(ctx, &writes).Close(); err != nil {
			return nil, wrap(op, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, wrap(op, err)
	}
	for i := range out {
		out[i].Stats, out[i].Rank = store.SumReports(replica, byName[out[i].Name])
	}
	return out, nil
}

// ChangeDestination applies fn to one destination under its row lock.
func (s *Store) ChangeDestination(ctx context.Context, name string, fn func(d *task.Destination, now time.Time) bool) (task.Destination, error) {
	op := "change destination " + name
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return task.Destination{}, wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var (
		b   pgx.Batch
		d   task.Destination
		now time.Time
	)
	b.Queue(lockDestinationSQL, name)
	b.Queue(readDestinationSQL, name).QueryRow(func(row pgx.Row) error {
		var err error
		d, err = scanDestination(row, &now)
		return err
	})
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return task.Destination{}, wrap(op, err)
	}
	now = now.UTC()
	if changed, ok := store.ApplyPolicy(d, func(d *task.Destination) bool { return fn(d, now) }); ok {
		var w pgx.Batch
		queueWrite(&w, changed)
		if err := tx.SendBatch(ctx, &w).Close(); err != nil {
			return task.Destination{}, wrap(op, err)
		}
		changed.UpdatedAt = now
		d = changed
	}
	if err := tx.Commit(ctx); err != nil {
		return task.Destination{}, wrap(op, err)
	}
	return d, nil
}

// destinationsWithStats reads destinations (one, or all when name is nil,
// in byte order as SQLite and the lock order have them, whatever the
// database's collation) and their live reports in one round trip, after
// the statements already in b (which must not return rows).
func destinationsWithStats(ctx context.Context, q interface {
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}, b *pgx.Batch, name *string, live time.Duration) ([]task.Destination, error) {
	var (
		out    = []task.Destination{}
		byName = make(map[string][]store.ReplicaReport)
		names  []string
	)
	if name != nil {
		names = []string{*name}
	}
	b.Queue(`SELECT `+destinationCols+` FROM spool_destinations WHERE $1::text IS NULL OR name = $1 ORDER BY name COLLATE "C"`, name).
		Query(func(rows pgx.Rows) error {
			for rows.Next() {
				d, err := scanDestination(rows)
				if err != nil {
					return err
				}
				out = append(out, d)
			}
			return rows.Err()
		})
	queueLiveReports(b, names, live, byName)
	if err := q.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Stats, _ = store.SumReports("", byName[out[i].Name])
	}
	return out, nil
}

// ListDestinations returns every destination by name, with Stats.
func (s *Store) ListDestinations(ctx context.Context, live time.Duration) ([]task.Destination, error) {
	ds, err := destinationsWithStats(ctx, s.pool, &pgx.Batch{}, nil, live)
	if err != nil {
		return nil, wrap("list destinations", err)
	}
	return ds, nil
}

// GetDestination returns one destination with Stats (store.ErrNotFound).
func (s *Store) GetDestination(ctx context.Context, name string, live time.Duration) (task.Destination, error) {
	ds, err := destinationsWithStats(ctx, s.pool, &pgx.Batch{}, &name, live)
	if err != nil {
		return task.Destination{}, wrap("get destination "+name, err)
	}
	if len(ds) == 0 {
		return task.Destination{}, fmt.Errorf("get destination %s: %w", name, store.ErrNotFound)
	}
	return ds[0], nil
}

// UpdateDestination sets the operator's ceilings, creating the row first
// if missing, in one round trip (a batch is one implicit transaction).
func (s *Store) UpdateDestination(ctx context.Context, name string, p task.DestinationPatch, live time.Duration) (task.Destination, error) {
	op := "update destination " + name
	if err := store.ValidateDestinationPatch(p); err != nil {
		return task.Destination{}, fmt.Errorf("%s: %w", op, err)
	}
	var b pgx.Batch
	b.Queue(`INSERT INTO spool_destinations AS d (name, max_concurrency, rate_limit)
		VALUES ($1, COALESCE($2::int, 0), COALESCE($3::double precision, 0))
		ON CONFLICT (name) DO UPDATE SET
			max_concurrency = COALESCE($2::int, d.max_concurrency),
			rate_limit      = COALESCE($3::double precision, d.rate_limit),
			updated_at      = now()`, name, p.MaxConcurrency, p.RateLimit)
	ds, err := destinationsWithStats(ctx, s.pool, &b, &name, live)
	if err != nil {
		return task.Destination{}, wrap(op, err)
	}
	return ds[0], nil
}

// PruneDestinations deletes reports older than idle, then the destinations
// left with nothing worth keeping. The candidates are locked first,
// skipping any a replica holds (it is syncing or changing them), and only
// those locked are deleted, by a later statement whose snapshot sees every
// report committed before the locks were taken: a destination is never
// deleted under a fresh report. A replica that comes to a destination
// being deleted waits for the lock and creates the row again
// (lockDestinationSQL). Four round trips, once a minute.
func (s *Store) PruneDestinations(ctx context.Context, idle time.Duration) (int, error) {
	const op = "prune destinations"
	us := idle.Microseconds()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, wrap(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var (
		b      pgx.Batch
		locked []string
	)
	b.Queue(`DELETE FROM spool_destination_reports WHERE reported_at < now() - $1 * interval '1 microsecond'`, us)
	b.Queue(`SELECT name FROM spool_destinations
		WHERE max_concurrency = 0 AND rate_limit = 0 AND breaker = 'closed'
			AND updated_at < now() - $1 * interval '1 microsecond'
		FOR UPDATE SKIP LOCKED`, us).Query(func(rows pgx.Rows) error {
		var err error
		locked, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return 0, wrap(op, err)
	}
	if len(locked) == 0 {
		return 0, wrap(op, tx.Commit(ctx))
	}
	ct, err := tx.Exec(ctx, `DELETE FROM spool_destinations d WHERE d.name = ANY ($1)
		AND NOT EXISTS (SELECT 1 FROM spool_destination_reports r WHERE r.destination = d.name)`, locked)
	if err != nil {
		return 0, wrap(op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, wrap(op, err)
	}
	return int(ct.RowsAffected()), nil
}
