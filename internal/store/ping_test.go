package store_test

import (
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/sqlite"
)

// TestPingNeedsTheSchema: a reachable database without Spool's schema is
// not ready (ErrNotMigrated, naming the versions); once migrated it is.
func TestPingNeedsTheSchema(t *testing.T) {
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "spool.db"), sqlite.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Ping(t.Context())
	if !errors.Is(err, store.ErrNotMigrated) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Ping before Migrate = %v, want ErrNotMigrated", err)
	}
	t.Logf("before migrating: %v", err)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after Migrate = %v", err)
	}
}
