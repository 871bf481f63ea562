package testpg_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/spoolhq/spool/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestSharedCreateDB(t *testing.T) {
	t.Parallel()
	srv := testpg.Shared(t)
	a, b := srv.CreateDB(t), srv.CreateDB(t)
	if a == b {
		t.Fatalf("CreateDB returned the same DSN twice: %s", a)
	}
	ctx := context.Background()
	conn := connect(t, a)
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version < 150000 {
		t.Errorf("server version %d, want >= 15", version)
	}
	var fsync, maxConns string
	if err := conn.QueryRow(ctx, "SELECT current_setting('fsync'), current_setting('max_connections')").Scan(&fsync, &maxConns); err != nil {
		t.Fatal(err)
	}
	if fsync != "off" || maxConns != "300" {
		t.Errorf("fsync=%s max_connections=%s, want off and 300", fsync, maxConns)
	}
	// Databases are separate: a table in one is absent from the other.
	if _, err := conn.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	connB := connect(t, b)
	var n int
	if err := connB.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("table of database a visible in database b")
	}
}

func TestStopRestartKeepsData(t *testing.T) {
	t.Parallel()
	if _, err := testpg.FindBinDir(); err != nil {
		t.Skip(err)
	}
	srv, err := testpg.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	dsn := srv.CreateDB(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	port := srv.Port()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The open session was terminated by the fast shutdown.
	var pgErr *pgconn.PgError
	_, err = conn.Exec(ctx, "SELECT 1")
	if err == nil {
		t.Fatal("query on a stopped server succeeded")
	}
	if errors.As(err, &pgErr) && pgErr.Code != "57P01" {
		t.Errorf("unexpected error code %s", pgErr.Code)
	}
	conn.Close(ctx)
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if c, err := pgx.Connect(cctx, dsn); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if srv.Port() != port {
		t.Errorf("port changed across restart: %d -> %d", port, srv.Port())
	}
	conn2 := connect(t, dsn)
	var x int
	if err := conn2.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil {
		t.Fatal(err)
	}
	if x != 42 {
		t.Errorf("x = %d after restart, want 42", x)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart after crash: %v", err)
	}
	conn3 := connect(t, dsn)
	if err := conn3.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Fatalf("after crash recovery: x=%d err=%v", x, err)
	}
}
