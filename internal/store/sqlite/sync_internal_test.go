package sqlite

import (
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
