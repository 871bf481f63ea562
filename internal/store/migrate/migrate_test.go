package migrate_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite"

	"github.com/spoolhq/spool/internal/store/migrate"
)

func TestLoad(t *testing.T) {
	ms, err := migrate.Load(fstest.MapFS{
		"00002_b.sql": {Data: []byte("-- comment\n-- +goose Up\nCREATE TABLE b (x int);\n-- +goose Down\nDROP TABLE b;\n")},
		"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE a (x int);\nINSERT INTO a VALUES (1);\n")},
		"README.md":   {Data: []byte("not a migration")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Version != 1 || ms[1].Version != 2 {
		t.Fatalf("got %+v, want versions 1 and 2 in order", ms)
	}
	if ms[1].Up != "CREATE TABLE b (x int);\n" {
		t.Errorf("Up of 2 = %q: want only the Up section", ms[1].Up)
	}
	if !strings.Contains(ms[0].Up, "INSERT INTO a") {
		t.Errorf("Up of 1 = %q: want to the end of the file", ms[0].Up)
	}
}

func TestLoadRefuses(t *testing.T) {
	for name, files := range map[string]fstest.MapFS{
		"no version":         {"init.sql": {Data: []byte("-- +goose Up\nSELECT 1;\n")}},
		"zero version":       {"0_init.sql": {Data: []byte("-- +goose Up\nSELECT 1;\n")}},
		"duplicate version":  {"1_a.sql": {Data: []byte("-- +goose Up\nSELECT 1;\n")}, "01_b.sql": {Data: []byte("-- +goose Up\nSELECT 1;\n")}},
		"no Up":              {"1_a.sql": {Data: []byte("SELECT 1;\n")}},
		"empty Up":           {"1_a.sql": {Data: []byte("-- +goose Up\n-- +goose Down\nSELECT 1;\n")}},
		"Down first":         {"1_a.sql": {Data: []byte("-- +goose Down\nSELECT 1;\n-- +goose Up\nSELECT 2;\n")}},
		"unsupported option": {"1_a.sql": {Data: []byte("-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n-- +goose StatementEnd\n")}},
		"no transaction":     {"1_a.sql": {Data: []byte("-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 1;\n")}},
	} {
		if ms, err := migrate.Load(files); err == nil {
			t.Errorf("%s: Load = %+v, want an error", name, ms)
		}
	}
}

var files = fstest.MapFS{
	"00001_init.sql": {Data: []byte("-- +goose Up\nCREATE TABLE a (x INTEGER);\nCREATE TABLE b (y INTEGER);\n-- +goose Down\nDROP TABLE b;\nDROP TABLE a;\n")},
	"00002_more.sql": {Data: []byte("-- +goose Up\nALTER TABLE a ADD COLUMN z TEXT;\n-- +goose Down\nALTER TABLE a DROP COLUMN z;\n")},
}

func openDB(t *testing.T) (*sql.DB, *sql.Conn) {
	t.Helper()
	db := openFile(t)
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return db, conn
}

func openFile(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func up(t *testing.T, conn *sql.Conn, fsys fstest.MapFS) ([]migrate.Applied, error) {
	t.Helper()
	ms, err := migrate.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	return migrate.Up(t.Context(), conn, migrate.SQLite, "goose_db_version", ms)
}

// TestUpAppliesOnce: every migration once, in order; a second run applies
// nothing; a new migration is applied alone.
func TestUpAppliesOnce(t *testing.T) {
	_, conn := openDB(t)
	first := fstest.MapFS{"00001_init.sql": files["00001_init.sql"]}
	res, err := up(t, conn, first)
	if err != nil || len(res) != 1 || res[0].Version != 1 {
		t.Fatalf("first Up = %+v, %v", res, err)
	}
	res, err = up(t, conn, files)
	if err != nil || len(res) != 1 || res[0].Version != 2 {
		t.Fatalf("second Up = %+v, %v; want only version 2", res, err)
	}
	if res, err = up(t, conn, files); err != nil || len(res) != 0 {
		t.Fatalf("third Up = %+v, %v; want nothing", res, err)
	}
	if _, err := conn.ExecContext(t.Context(), "INSERT INTO a (x, z) VALUES (1, 'z'); INSERT INTO b (y) VALUES (2)"); err != nil {
		t.Fatalf("schema not applied: %v", err)
	}
}

// TestUpRollsBackAFailure: a failing migration leaves neither its changes
// nor its version row, and the ones before it stay applied.
func TestUpRollsBackAFailure(t *testing.T) {
	_, conn := openDB(t)
	bad := fstest.MapFS{
		"00001_init.sql": files["00001_init.sql"],
		"00002_bad.sql":  {Data: []byte("-- +goose Up\nCREATE TABLE c (x INTEGER);\nTHIS IS NOT SQL;\n")},
	}
	res, err := up(t, conn, bad)
	if err == nil || !strings.Contains(err.Error(), "00002_bad.sql") {
		t.Fatalf("Up = %v, want an error naming the file", err)
	}
	if len(res) != 1 || res[0].Version != 1 {
		t.Errorf("applied = %+v, want version 1 only", res)
	}
	var n int
	if err := conn.QueryRowContext(t.Context(), "SELECT count(*) FROM sqlite_master WHERE name = 'c'").Scan(&n); err != nil || n != 0 {
		t.Errorf("table c exists (%d, %v): the failed migration was not rolled back", n, err)
	}
	if err := conn.QueryRowContext(t.Context(), "SELECT count(*) FROM goose_db_version WHERE version_id = 2").Scan(&n); err != nil || n != 0 {
		t.Errorf("version 2 recorded (%d, %v)", n, err)
	}
}

// TestUpRefusesNewerDatabase: a database with a version this build does
// not know was migrated by a newer Spool.
func TestUpRefusesNewerDatabase(t *testing.T) {
	_, conn := openDB(t)
	if _, err := up(t, conn, files); err != nil {
		t.Fatal(err)
	}
	old := fstest.MapFS{"00001_init.sql": files["00001_init.sql"]}
	if _, err := up(t, conn, old); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Up with an older build = %v, want a refusal", err)
	}
}

// TestGooseCompatible: a database goose migrated is up to date for Up, and
// goose reads what Up recorded as applied (the version table is goose's).
func TestGooseCompatible(t *testing.T) {
	ctx := context.Background()
	db := openFile(t)
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fstest.MapFS{"00001_init.sql": files["00001_init.sql"]}, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("goose Up: %v", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := up(t, conn, files)
	conn.Close()
	if err != nil || len(res) != 1 || res[0].Version != 2 {
		t.Fatalf("Up after goose = %+v, %v; want only version 2", res, err)
	}
	p, err = goose.NewProvider(goose.DialectSQLite3, db, files, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil || v != 2 {
		t.Fatalf("goose sees version %d, %v; want 2", v, err)
	}
	if has, err := p.HasPending(ctx); err != nil || has {
		t.Errorf("goose sees pending migrations (%v, %v)", has, err)
	}
}
