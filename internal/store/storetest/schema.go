package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/spoolhq/spool/internal/store"
)

// Migrator is a store that can apply its own schema (both drivers).
type Migrator interface {
	Ping(ctx context.Context) error
	Migrate(ctx context.Context) error
}

// PingNeedsTheSchema checks a driver's Ping on s, a store opened on a
// database that was never migrated: a reachable database without Spool's
// schema is not ready (ErrNotMigrated, not ErrUnavailable); once migrated
// it is.
func PingNeedsTheSchema(t *testing.T, s Migrator) {
	t.Helper()
	err := s.Ping(t.Context())
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
