// Package store is the seam between Spool's queue logic and its databases.
// It owns the Store interface, its contract and its typed errors; the
// drivers live in store/postgres and store/sqlite and both pass the
// conformance suite in store/storetest. Nothing here imports a driver.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/task"
)

// Typed errors. Drivers wrap them (errors.Is works) and never return a raw
// "no rows" error to callers.
var (
	// ErrNotFound: no task or queue with that id or name.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the task is in a state the operation does not apply to
	// (cancel a finished task, retry one that is not failed or cancelled).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: the database cannot be reached right now; callers
	// answer 503 and may retry. Drivers wrap connection failures with it.
	ErrUnavailable = errors.New("store unavailable")
	// ErrNotMigrated: the database answers but its schema is older than
	// this build (or absent): `spool migrate` has not run. Ping returns it,
	// so /readyz keeps a replica out of service until the schema is there.
	ErrNotMigrated = errors.New("database schema not migrated")
	// ErrIdempotencyMismatch: an idempotency key is reserved for a
	// different request (another fingerprint). Enqueue wraps it in an
	// *IdempotencyError.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrIdempotencyPruned: an idempotency key is still reserved, for the
	// same request, but the task it made has been pruned, so there is no
	// task to answer with. Enqueue wraps it in an *IdempotencyError.
	ErrIdempotencyPruned = errors.New("idempotency key's task was pruned")
	// ErrFileSchedule: the schedule is declared in the schedules file, so
	// only the file changes it. It is an ErrConflict.
	ErrFileSchedule = fmt.Errorf("%w: the schedule is declared in the schedules file", ErrConflict)
)

// IdempotencyError is why Enqueue refused a whole call because of one
// task's idempotency key. errors.Is matches Err.
type IdempotencyError struct {
	Err   error // ErrIdempotencyMismatch or ErrIdempotencyPruned
	Index int   // the refused NewTask's index in the Enqueue call
	Queue string
	Key   string
	// TaskID is the task the key is reserved for; "" when the clash is
	// with an earlier NewTask of the same call (or, rarely, a pruned task
	// whose id was not read).
	TaskID string
}

func (e *IdempotencyError) Error() string {
	who := "an earlier task of the same call"
	switch {
	case e.TaskID != "":
		who = "task " + e.TaskID
	case e.Err == ErrIdempotencyPruned:
		who = "a pruned task"
	}
	return fmt.Sprintf("task %d: queue %q, idempotency key %q (held by %s): %v", e.Index, e.Queue, e.Key, who, e.Err)
}

func (e *IdempotencyError) Unwrap() error { return e.Err }

// NewTask is a task to enqueue. The caller (the API) has validated it.
type NewTask struct {
	ID          string // UUIDv7 chosen by the caller
	Queue       string
	Target      task.Target
	Payload     []byte
	ContentType string
	Priority    int
	RunAt       time.Time // zero = now + Delay
	// Delay, when RunAt is zero, makes the task due Delay after the store's
	// now (on PostgreSQL the database's clock): a replica whose clock is
	// off cannot make a delayed task due early or late. 0 = due now.
	Delay          time.Duration
	MaxAttempts    int // 0 = the queue's max_attempts
	Timeout        time.Duration
	IdempotencyKey string // "" = none
	// Fingerprint identifies the request a key stands for (see
	// task.Request.Fingerprint); nil = unknown, which matches any request.
	// Only read when IdempotencyKey is set.
	Fingerprint  []byte
	TraceParent  string    // W3C traceparent to deliver under; "" = none
	Schedule     string    // the schedule whose run this is; "" = none
	ScheduledFor time.Time // that run's scheduled time; zero = none
}

// Enqueued is the result for one NewTask.
type Enqueued struct {
	Task task.Task
	// Existing is true when the queue already held a task with the same
	// idempotency key: Task is that original task and nothing was inserted.
	Existing bool
}

