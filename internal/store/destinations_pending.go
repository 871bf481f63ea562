package store

import (
	"context"
	"errors"
	"time"

	"github.com/spoolhq/spool/internal/task"
)

// DestinationsPending answers the destination methods of Store with
// ErrDestinationsPending. Branch dest implements them in the drivers; on
// branch fair the drivers embed this so that they build and the rest can
// be tested. Methods a driver defines itself take precedence over these,
// so merging dest needs no change here; delete this file and the two
// embeddings afterwards.
type DestinationsPending struct{}

// ErrDestinationsPending: see DestinationsPending.
var ErrDestinationsPending = errors.New("destinations: not implemented on this branch")

func (DestinationsPending) SyncDestinations(context.Context, string, time.Duration, []DestinationReport,
	func(*task.Destination, DestinationReport, time.Time) bool) ([]DestinationSync, error) {
	return nil, ErrDestinationsPending
}

func (DestinationsPending) ChangeDestination(context.Context, string, func(*task.Destination, time.Time) bool) (task.Destination, error) {
	return task.Destination{}, ErrDestinationsPending
}

func (DestinationsPending) ListDestinations(context.Context, time.Duration) ([]task.Destination, error) {
	return nil, ErrDestinationsPending
}

func (DestinationsPending) GetDestination(context.Context, string, time.Duration) (task.Destination, error) {
	return task.Destination{}, ErrDestinationsPending
}

func (DestinationsPending) UpdateDestination(context.Context, string, task.DestinationPatch, time.Duration) (task.Destination, error) {
	return task.Destination{}, ErrDestinationsPending
}

func (DestinationsPending) PruneDestinations(context.Context, time.Duration) (int, error) {
	return 0, ErrDestinationsPending
}
