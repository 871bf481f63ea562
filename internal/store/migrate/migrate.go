// Package migrate applies a store's embedded SQL migrations.
//
// A migration is a file NNNNN_name.sql whose "-- +goose Up" section is
// applied once, in version order, each in its own transaction together
// with the row that records it. The file format and the version table are
// goose's (github.com/pressly/goose, which Spool used until the image size
// budget of the container issue asked for its 0.46 MB back): a database
// migrated by an earlier Spool is read as it is, and the goose CLI can
// still inspect or roll back a Spool database. Only what Spool's
// migrations use is supported: plain SQL, no Go migrations, no
// StatementBegin/End or NO TRANSACTION annotations (a file with any other
// "-- +goose" annotation is refused rather than misapplied).
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Migration is one parsed file.
type Migration struct {
	Version int64
	Name    string // the file name
	Up      string // the SQL of the Up section
}

// Load reads every *.sql file at the root of fsys, in version order. Two
// files with one version, a name without a version, or a file without an
// Up section are errors.
func Load(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	seen := map[int64]string{}
	for _, name := range names {
		prefix, _, ok := strings.Cut(path.Base(name), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: the name must start with a positive version and an underscore", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version %d", other, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		up, err := upSection(string(b))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: name, Up: up})
	}
	slices.SortFunc(ms, func(a, b Migration) int { return int(a.Version - b.Version) })
	return ms, nil
}

// upSection returns the lines between "-- +goose Up" and "-- +goose Down"
// (or the end).
func upSection(src string) (string, error) {
	var (
		up    strings.Builder
		state = 0 // 0 before Up, 1 in Up, 2 in Down
	)
	for line := range strings.Lines(src) {
		t := strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(t, "-- +goose "); ok {
			switch strings.ToLower(strings.TrimSpace(rest)) {
			case "up":
				if state != 0 {
					return "", errors.New(`"-- +goose Up" after the Up section`)
				}
				state = 1
			case "down":
				if state != 1 {
					return "", errors.New(`"-- +goose Down" before "-- +goose Up"`)
				}
				state = 2
			default:
				return "", fmt.Errorf("unsupported annotation %q", t)
			}
			continue
		}
		if state == 1 {
			up.WriteString(line)
		}
	}
	if state == 0 {
		return "", errors.New(`no "-- +goose Up" section`)
	}
	if strings.TrimSpace(up.String()) == "" {
		return "", errors.New("empty Up section")
	}
	return up.String(), nil
}

// Dialect is what differs between databases.
type Dialect struct {
	// CreateTable creates the version table if missing; %s is its name.
	CreateTable string
	// Placeholders: the insert of a version row, with $1/$2 or ?/?.
	Insert string
}

// Postgres and SQLite are goose's version tables on each database.
var (
	Postgres = Dialect{
		CreateTable: `CREATE TABLE IF NOT EXISTS %s (
			id serial NOT NULL PRIMARY KEY,
			version_id bigint NOT NULL,
			is_applied boolean NOT NULL,
			tstamp timestamp NOT NULL DEFAULT now())`,
		Insert: `INSERT INTO %s (version_id, is_applied) VALUES ($1, $2)`,
	}
	SQLite = Dialect{
		CreateTable: `CREATE TABLE IF NOT EXISTS %s (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			version_id INTEGER NOT NULL,
			is_applied INTEGER NOT NULL,
			tstamp TIMESTAMP DEFAULT (datetime('now')))`,
		Insert: `INSERT INTO %s (version_id, is_applied) VALUES (?, ?)`,
	}
)

// Applied reports one migration Up applied.
type Applied struct {
	Migration
	Duration time.Duration
}

// Up applies, on conn, every migration of ms not yet recorded in table, in
// version order, each in a transaction with its version row; it stops at
// the first failure (that migration's changes roll back). The caller
// serialises concurrent callers (an advisory lock on PostgreSQL, the one
// write connection on SQLite). A database that has a version applied that
// ms does not know (migrated by a newer Spool) is refused rather than
// guessed at.
func Up(ctx context.Context, conn *sql.Conn, d Dialect, table string, ms []Migration) ([]Applied, error) {
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(d.CreateTable, table)); err != nil {
		return nil, fmt.Errorf("create %s: %w", table, err)
	}
	applied, err := appliedVersions(ctx, conn, table)
	if err != nil {
		return nil, err
	}
	if len(applied) == 0 {
		// goose records version 0 first; keep its table as goose would.
		if _, err := conn.ExecContext(ctx, fmt.Sprintf(d.Insert, table), 0, true); err != nil {
			return nil, fmt.Errorf("record version 0: %w", err)
		}
	}
	known := map[int64]bool{}
	for _, m := range ms {
		known[m.Version] = true
	}
	for v, ok := range applied {
		if ok && v > 0 && !known[v] {
			return nil, fmt.Errorf("the database has migration %d applied, which this build does not have: it was migrated by a newer Spool", v)
		}
	}
	var done []Applied
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		start := time.Now()
		if err := apply(ctx, conn, d, table, m); err != nil {
			return done, fmt.Errorf("migration %s: %w", m.Name, err)
		}
		done = append(done, Applied{Migration: m, Duration: time.Since(start)})
	}
	return done, nil
}

// appliedVersions folds the version table as goose does: the latest row of
// each version says whether it is applied.
func appliedVersions(ctx context.Context, conn *sql.Conn, table string) (map[int64]bool, error) {
	rows, err := conn.QueryContext(ctx, fmt.Sprintf(`SELECT version_id, is_applied FROM %s ORDER BY id`, table))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", table, err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var v int64
		var ok bool
		if err := rows.Scan(&v, &ok); err != nil {
			return nil, fmt.Errorf("read %s: %w", table, err)
		}
		out[v] = ok
	}
	return out, rows.Err()
}

func apply(ctx context.Context, conn *sql.Conn, d Dialect, table string, m Migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, m.Up); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(d.Insert, table), m.Version, true); err != nil {
		return fmt.Errorf("record version: %w", err)
	}
	return tx.Commit()
}

// Latest is the highest version of ms (0 when empty).
func Latest(ms []Migration) int64 {
	if len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Version
}

// CheckSQL reads the highest applied version from table; a missing table
// is an error, which callers report as a schema not migrated.
func CheckSQL(table string) string {
	return fmt.Sprintf(`SELECT COALESCE(MAX(version_id), 0) FROM %s WHERE is_applied`, table)
}

// ErrBehind builds the error of a database whose schema is older than
// the build: have is what it has, want what the build needs.
func ErrBehind(have, want int64) error {
	return fmt.Errorf("the database schema is at version %d and this build needs %d: run spool migrate (or serve --migrate)", have, want)
}

// MustLatest is Latest of the migrations in dir of fsys, for a driver's
// embedded files (which its tests load): it panics if they do not parse.
func MustLatest(fsys fs.FS, dir string) int64 {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	ms, err := Load(sub)
	if err != nil {
		panic(err)
	}
	return Latest(ms)
}