// ListParams selects tasks of one queue, in id (creation) order. The
// fields after Limit are filters; zero values filter nothing (see
// ListTasks for what a filtered page costs).
type ListParams struct {
	Queue string
	State task.State // "" = every state
	After string     // exclusive lower bound on id ("" = from the start)
	Limit int        // 1..1000

	// CreatedAfter and CreatedBefore bound the creation time written in the
	// task's id (UUIDv7, milliseconds; the times are truncated to the
	// millisecond): created at or after CreatedAfter, before CreatedBefore.
	// They narrow the id range, so they cost nothing.
	CreatedAfter, CreatedBefore time.Time
	// IdempotencyKey, when set, selects the one task holding that key in
	// the queue (through the key's unique index), if it matches the rest.
	IdempotencyKey string
	// Priority, when not nil, must equal the task's.
	Priority *int
	// TargetHost, when set, must equal the host of the target URL
	// (TargetHost), compared without regard to case.
	TargetHost string
	// RunAfter and RunBefore bound run_at: at or after RunAfter, before
	// RunBefore. Zero: unbounded.
	RunAfter, RunBefore time.Time
}

// ScanFactor bounds what a filtered list reads: a page filtered on the
// priority, the target host or run_at examines at most ScanFactor × Limit
// tasks of its (queue, state, id) range, however few of them match, and
// ends its page where it stopped (TaskPage.Next).
const ScanFactor = 10

// TaskPage is one page of ListTasks.
type TaskPage struct {
	Tasks []task.Task
	// Next is the id the following page starts after (ListParams.After);
	// "" when no task past this page can match. A filtered page may hold
	// fewer than Limit tasks, or none, and still have a Next: its scan
	// reached the bound (ScanFactor) first.
	Next string
}

// RowFiltered reports whether p filters on columns outside the list's
// index (priority, target host, run_at), which ListTasks examines row by
// row within a bounded scan.
func (p ListParams) RowFiltered() bool {
	return p.Priority != nil || p.TargetHost != "" || !p.RunAfter.IsZero() || !p.RunBefore.IsZero()
}

// Match reports whether t passes every filter of p (queue, state, id and
// creation range, key, priority, host, run_at), After excepted.
func (p ListParams) Match(t task.Task) bool {
	lo, hi := p.IDRange()
	switch {
	case t.Queue != p.Queue, p.State != "" && t.State != p.State:
		return false
	case lo != "" && t.ID < lo, hi != "" && t.ID >= hi:
		return false
	case p.IdempotencyKey != "" && t.IdempotencyKey != p.IdempotencyKey:
		return false
	}
	return p.MatchRow(t.Priority, t.Target.URL, t.RunAt)
}

// MatchRow reports whether a task with this priority, target URL and
// run_at passes p's row filters (RowFiltered).
func (p ListParams) MatchRow(priority int, targetURL string, runAt time.Time) bool {
	switch {
	case p.Priority != nil && priority != *p.Priority:
		return false
	case p.TargetHost != "" && !strings.EqualFold(TargetHost(targetURL), p.TargetHost):
		return false
	case !p.RunAfter.IsZero() && runAt.Before(p.RunAfter):
		return false
	case !p.RunBefore.IsZero() && !runAt.Before(p.RunBefore):
		return false
	}
	return true
}

// IDRange is the id range [lo, hi) that CreatedAfter and CreatedBefore
// select, as lower-case UUID strings (which compare as the ids do); ""
// for an open side. lo is the least id of its millisecond: a UUIDv7's
// version and variant bits make every real id of that millisecond
// greater, so "id > lo" selects the same tasks as "id >= lo".
func (p ListParams) IDRange() (lo, hi string) {
	if !p.CreatedAfter.IsZero() {
		lo = timeID(p.CreatedAfter)
	}
	if !p.CreatedBefore.IsZero() {
		hi = timeID(p.CreatedBefore)
	}
	return lo, hi
}

// timeID is the least UUID of t's millisecond in the UUIDv7 layout
// (before 1970: the least UUID of all).
func timeID(t time.Time) string {
	ms := max(t.UnixMilli(), 0)
	var u [16]byte
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	return uuid.UUID(u).String()
}

// TargetHost is the host of a target URL as filters compare it: lower
// case, without port or the brackets of an IPv6 literal; "" when the URL
// does not parse.
func TargetHost(target string) string {
	u, err := url.Parse(target)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Hostname())
}

// MaxBulk is the most tasks one bulk change touches: the ids of one call,
// or the tasks one sweep changes.
const MaxBulk = 1000

// BulkResult is what a bulk change (CancelTasks, RetryTasks) did to one of
// the ids it was given.
type BulkResult struct {
	ID string
	// State is the task's state after the call; "" when Err is ErrNotFound.
	State task.State
	// Err is nil when the call changed the task, ErrNotFound when the
	// queue has no task with that id, and ErrConflict when the task's
	// state (State) does not allow the change.
	Err error
}

