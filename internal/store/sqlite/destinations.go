package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// Destinations. The write transaction (BEGIN IMMEDIATE on the one write
// connection) is the lock that PostgreSQL takes per row: nothing else
// writes while a sync or a change reads, decides and writes back.

const destinationCols = `name, max_concurrency, rate_limit, adaptive_limit, limit_decreased_at, breaker, failures,
	open_until, cooldown_ms, probe_owner, probe_until, hold_until, created_at, updated_at`

func scanDestination(r rowScanner) (task.Destination, error) {
	var (
		d                                task.Destination
		decreased, open, probe, hold     sql.NullInt64
		breaker                          string
		cooldownMS, createdUS, updatedUS int64
	)
	if err := r.Scan(&d.Name, &d.MaxConcurrency, &d.RateLimit, &d.Limit, &decreased, &breaker, &d.Failures,
		&open, &cooldownMS, &d.ProbeOwner, &probe, &hold, &createdUS, &updatedUS); err != nil {
		return task.Destination{}, err
	}
	d.Breaker = task.Breaker(breaker)
	d.Cooldown = time.Duration(cooldownMS) * time.Millisecond
	d.LimitDecreasedAt, d.OpenUntil = fromNullMicros(decreased), fromNullMicros(open)
	d.ProbeUntil, d.HoldUntil = fromNullMicros(probe), fromNullMicros(hold)
	d.CreatedAt, d.UpdatedAt = fromMicros(createdUS), fromMicros(updatedUS)
	return d, nil
}

// nullMicros stores a time that may be zero: NULL, not 0, so that it reads
// back as the zero time rather than 1970.
func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

// lockDestination creates name's row if missing and reads it, in a write
// transaction.
func lockDestination(ctx context.Context, tx *sql.Tx, name string, ts time.Time) (task.Destination, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO spool_destinations (name, created_at, updated_at) VALUES (?1, ?2, ?2)
		ON CONFLICT (name) DO NOTHING`, name, micros(ts)); err != nil {
		return task.Destination{}, err
	}
	return scanDestination(tx.QueryRowContext(ctx, `SELECT `+destinationCols+` FROM spool_destinations WHERE name = ?`, name))
}

// writeDestination stores d's policy fields (never its ceilings) and sets
// its UpdatedAt to ts.
func writeDestination(ctx context.Context, tx *sql.Tx, d *task.Destination, ts time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE spool_destinations SET
			adaptive_limit = ?, limit_decreased_at = ?, breaker = ?, failures = ?, open_until = ?,
			cooldown_ms = ?, probe_owner = ?, probe_until = ?, hold_until = ?, updated_at = ?
		WHERE name = ?`,
		d.Limit, nullMicros(d.LimitDecreasedAt), string(d.Breaker), d.Failures, nullMicros(d.OpenUntil),
		d.Cooldown.Milliseconds(), d.ProbeOwner, nullMicros(d.ProbeUntil), nullMicros(d.HoldUntil), micros(ts), d.Name)
	d.UpdatedAt = ts
	return err
}

// liveReports reads the reports stamped at or after since, by destination:
// of the destinations named, or of all when none is.
func liveReports(ctx context.Context, q querier, since time.Time, names ...string) (map[string][]store.ReplicaReport, error) {
	query, args := `SELECT destination, replica, in_flight, successes, failures, latency_us
		FROM spool_destination_reports WHERE reported_at >= ?`, []any{micros(since)}
	if len(names) > 0 {
		list := []byte{'['}
		for i, n := range names {
			if i > 0 {
				list = append(list, ',')
			}
			list = appendJSONString(list, n)
		}
		query += ` AND destination IN (SELECT value FROM json_each(?))`
		args = append(args, string(append(list, ']')))
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string][]store.ReplicaReport)
	for rows.Next() {
		var (
			dest      string
			r         store.ReplicaReport
			latencyUS int64
		)
		if err := rows.Scan(&dest, &r.Replica, &r.InFlight, &r.Successes, &r.Failures, &latencyUS); err != nil {
			return nil, err
		}
		r.Latency = time.Duration(latencyUS) * time.Microsecond
		out[dest] = append(out[dest], r)
	}
	return out, rows.Err()
}

