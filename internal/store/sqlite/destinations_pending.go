package sqlite

import (
	"context"
	"errors"
	"time"

	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// errDestinationsPending: the destination methods of store.Store are
// implemented on branch dest. These stubs only let branch fair build and
// test; merging dest replaces this file.
var errDestinationsPending = errors.New("destinations: not implemented on this branch")

func (s *Store) SyncDestinations(context.Context, string, time.Duration, []store.DestinationReport,
	func(*task.Destination, store.DestinationReport, time.Time) bool) ([]store.DestinationSync, error) {
	return nil, errDestinationsPending
}

func (s *Store) ChangeDestination(context.Context, string, func(*task.Destination, time.Time) bool) (task.Destination, error) {
	return task.Destination{}, errDestinationsPending
}

func (s *Store) ListDestinations(context.Context, time.Duration) ([]task.Destination, error) {
	return nil, errDestinationsPending
}

func (s *Store) GetDestination(context.Context, string, time.Duration) (task.Destination, error) {
	return task.Destination{}, errDestinationsPending
}

func (s *Store) UpdateDestination(context.Context, string, task.DestinationPatch, time.Duration) (task.Destination, error) {
	return task.Destination{}, errDestinationsPending
}

func (s *Store) PruneDestinations(context.Context, time.Duration) (int, error) {
	return 0, errDestinationsPending
}