// SweepParams selects the tasks a sweep (CancelState, RetryState) changes:
// up to Limit tasks of Queue in State with id > After, in id order.
type SweepParams struct {
	Queue string
	State task.State
	After string // "" = from the start
	Limit int    // 1..MaxBulk
}

// Sweep is what one sweep did.
type Sweep struct {
	Changed int // tasks it changed
	// Last is the highest id it examined, SweepParams.After when it
	// examined none; the next call continues after it.
	Last string
	// More reports whether tasks in the state remain after Last.
	More bool
}

// FinishedMinute counts one queue's tasks that finished in one minute.
type FinishedMinute struct {
	Queue     string
	Minute    time.Time // the minute's start, UTC
	Succeeded int64
	Failed    int64
}

// MaxFinishedWindow bounds FinishedPerMinute's window.
const MaxFinishedWindow = time.Hour

// Lease is a task leased to one worker for one attempt.
type Lease struct {
	Task      task.Task // State Running, Attempt already incremented
	Token     int64     // identifies this lease; completions must present it
	ExpiresAt time.Time
}

// LeaseRequest asks Lease for tasks.
//
// The fair order: the candidates are each leasable queue's due tasks in
// (priority, run_at, id) order, the r-th of queue q (r = 1, 2, …) with the
// key (Running[q] + r) / weight(q); Lease picks them in ascending key, ties
// by priority, then run_at, then id. That is water-filling: the next slot
// goes to the queue with the fewest tasks running relative to its weight,
// so a queue with no backlog beats one with a long backlog, and over
// successive leases weights share the workers in proportion. Priority
// orders tasks inside a queue only.
//
// The reserve: the first Shared positions go in the fair order to any
// queue; the positions past Shared go only to queues with Running[q] == 0
// that got nothing in the shared positions, one task each (in the fair
// order among them). A caller that keeps some workers back this way can
// never have all of them held by one queue while another has due work.
type LeaseRequest struct {
	Limit    int            // most tasks to lease
	Shared   int            // of Limit, how many may go to any queue; >= Limit: no reserve
	LeaseFor time.Duration  // lease expiry from now
	Running  map[string]int // tasks the caller has running now, by queue (nil: none)
	// AvailableOnly lets the store skip moving scheduled and retrying
	// tasks that fell due to available first: the lease may then leave
	// them for the leader's PromoteDue (about once a second) or the next
	// lease without it. A dispatcher sets it on the leases a wake-up
	// starts, which come for tasks enqueued due or made available; its
	// polls and the leases that follow a full one promote.
	AvailableOnly bool
}

// EnqueueLeaser is a dispatcher's side of a lease made in an enqueue's
// transaction (see LeasesOnEnqueue). At low and moderate rates a task's
// enqueue and its lease were two transactions, two round trips and a
// wake-up apart; with free delivery slots in the same process, the
// enqueue's transaction can lease as well, and its commit hands the tasks
// straight to the dispatcher.
type EnqueueLeaser interface {
	// EnqueueLease asks for a lease of up to due tasks to run in an
	// enqueue's transaction, and reserves the slots of the request it
	// returns until Leased. ok is false when the dispatcher has nothing to
	// lease into now (no free shared slot, a backlog it is leasing through
	// itself, or leasing stopped): the enqueue then commits alone and
	// wakes the dispatcher as usual.
	EnqueueLease(due int) (req LeaseRequest, ok bool)
	// Leased hands over what that lease took, after the transaction
	// committed (ls nil when it did not), and frees the reserved slots ls
	// left unused. A store calls it exactly once for each EnqueueLease
	// that returned ok.
	Leased(req LeaseRequest, ls []Lease)
}

// LeasesOnEnqueue is a Store that can lease in its enqueue's transaction.
// SetEnqueueLeaser installs the one leaser (nil removes it); from then
// on an Enqueue that makes tasks due now, in a queue that is not paused,
// asks it for a lease and runs that lease, in the fair order of
// LeaseRequest over every queue's available tasks (the new ones
// included), inside its own transaction (LeaserSlot and EnqueueLeaseRun
// do the driver's part). The store signals its Wakeups after such an
// enqueue only when the lease may have left work behind
// (EnqueueLeaseRun.HandOver).
type LeasesOnEnqueue interface {
	SetEnqueueLeaser(l EnqueueLeaser)
}

