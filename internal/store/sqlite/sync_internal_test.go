package sqlite

import (
	"database/sql"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
)

// TestSynchronousInEffect reads PRAGMA synchronous on the connection that
// commits every write: 2 (FULL) by default, so an acknowledged task is on
// disk when the commit returns; 1 (NORMAL) only when asked for. (A power
// cut cannot be simulated here; what can be checked is the setting SQLite
// actually runs with.)
func TestSynchronousInEffect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sync Sync
		want int
	}{
		{"", 2},
		{SyncFull, 2},
		{SyncNormal, 1},
	} {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "spool.db"),
			Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Sync: tc.sync})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		var got int
		if err := s.write.QueryRowContext(t.Context(), `PRAGMA synchronous`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		var mode string
		if err := s.write.QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got != tc.want || mode != "wal" {
			t.Errorf("Sync %q: synchronous = %d, journal_mode = %s; want %d, wal", tc.sync, got, mode, tc.want)
		}
	}
	if _, err := Open(t.Context(), filepath.Join(t.TempDir(), "spool.db"), Options{Sync: "off"}); err == nil {
		t.Error("Sync \"off\" accepted")
	}
}

// TestRedoableWritesRelaxOnlyThemselves: under SyncFull a lease,
// extension or completion commits with synchronous=NORMAL (a lost one
// costs a redelivery), and the write connection is back at FULL for
// whatever comes next (an enqueue must be on disk when acknowledged).
func TestRedoableWritesRelaxOnlyThemselves(t *testing.T) {
	t.Parallel()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "spool.db"),
		Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	read := func(tx *sql.Tx) (n int) {
		t.Helper()
		if err := tx.QueryRowContext(t.Context(), `PRAGMA synchronous`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := range 3 {
		var inside, plain int
		if err := s.inRedoableWrite(t.Context(), func(tx *sql.Tx) error { inside = read(tx); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.inWrite(t.Context(), func(tx *sql.Tx) error { plain = read(tx); return nil }); err != nil {
			t.Fatal(err)
		}
		if inside != 1 || plain != 2 {
			t.Errorf("round %d: synchronous = %d in a redoable write, %d in a plain one; want 1 and 2", i, inside, plain)
		}
	}
	// A failing redoable write restores FULL too.
	_ = s.inRedoableWrite(t.Context(), func(tx *sql.Tx) error { return io.ErrUnexpectedEOF })
	var after int
	if err := s.write.QueryRowContext(t.Context(), `PRAGMA synchronous`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != 2 {
		t.Errorf("synchronous = %d after a failed redoable write; want 2", after)
	}
}
