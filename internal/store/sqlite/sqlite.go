// Package sqlite is Spool's embedded store: store.Store on one SQLite file
// (modernc.org/sqlite, pure Go, WAL mode) for a single Spool process.
//
// It owns the file, its schema (migrations/*.sql, applied by store/migrate) and the
// two connection pools below; it must not be shared by several processes
// (several replicas need PostgreSQL). All writes go through one connection in
// BEGIN IMMEDIATE transactions: SQLite allows one writer at a time anyway, and
// taking the write lock up front means no transaction ever has to upgrade a
// read lock, which is where SQLite writers deadlock (SQLITE_BUSY). That
// serialisation is also what stands in for PostgreSQL's FOR UPDATE SKIP
// LOCKED: a Lease sees and claims due tasks with nobody else writing.
// Reads (get, list, counts) use a separate read-only pool and, thanks to WAL,
// never wait for the writer.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/migrate"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// Options tune Open. The zero value is the recommended setting.
type Options struct {
	// Logger receives migration progress; nil means slog.Default().
	Logger *slog.Logger
	// Sync is how far a commit is on disk before it returns: SyncFull (the
	// default) or SyncNormal.
	Sync Sync
	// ReadConns is the size of the read pool; 0 means 4.
	ReadConns int
}

// Sync is a durability setting of the write connection (PRAGMA synchronous).
type Sync string

const (
	// SyncFull (synchronous=FULL, the default): every commit fsyncs the WAL
	// before it returns, so an acknowledged task survives power loss, an OS
	// crash or a VM reset, not only a crash of the process. Group commit
	// shares one fsync among the enqueues that arrive together.
	SyncFull Sync = "full"
	// SyncNormal (synchronous=NORMAL): the WAL is fsynced only at
	// checkpoints. A commit survives a crash or kill of the process (it is in
	// the OS page cache), but the last commits before a power cut, OS crash
	// or VM reset may be lost, acknowledged or not. The file stays
	// consistent either way.
	SyncNormal Sync = "normal"
)

// pragma is the value PRAGMA synchronous takes; "" for an unknown setting.
func (s Sync) pragma() string {
	switch s {
	case "", SyncFull:
		return "FULL"
	case SyncNormal:
		return "NORMAL"
	}
	return ""
}

// busyTimeout bounds how long a connection waits for a lock held by another
// connection (the read pool during a checkpoint, or a stray second process
// such as `spool migrate`) before SQLite reports SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Store is store.Store on SQLite. Build it with Open.
type Store struct {
	log   *slog.Logger
	write *sql.DB // exactly one connection: every write transaction
	read  *sql.DB // query_only connections for reads
	hub   *hub

	stmts   atomic.Pointer[statements] // nil until first use, and after Close
	stmtsMu sync.Mutex                 // guards preparing stmts, and closed
	closed  bool

	closeOnce sync.Once
	migrated  atomic.Bool // Ping saw the schema at schemaVersion or later

	clock clock

	syncFull bool // the write connection commits with synchronous=FULL

	// leaser leases in enqueues' transactions (SetEnqueueLeaser); nil
	// until one is set.
	leaser store.LeaserSlot
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path, creating its
// parent directory with mode 0700 if missing. It does not migrate: call
// Migrate before use.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite open: empty path")
	}
	if strings.ContainsAny(path, "?#") {
		// The driver splits the DSN at '?'; refuse rather than open the wrong file.
		return nil, fmt.Errorf("sqlite open: path %q must not contain '?' or '#'", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlite open: create directory: %w", err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}

	// A task is acknowledged once its transaction commits, so by default
	// a commit is on disk (FULL) when it returns: see Sync.
	syncMode := opts.Sync.pragma()
	if syncMode == "" {
		return nil, fmt.Errorf("sqlite open: synchronous %q is not full or normal", opts.Sync)
	}
	common := url.Values{}
	common.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	common.Set("_foreign_keys", "1")

	wq := url.Values{}
	for k, v := range common {
		wq[k] = v
	}
	wq.Set("_journal_mode", "WAL")
	wq.Set("_synchronous", syncMode)
	// Every BeginTx on the write pool is BEGIN IMMEDIATE: the write lock is
	// taken at the start, so no transaction deadlocks upgrading a read lock.
	wq.Set("_txlock", "immediate")
	// A statement that changes many rows inside a transaction journals the
	// pages it changes, so that it can be undone alone; past 64 KiB SQLite
	// spills that journal to a temporary file, created and deleted for each
	// such statement (a claim or completion of 100 tasks, an insert of 100).
	// In memory it costs no system calls. No statement here changes an
	// unbounded number of rows (see PromoteDue).
	wq.Add("_pragma", "temp_store(MEMORY)")

	write, err := sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite open: %w", err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	// Open the write connection first: it switches the file to WAL, which the
	// read-only connections rely on.
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite open %s: %w", path, classify(err))
	}

	rq := url.Values{}
	for k, v := range common {
		rq[k] = v
	}
	// query_only rather than mode=ro: a read-only-opened connection cannot
	// create the WAL index (-shm) itself, query_only can, and still refuses
	// every write.
	rq.Set("_query_only", "1")
	read, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("sqlite open: %w", err)
	}
	n := opts.ReadConns
	if n <= 0 {
		n = 4
	}
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	read.SetConnMaxLifetime(0)
	read.SetConnMaxIdleTime(0)
	if err := read.PingContext(ctx); err != nil {
		read.Close()
		write.Close()
		return nil, fmt.Errorf("sqlite open %s (read pool): %w", path, classify(err))
	}

	return &Store{log: log, write: write, read: read, hub: newHub(), clock: systemClock(), syncFull: syncMode == "FULL"}, nil
}