// SyncDestinations stores replica's reports and applies the dispatcher's
// policy to each destination, in one write transaction.
func (s *Store) SyncDestinations(ctx context.Context, replica string, live time.Duration, reports []store.DestinationReport,
	apply func(d *task.Destination, r store.DestinationReport, now time.Time) bool) ([]store.DestinationSync, error) {
	if len(reports) == 0 {
		return nil, nil
	}
	order, err := store.SyncOrder(reports)
	if err != nil {
		return nil, err
	}
	out := make([]store.DestinationSync, len(reports))
	names := make([]string, len(reports))
	err = s.inWrite(ctx, func(tx *sql.Tx) error {
		ts := s.now()
		for _, i := range order {
			r := reports[i]
			d, err := lockDestination(ctx, tx, r.Name, ts)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO spool_destination_reports
					(destination, replica, in_flight, successes, failures, latency_us, reported_at)
				VALUES (?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (destination, replica) DO UPDATE SET
					in_flight = excluded.in_flight, successes = excluded.successes, failures = excluded.failures,
					latency_us = excluded.latency_us, reported_at = excluded.reported_at`,
				r.Name, replica, r.InFlight, r.Successes, r.Failures, r.Latency.Microseconds(), micros(ts)); err != nil {
				return err
			}
			if changed, ok := store.ApplyPolicy(d, func(d *task.Destination) bool { return apply(d, r, ts) }); ok {
				if err := writeDestination(ctx, tx, &changed, ts); err != nil {
					return err
				}
				d = changed
			}
			out[i].Destination, names[i] = d, r.Name
		}
		byName, err := liveReports(ctx, tx, ts.Add(-live), names...)
		if err != nil {
			return err
		}
		for i := range out {
			out[i].Stats, out[i].Rank = store.SumReports(replica, byName[out[i].Name])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sync destinations: %w", classify(err))
	}
	return out, nil
}

// ChangeDestination applies fn to one destination in a write transaction.
func (s *Store) ChangeDestination(ctx context.Context, name string, fn func(d *task.Destination, now time.Time) bool) (task.Destination, error) {
	var out task.Destination
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		ts := s.now()
		d, err := lockDestination(ctx, tx, name, ts)
		if err != nil {
			return err
		}
		if changed, ok := store.ApplyPolicy(d, func(d *task.Destination) bool { return fn(d, ts) }); ok {
			if err := writeDestination(ctx, tx, &changed, ts); err != nil {
				return err
			}
			d = changed
		}
		out = d
		return nil
	})
	if err != nil {
		return task.Destination{}, fmt.Errorf("change destination %q: %w", name, classify(err))
	}
	return out, nil
}

// destinationsWithStats reads one destination (or all, name "") with Stats
// through q, with reports stamped since liveSince.
func destinationsWithStats(ctx context.Context, q querier, name string, liveSince time.Time) ([]task.Destination, error) {
	query, args := `SELECT `+destinationCols+` FROM spool_destinations ORDER BY name`, []any(nil)
	var names []string
	if name != "" {
		query, args, names = `SELECT `+destinationCols+` FROM spool_destinations WHERE name = ?`, []any{name}, []string{name}
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	out := []task.Destination{}
	for rows.Next() {
		d, err := scanDestination(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	byName, err := liveReports(ctx, q, liveSince, names...)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].Stats, _ = store.SumReports("", byName[out[i].Name])
	}
	return out, nil
}

// ListDestinations returns every destination by name, with Stats.
func (s *Store) ListDestinations(ctx context.Context, live time.Duration) ([]task.Destination, error) {
	var out []task.Destination
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = destinationsWithStats(ctx, tx, "", s.now().Add(-live))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list destinations: %w", classify(err))
	}
	return out, nil
}

// GetDestination returns one destination with Stats (store.ErrNotFound).
func (s *Store) GetDestination(ctx context.Context, name string, live time.Duration) (task.Destination, error) {
	var out []task.Destination
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = destinationsWithStats(ctx, tx, name, s.now().Add(-live))
		return err
	})
	if err == nil && len(out) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return task.Destination{}, fmt.Errorf("get destination %q: %w", name, classify(err))
	}
	return out[0], nil
}

// UpdateDestination sets the operator's ceilings, creating the row first
// if missing.
func (s *Store) UpdateDestination(ctx context.Context, name string, p task.DestinationPatch, live time.Duration) (task.Destination, error) {
	if err := store.ValidateDestinationPatch(p); err != nil {
		return task.Destination{}, fmt.Errorf("update destination %q: %w", name, err)
	}
	var out []task.Destination
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		ts := s.now()
		if _, err := lockDestination(ctx, tx, name, ts); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE spool_destinations SET
				max_concurrency = coalesce(?, max_concurrency), rate_limit = coalesce(?, rate_limit), updated_at = ?
			WHERE name = ?`, p.MaxConcurrency, p.RateLimit, micros(ts), name); err != nil {
			return err
		}
		var err error
		out, err = destinationsWithStats(ctx, tx, name, s.now().Add(-live))
		return err
	})
	if err != nil {
		return task.Destination{}, fmt.Errorf("update destination %q: %w", name, classify(err))
	}
	return out[0], nil
}

// PruneDestinations deletes reports older than idle, then the destinations
// left with nothing worth keeping.
func (s *Store) PruneDestinations(ctx context.Context, idle time.Duration) (int, error) {
	var n int64
	err := s.inWrite(ctx, func(tx *sql.Tx) error {
		cutoff := micros(s.now().Add(-idle))
		if _, err := tx.ExecContext(ctx, `DELETE FROM spool_destination_reports WHERE reported_at < ?`, cutoff); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM spool_destinations
			WHERE max_concurrency = 0 AND rate_limit = 0 AND breaker = 'closed' AND updated_at < ?
				AND NOT EXISTS (SELECT 1 FROM spool_destination_reports r WHERE r.destination = spool_destinations.name)`, cutoff)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune destinations: %w", classify(err))
	}
	return int(n), nil
}