// LeaseRef names a held lease.
type LeaseRef struct {
	TaskID string
	Token  int64
}

// Outcome is how an attempt ended.
type Outcome int

const (
	// Succeeded: final state succeeded.
	Succeeded Outcome = iota + 1
	// Retry: state retrying with run_at = now + RetryIn (or RetryAt); but
	// if the attempt was the task's last (attempt >= max_attempts) the task
	// fails instead.
	Retry
	// Fail: final state failed (permanent error).
	Fail
	// Release: the attempt was abandoned before it finished (shutdown): state
	// available, run_at now, attempt decremented, so it is not counted.
	Release
	// Defer: the attempt was never sent (its destination is busy, held by a
	// Retry-After, or its circuit breaker is open): state retrying with
	// run_at = now + RetryIn (or RetryAt), attempt decremented so it is
	// not counted, last_error set to LastError, last_status unchanged,
	// finished_at stays NULL.
	Defer
)

// Completion reports one finished attempt.
type Completion struct {
	LeaseRef
	Outcome Outcome
	// RetryIn, for Retry and Defer when RetryAt is zero: the task is due
	// again RetryIn after the store's now (on PostgreSQL the database's
	// clock), whatever the dispatcher's clock says. 0 = due now.
	RetryIn    time.Duration
	RetryAt    time.Time // for Retry and Defer: an absolute due time instead of RetryIn
	LastError  string    // "" clears it
	LastStatus int       // 0 = no HTTP response
	// Attempt is the attempt's record for the task's history, written in
	// the same transaction when the completion is accepted (and only
	// then). nil when nothing was sent (Defer, a Release before the
	// request went out): there is no attempt to record. Its TaskID is
	// ignored (the LeaseRef's is used).
	Attempt *task.Attempt
}

// DestinationReport is what one replica saw of one destination since its
// previous report.
type DestinationReport struct {
	Name      string
	InFlight  int           // requests in flight from this replica now
	Successes int64         // answered well since the previous report
	Failures  int64         // failed or refused since the previous report
	Latency   time.Duration // mean latency of the answered requests among them; 0 = none
	// Policy inputs for apply (not stored): the dispatcher's own reading of
	// the window.
	Congested bool          // a 429, 503, timeout or connection error was seen
	Saturated bool          // this replica had as many in flight as its share allowed
	Limit     float64       // this replica's own concurrency limit now
	Peers     int           // live replicas at the previous sync (0 = unknown)
	Hold      time.Duration // a Retry-After asks the destination to wait this much longer
}

// DestinationSync is a destination after SyncDestinations.
type DestinationSync struct {
	task.Destination
	Rank int // this replica's position among the live reporters (0-based)
}