// Migrate applies the embedded migrations that are not applied yet. It is a
// no-op on an up-to-date database.
func (s *Store) Migrate(ctx context.Context) error {
	fsys, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms, err := migrate.Load(fsys)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// The one write connection: nothing else writes while it migrates.
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	defer conn.Close()
	res, err := migrate.Up(ctx, conn, migrate.SQLite, "goose_db_version", ms)
	for _, r := range res {
		s.log.InfoContext(ctx, "sqlite migration applied",
			slog.Int64("version", r.Version), slog.String("file", r.Name),
			slog.Duration("duration", r.Duration))
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", classify(err))
	}
	return nil
}

// Ping checks that the file can be read.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'goose_db_version'`).Scan(&n); err != nil {
		return fmt.Errorf("ping: %w", classify(err))
	}
	if s.migrated.Load() {
		return nil // a schema never goes back
	}
	var have int64
	if n > 0 {
		if err := s.read.QueryRowContext(ctx, migrate.CheckSQL("goose_db_version")).Scan(&have); err != nil {
			return fmt.Errorf("ping: schema version: %w", classify(err))
		}
	}
	if have < schemaVersion {
		return fmt.Errorf("ping: %w: %w", store.ErrNotMigrated, migrate.ErrBehind(have, schemaVersion))
	}
	s.migrated.Store(true)
	return nil
}

// schemaVersion is the latest embedded migration: what this build needs.
var schemaVersion = migrate.MustLatest(migrationsFS, "migrations")

// Close closes both pools and every Wakeups channel. Calls in flight may fail.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.hub.close()
		s.stmtsMu.Lock()
		s.closed = true
		var stErr error
		if st := s.stmts.Swap(nil); st != nil {
			stErr = st.close()
		}
		s.stmtsMu.Unlock()
		err = errors.Join(stErr, s.read.Close(), s.write.Close())
	})
	if err != nil {
		return fmt.Errorf("sqlite close: %w", err)
	}
	return nil
}

// inWrite runs fn in a BEGIN IMMEDIATE transaction on the write connection
// and commits it, or rolls back if fn fails.
func (s *Store) inWrite(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return classify(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error that matters is fn's
		return err
	}
	if err := tx.Commit(); err != nil {
		return classify(err)
	}
	return nil
}

// inRedoableWrite is inWrite for the dispatcher's own transactions
// (leases, lease extensions, completions). Under SyncFull they commit with
// synchronous=NORMAL: into the WAL without waiting for an fsync, which
// held the single write connection, and every writer behind it, for a
// disk flush three times per task. A power cut or OS crash can then
// forget the last of them, and that costs a delivery again, never a task:
// a forgotten lease leaves its task due; a forgotten completion leaves it
// running under a lease that expires and is rescued (Spool delivers at
// least once in any case). The next FULL commit (any enqueue) fsyncs the
// WAL with everything before it. A process crash loses nothing: the WAL is
// in the OS's page cache. The setting goes back to FULL before the
// connection serves anything else, or the connection is dropped.
func (s *Store) inRedoableWrite(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if !s.syncFull {
		return s.inWrite(ctx, fn)
	}
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return classify(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "PRAGMA synchronous=NORMAL"); err != nil {
		return classify(err)
	}
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous=FULL"); err != nil {
			// Never leave the write connection relaxed for an enqueue.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return classify(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error that matters is fn's
		return err
	}
	return classify(tx.Commit())
}

// classify maps driver errors to the store's typed errors: no rows becomes
// store.ErrNotFound (the driver error is dropped), and failures of the file
// or the connection (busy past the timeout, I/O, disk full, closed pool)
// are wrapped with store.ErrUnavailable. Anything else is returned as is.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if errors.Is(err, sql.ErrConnDone) || strings.Contains(err.Error(), "sql: database is closed") ||
		strings.Contains(err.Error(), "sql: statement is closed") {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR,
			sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL, sqlite3.SQLITE_NOMEM,
			sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL:
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	return err
}

// clock is the store's time source; tests replace wall to step it.
//
// Lease expiry is kept apart from the wall clock: a lease deadline is
// written and compared on the lease clock, the wall time at Open plus the
// monotonic time elapsed since. A step of the wall clock (NTP correcting a
// VM after a pause, an operator's date) then neither expires running
// tasks, which would be delivered twice, nor keeps a dead lease alive. The
// lease clock can drift from the wall clock by the steps since Open; only
// lease_expires_at holds its times, and only this process compares them
// (SQLite serves one process). Leases left by an earlier process are
// compared with this process's lease clock, which started at the wall
// time of its Open: they lapse on time unless the wall clock stepped
// while the earlier process ran, and then at worst early or late by that
// step, once, when nobody holds them any more.
type clock struct {
	wall  func() time.Time // the process's wall clock: run_at and every timestamp
	start time.Time        // time.Now() at Open, with its monotonic reading
}

func systemClock() clock { return clock{wall: time.Now, start: time.Now()} }

// leaseNow is the lease clock (see clock) at microsecond precision, UTC.
func (s *Store) leaseNow() time.Time {
	c := s.clock
	return time.UnixMicro(c.start.UnixMicro() + time.Since(c.start).Microseconds()).UTC()
}

// now is the wall clock at microsecond precision (what the schema keeps),
// in UTC, so that a time written and read back compares equal.
func (s *Store) now() time.Time { return time.UnixMicro(s.clock.wall().UnixMicro()).UTC() }

// micros converts a time to the stored form. The zero time stays 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros converts a stored time back.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// PoolStats reports the connection pools (writer and readers together) for
// metrics.
func (s *Store) PoolStats() (w, r sql.DBStats) { return s.write.Stats(), s.read.Stats() }
