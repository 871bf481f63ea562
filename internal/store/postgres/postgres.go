// Package postgres is the PostgreSQL driver of store.Store, on pgx/v5's
// pgxpool. It owns the spool_* tables and their embedded migrations (goose's format, applied by store/migrate).
// Several replicas share one database: leasing uses FOR UPDATE SKIP LOCKED,
// limited queues are leased under their queue row's lock so concurrency and
// rate limits hold across replicas, and every time comes from the database
// clock. Wake-ups travel over LISTEN/NOTIFY on the channel spool_wakeup.
//
// It must not hold queue logic: what to lease, deliver or retry is decided
// by the dispatcher; this package only stores and transitions tasks as the
// store.Store contract describes.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// wakeupChannel is the NOTIFY channel tasks becoming due are announced on.
const wakeupChannel = "spool_wakeup"

// migrationLockID keys the advisory lock that serializes Migrate across
// replicas (an arbitrary constant distinct from goose's default).
const migrationLockID int64 = 0x5f9c_7a31

// Options tunes Open.
type Options struct {
	// MaxConns caps the pool; 0 means max(4, 4*GOMAXPROCS). The LISTEN
	// connection behind Wakeups is extra.
	MaxConns int32
	// Logger receives reconnects and migration progress; nil discards.
	Logger *slog.Logger
	// Tracer, if set, sees every query (OpenTelemetry instrumentation;
	// tests count round trips with it).
	Tracer pgx.QueryTracer
}

// Store is the PostgreSQL store.Store. Build it with Open.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// probeEvery is how long the LISTEN connection may sit idle before it
	// is probed (listenProbeEvery; tests shorten it).
	probeEvery time.Duration

	// closing ends background goroutines (LISTEN loops) on Close.
	closing context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once

	migrated atomic.Bool // Ping saw the schema at schemaVersion or later

	// origin names this Store in the payload of the NOTIFYs it sends
	// after its own enqueues and completions. It signals its own Wakeups
	// channels for those directly, as soon as the commit returns, and its
	// LISTEN loops skip the echo: one wake-up per task, not two (an echo
	// arriving after the lease it caused made a second, empty lease for
	// every task at low rates).
	origin string
	subsMu sync.Mutex
	subs   map[chan struct{}]struct{} // the open Wakeups channels

	// leaser leases in enqueues' transactions (SetEnqueueLeaser); nil
	// until one is set.
	leaser store.LeaserSlot
	paused pausedSeen // queues enqueues found paused, whose enqueues do not lease
}

// versionTable records the applied migrations (goose's table, named for
// Spool).
const versionTable = "spool_goose_db_version"

// schemaVersion is the latest embedded migration: what this build needs.
var schemaVersion = migrate.MustLatest(migrationFiles, "migrations")

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn (a postgres:// URL or key=value
// string) and checks it answers. A database that cannot be reached yields
// an error wrapping store.ErrUnavailable, so callers can retry.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse database url: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = int32(max(4, 4*runtime.GOMAXPROCS(0)))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// Without it a dial to a black-holed address waits for the caller's
		// context, which may have none.
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	if opts.Tracer != nil {
		cfg.ConnConfig.Tracer = opts.Tracer
	}
	defaults := map[string]string{
		"application_name": "spool",
		// A replica frozen or cut off inside a leasing transaction would hold
		// its queue locks until TCP gives up (hours); the server ends such
		// sessions instead. Spool's transactions last milliseconds.
		"idle_in_transaction_session_timeout": "60s",
		// Spool's statements read a few index entries each; JIT never pays
		// for itself on them, and a cost estimate inflated by missing
		// statistics (a never-analyzed spool_queues is guessed at 530 rows)
		// made GET /v1/queues compile for 300 ms on a table of 20,000
		// tasks. The lease and completion also turn it off for themselves
		// (genericPlansSQL), which keeps them safe on a URL that sets jit.
		"jit": "off",
	}
	for k, v := range defaults {
		if _, ok := cfg.ConnConfig.RuntimeParams[k]; !ok {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, wrap("postgres: open", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	closing, stop := context.WithCancel(context.Background())
	s := &Store{pool: pool, log: log, probeEvery: listenProbeEvery, closing: closing, stop: stop,
		origin: newOrigin(), subs: make(map[chan struct{}]struct{})}
	if err := wrap("ping", s.pool.Ping(ctx)); err != nil {
		s.Close()
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	return s, nil
}

// Pool exposes the connection pool (for pool metrics).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return wrap("ping", err)
	}
	if s.migrated.Load() {
		return nil // a schema never goes back
	}
	var have int64
	if err := s.pool.QueryRow(ctx, migrate.CheckSQL(versionTable)).Scan(&have); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
			return fmt.Errorf("ping: %w: %w", store.ErrNotMigrated, migrate.ErrBehind(0, schemaVersion))
		}
		return wrap("ping: schema version", err)
	}
	if have < schemaVersion {
		return fmt.Errorf("ping: %w: %w", store.ErrNotMigrated, migrate.ErrBehind(have, schemaVersion))
	}
	s.migrated.Store(true)
	return nil
}

// Close stops the LISTEN loops and closes the pool. It is idempotent.
func (s *Store) Close() error {
	s.once.Do(func() {
		s.stop()
		s.wg.Wait()
		s.pool.Close()
	})
	return nil
}

// Migrate applies the embedded migrations that are not applied yet. Several
// replicas may call it at once: a session advisory lock makes the others
// wait until the first is done, and they then find nothing to apply.
func (s *Store) Migrate(ctx context.Context) error {
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms, err := migrate.Load(fsys)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return wrap("migrate", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLockID); err != nil {
		return wrap("migrate: take the migration lock", err)
	}
	// Released on a context that is not cancelled; a dropped connection
	// releases it anyway.
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockID)
	results, err := migrate.Up(ctx, conn, migrate.Postgres, versionTable, ms)
	for _, r := range results {
		s.log.Info("applied migration", "version", r.Version, "file", r.Name, "duration", r.Duration)
	}
	if err != nil {
		return wrap("migrate", err)
	}
	return nil
}

// wrap adds context to err and marks connection failures as
// store.ErrUnavailable.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unavailable reports whether err means the database cannot be reached (as
// opposed to a query it rejected).
func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08": // connection exception
			return true
		case "57": // operator intervention: admin/crash shutdown, cannot connect now
			return pgErr.Code != "57014" // query_canceled is the caller's doing
		case "53": // insufficient resources: too many connections, out of memory
			return pgErr.Code == "53300"
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connErr),
		errors.As(err, &netErr),
		pgconn.SafeToRetry(err), // failed before anything reached the server
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return true
	}
	// pgx reports a connection it already closed, and a closed pool, with
	// plain errors.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "closed pool")
}

// notFound turns pgx.ErrNoRows into store.ErrNotFound.
func notFound(op string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", op, store.ErrNotFound)
	}
	return wrap(op, err)
}