// Store is everything the queue logic needs from a database. Every method
// is safe for concurrent use. Times are produced by the database clock on
// PostgreSQL (so replicas agree) and by the process clock on SQLite, where
// lease expiry runs on a clock that follows the monotonic clock, so that a
// step of the wall clock does not expire running tasks. Callers give due
// times as durations (NewTask.Delay, Completion.RetryIn) so that the store's
// clock, not the caller's, decides when they fall.
type Store interface {
	// Ping checks the database answers and its schema is migrated (for
	// /readyz): ErrUnavailable, or ErrNotMigrated.
	Ping(ctx context.Context) error
	// Close releases connections; in-flight calls may fail after it.
	Close() error

	// Enqueue inserts tasks atomically: all are stored or none. A task whose
	// (queue, idempotency key) is reserved already, by a stored task or by
	// one pruned less than the retention PruneIdempotencyKeys is given ago,
	// is not inserted: if the reservation's fingerprint matches (equal, or
	// either side nil) and its task is stored, the result is that task with
	// Existing set; a different fingerprint fails the call with an
	// *IdempotencyError wrapping ErrIdempotencyMismatch, a pruned task with
	// one wrapping ErrIdempotencyPruned, and nothing of the call is stored.
	// Two NewTasks of one call sharing a key yield one task (the second
	// result is Existing) if their fingerprints match, and the same
	// mismatch error if not. A stored keyed task reserves its key. The queue row is
	// created with default settings if missing (concurrency 0, rate limit 0,
	// max attempts task.DefaultMaxAttempts, timeout task.DefaultTimeout, not
	// paused). MaxAttempts 0 takes the queue's max_attempts; Timeout 0 the
	// queue's timeout. State is scheduled when RunAt (or now + Delay) is
	// after now, else available. Results are in input order. A new task's result may share
	// its Payload with the NewTask's (a batch's payloads run to megabytes, so
	// they are not copied): neither side may modify it afterwards.
	Enqueue(ctx context.Context, tasks []NewTask) ([]Enqueued, error)

	// GetTask returns one task (ErrNotFound).
	GetTask(ctx context.Context, id string) (task.Task, error)
	// ListTasks returns up to p.Limit tasks of p.Queue with id > p.After,
	// ascending by id, that pass p's filters (ListParams.Match), and where
	// the next page starts. Unknown queue: empty. Its cost is bounded
	// whatever the queue holds: the state and creation filters narrow an
	// index range read up to the page; an idempotency key selects one task
	// by its index; the row filters (ListParams.RowFiltered) examine at
	// most ScanFactor × Limit tasks of the range, and the page ends where
	// that scan stopped (TaskPage.Next), full or not.
	ListTasks(ctx context.Context, p ListParams) (TaskPage, error)
	// ListAttempts returns a task's attempt records, oldest first
	// (ErrNotFound when there is no such task; none recorded: empty).
	ListAttempts(ctx context.Context, taskID string) ([]task.Attempt, error)
	// CancelTask moves an unfinished task (any pending state, or running) to
	// cancelled, clearing its lease so a running attempt's completion is
	// refused. A final task: ErrConflict. Returns the updated task.
	CancelTask(ctx context.Context, id string) (task.Task, error)
	// RetryTask moves a failed or cancelled task to available with run_at now,
	// attempt 0 and finished_at cleared (last_error kept). Other states:
	// ErrConflict. Returns the updated task.
	RetryTask(ctx context.Context, id string) (task.Task, error)

	// CancelTasks applies CancelTask to each of ids (at most MaxBulk) that
	// is a task of queue, in one transaction, and returns one result per
	// id, in input order: a task of another queue is ErrNotFound, one in a
	// final state ErrConflict; neither fails the call.
	CancelTasks(ctx context.Context, queue string, ids []string) ([]BulkResult, error)
	// RetryTasks applies RetryTask to each of ids (at most MaxBulk) that is
	// a task of queue, in one transaction, as CancelTasks does.
	RetryTasks(ctx context.Context, queue string, ids []string) ([]BulkResult, error)
	// CancelState cancels, as CancelTask does, up to p.Limit tasks of
	// p.Queue in p.State (an unfinished state) with id > p.After, in id
	// order, in one transaction, reading only that (queue, state, id)
	// range.
	CancelState(ctx context.Context, p SweepParams) (Sweep, error)
	// RetryState retries, as RetryTask does, up to p.Limit tasks of p.Queue
	// in p.State (failed or cancelled) with id > p.After, in id order, in
	// one transaction. A caller sweeping a queue passes Sweep.Last on, so
	// a task that fails again during the sweep is not retried twice.
	RetryState(ctx context.Context, p SweepParams) (Sweep, error)

	// GetQueue returns a queue's settings and Counts (ErrNotFound). Counts
	// are exact; reading them costs about the queue's pending tasks
	// (scheduled, available, running, retrying), never its finished ones.
	// GetQueue, ListQueues and UpdateQueue read every count of a queue in
	// one snapshot.
	GetQueue(ctx context.Context, name string) (task.Queue, error)
	// ListQueues returns every queue, by name, with Counts.
	ListQueues(ctx context.Context) ([]task.Queue, error)
	// ListQueueSettings returns every queue's settings, by name, without
	// Counts (nil): one read of the queues, none of the tasks, cheap enough
	// for a dispatcher to cache and refresh often.
	ListQueueSettings(ctx context.Context) ([]task.Queue, error)
	// UpdateQueue applies p, creating the queue with defaults first if
	// missing, and returns it with Counts, read after the change is
	// committed (the change never waits for a count).
	UpdateQueue(ctx context.Context, name string, p task.QueuePatch) (task.Queue, error)

	// Lease takes up to req.Limit due tasks (pending state, run_at <= now)
	// from queues that are not paused, in the fair order (see LeaseRequest);
	// sets them running, increments attempt, and gives each a fresh token
	// and expiry now+req.LeaseFor. Concurrent callers (other replicas) never
	// lease the same task. A queue's concurrency (running count, all
	// replicas) and rate limit (starts per second, token bucket with a
	// burst of max(1, rate)) are never exceeded. Leases come back in
	// (priority, run_at, id) order.
	Lease(ctx context.Context, req LeaseRequest) ([]Lease, error)
	// ExtendLeases pushes the expiry of the held leases to now+leaseFor and
	// returns the refs that are no longer held (rescued, cancelled, finished).
	ExtendLeases(ctx context.Context, refs []LeaseRef, leaseFor time.Duration) (lost []LeaseRef, err error)
	// Complete applies completions in one transaction. A completion is
	// applied only if the task is still running under that token; accepted[i]
	// tells whether cs[i] was. A final state sets finished_at. An accepted
	// completion's Attempt, when set, is recorded in the same transaction
	// (see ListAttempts), in the order of cs; a refused one's never is.
	Complete(ctx context.Context, cs []Completion) (accepted []bool, err error)

	// Maintenance, run by the leader only.

	// AcquireLeadership makes owner the leader for ttl if there is none (or
	// the lease expired) or renews it if owner already leads; it reports
	// whether owner leads now.
	AcquireLeadership(ctx context.Context, owner string, ttl time.Duration) (bool, error)
	// ResignLeadership gives leadership up if owner holds it.
	ResignLeadership(ctx context.Context, owner string) error
	// PromoteDue moves scheduled and retrying tasks whose run_at has passed
	// to available, and returns how many moved.
	PromoteDue(ctx context.Context) (int, error)
	// RescueExpired handles running tasks whose lease expired: retrying with
	// run_at now (or failed, "lease expired", if attempts are spent); it
	// returns how many. Each gets an attempt record in the same
	// transaction: outcome expired, class lease_expired, started when the
	// lease was taken, finished now, the replica and trace unknown.
	RescueExpired(ctx context.Context) (int, error)
	// Prune deletes up to limit final tasks whose finished_at is older than
	// now-retention, with their attempt records, and returns how many. The idempotency keys of the tasks
	// it deletes stay reserved, marked pruned, until PruneIdempotencyKeys.
	Prune(ctx context.Context, retention time.Duration, limit int) (int, error)
	// PruneIdempotencyKeys releases up to limit idempotency keys whose task
	// was pruned and that were first used before now-retention, and returns
	// how many. A key whose task is stored is never released.
	PruneIdempotencyKeys(ctx context.Context, retention time.Duration, limit int) (int, error)

	// FoldCounts does the upkeep that keeps counting cheap, for drivers
	// that need it (PostgreSQL folds the count deltas that finishing,
	// reopening and pruning tasks append into per-queue totals; SQLite
	// keeps its totals as it writes and does nothing). Counts are exact
	// whether or not it has run; it only keeps reading them fast. It
	// returns how many totals it changed. Run by the leader, about once a
	// second.
	FoldCounts(ctx context.Context) (int, error)

	// FinishedPerMinute returns how many tasks of each queue reached
	// succeeded and failed in each minute of the last window (at most
	// MaxFinishedWindow; minutes by finished_at on the store's clock,
	// truncated to the minute), ordered by queue then minute; minutes with
	// neither are absent. It reads the finished-task index over the window
	// only, so its cost is the window's finished tasks, never the older ones.
	FinishedPerMinute(ctx context.Context, window time.Duration) ([]FinishedMinute, error)

	// OldestDue returns, for each queue with a pending task whose run_at has
	// passed, how long the oldest such task has been due (for metrics and
	// the queue-stalled alert). Queues with none are absent.
	OldestDue(ctx context.Context) (map[string]time.Duration, error)

	// Enqueue, Complete (Retry, Release), RetryTask, RetryTasks,
	// RetryState, RescueExpired and PromoteDue signal Wakeups when they make a task due now; Complete also
	// when it ends an attempt in a queue with a concurrency limit (the freed
	// slot may let a waiting task start).
	//
	// Destinations (see task.Destination). The dispatcher owns the policy
	// (adaptive limit, circuit breaker); the store keeps the shared rows and
	// applies changes under a row lock, so replicas never race on them.

	// SyncDestinations, in one transaction, for each report in name order:
	// creates the destination's row if missing (zero Limit, BreakerClosed,
	// no ceilings), locks it, stores the report as replica's latest for that
	// destination (replacing the previous one, stamped with the database's
	// now), calls apply with the row, the report and now, and writes the row
	// back when apply returns true. It returns, in report order, each
	// destination as stored, with Stats summed over the reports of replicas
	// stamped within live (replica's own included) and Rank, replica's
	// position among those replicas' ids in ascending order. apply may run
	// again if the transaction is retried; it must not block.
	SyncDestinations(ctx context.Context, replica string, live time.Duration, reports []DestinationReport,
		apply func(d *task.Destination, r DestinationReport, now time.Time) bool) ([]DestinationSync, error)
	// ChangeDestination locks one destination's row (creating it if
	// missing), calls fn with it and the database's now, writes it back when
	// fn returns true, and returns the row as stored (Stats not filled).
	// Breaker transitions and probe ownership go through it.
	ChangeDestination(ctx context.Context, name string, fn func(d *task.Destination, now time.Time) bool) (task.Destination, error)
	// ListDestinations returns every destination, by name, with Stats over
	// the reports stamped within live.
	ListDestinations(ctx context.Context, live time.Duration) ([]task.Destination, error)
	// GetDestination returns one destination with Stats (ErrNotFound).
	GetDestination(ctx context.Context, name string, live time.Duration) (task.Destination, error)
	// UpdateDestination applies the operator's ceilings, creating the row if
	// missing, and returns it with Stats.
	UpdateDestination(ctx context.Context, name string, p task.DestinationPatch, live time.Duration) (task.Destination, error)
	// PruneDestinations deletes reports stamped before now-idle, then
	// destinations with no ceilings set, breaker closed, and neither a
	// report left nor a change within idle. It returns how many
	// destinations it deleted. Run by the leader.
	PruneDestinations(ctx context.Context, idle time.Duration) (int, error)

	// Schedules (see schedule.Schedule). Names are unique. A schedule
	// declared in the schedules file (Source file) is changed only by the
	// file's reconciler: calls made for the API on one return
	// ErrFileSchedule.

	// PutSchedule creates or replaces s (Spec, Queue, Task, Paused,
	// Source) and returns it as stored; created tells which. The spec must
	// compile (schedule.Errors otherwise). CreatedAt and LastRunAt of a
	// replaced schedule are kept. NextRunAt, when s.NextRunAt is zero, is
	// kept if the timing (cron, every, timezone, start_at, end_at) and
	// paused are unchanged, else it is the first run time after now and
	// after LastRunAt: an edit takes effect from the next run, and runs
	// passed while paused are not missed ones. A non-zero s.NextRunAt is
	// stored as given.
	PutSchedule(ctx context.Context, s schedule.Schedule) (stored schedule.Schedule, created bool, err error)
	// GetSchedule returns one schedule (ErrNotFound).
	GetSchedule(ctx context.Context, name string) (schedule.Schedule, error)
	// ListSchedules returns up to p.Limit schedules with name > p.After,
	// by name.
	ListSchedules(ctx context.Context, p ScheduleListParams) ([]schedule.Schedule, error)
	// DeleteSchedule deletes a schedule (ErrNotFound); by is who asks.
	// Tasks it enqueued stay.
	DeleteSchedule(ctx context.Context, name string, by schedule.Source) error
	// SetSchedulePaused pauses or resumes a schedule and returns it. A
	// resumed schedule's next run is the first after now (and after
	// LastRunAt); the runs passed while paused are not missed ones.
	SetSchedulePaused(ctx context.Context, name string, paused bool, by schedule.Source) (schedule.Schedule, error)
	// ClaimSchedules, run by the leader, enqueues the due runs of up to
	// limit schedules that are not paused and whose next run time has
	// passed, oldest first. For each, in one transaction with the tasks'
	// insert, it locks the row, plans by schedule.Clock.Due at now (on
	// the database clock) and the schedule's missed policy, enqueues one
	// task per planned run (RunTasks) and moves NextRunAt to the plan's
	// Next and LastRunAt to its latest run. A schedule's row is claimed by
	// one caller at a time and a run's task carries its idempotency key,
	// so concurrent or repeated calls never enqueue a scheduled time twice.
	ClaimSchedules(ctx context.Context, limit int) ([]ScheduleClaim, error)

	// Wakeups delivers a signal soon after tasks become due in any replica
	// (PostgreSQL LISTEN/NOTIFY; in-process on SQLite). Signals may be
	// coalesced or lost: callers also poll. The channel closes when ctx ends.
	Wakeups(ctx context.Context) (<-chan struct{}, error)
}
