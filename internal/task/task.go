// Package task is Spool's domain: what a task and a queue are, the states a
// task moves through, and the retry policy. It imports nothing of Spool's and
// knows nothing of HTTP or storage.
package task

import (
	"fmt"
	"time"
)

// State is where a task is in its life.
type State string

// The states. Scheduled, Available and Retrying are "pending" (waiting to be
// leased); Succeeded, Failed and Cancelled are final.
const (
	Scheduled State = "scheduled" // waiting for run_at
	Available State = "available" // due, waiting for a worker
	Running   State = "running"   // leased by a worker
	Retrying  State = "retrying"  // an attempt failed; waiting for run_at (backoff)
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// States lists every state in lifecycle order.
var States = []State{Scheduled, Available, Running, Retrying, Succeeded, Failed, Cancelled}

// ParseState returns the State named s, or an error naming s.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown state %q", s)
}

// Final reports whether no further delivery will happen in state s.
func (s State) Final() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Pending reports whether s waits to be leased.
func (s State) Pending() bool { return s == Scheduled || s == Available || s == Retrying }

// Limits and defaults shared by the API, the stores and the dispatcher.
const (
	DefaultPriority    = 5
	MinPriority        = 0 // runs first
	MaxPriority        = 9
	DefaultMaxAttempts = 25
	MaxMaxAttempts     = 1000
	DefaultTimeout     = 30 * time.Second
	MaxTimeout         = 30 * time.Minute
	// MaxScheduleAhead bounds run_at and delay so a typo cannot park a task for centuries.
	MaxScheduleAhead = 366 * 24 * time.Hour
	// A queue's weight is its share of the workers against the other
	// queues with due work (see store.LeaseRequest).
	DefaultWeight = 1
	MaxWeight     = 1000
)

// Target is where a task is delivered.
type Target struct {
	URL     string
	Method  string // default POST
	Headers map[string]string
}

// Task is one unit of work: an HTTP request to deliver, with its history.
type Task struct {
	ID             string // UUIDv7, time-ordered
	Queue          string
	State          State
	Attempt        int // attempts started so far
	MaxAttempts    int
	Priority       int
	RunAt          time.Time // when it is (or was) due
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     *time.Time // set once final
	Target         Target
	Payload        []byte
	ContentType    string
	Timeout        time.Duration // per attempt
	IdempotencyKey string        // "" when none
	LastError      string        // "" when none
	LastStatus     int           // HTTP status of the last attempt, 0 when none
	// TraceParent is the W3C traceparent of the enqueue that created the
	// task ("" when none), so every delivery joins the caller's trace.
	TraceParent string
	// Schedule names the schedule whose run created the task ("" when
	// none), and ScheduledFor is that run's scheduled time (zero when none).
	Schedule     string
	ScheduledFor time.Time
}

// Queue holds a queue's settings and, when read with counts, its depth.
type Queue struct {
	Name        string
	Concurrency int     // max tasks running at once across all replicas; 0 = unlimited
	RateLimit   float64 // max tasks started per second across all replicas; 0 = unlimited
	MaxAttempts int     // default for tasks enqueued without max_attempts
	Timeout     time.Duration
	Paused      bool
	// Weight is the queue's share of the workers when queues compete
	// (1..MaxWeight, default DefaultWeight): with weights 2 and 1, two
	// backlogged queues get two workers and one.
	Weight int
	// RetryStatuses is which failed attempts retry (default
	// DefaultRetryStatuses); the others fail the task at once.
	RetryStatuses RetryStatuses
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Counts        map[State]int64 // every state present, zero included; nil from ListQueueSettings
}

// QueuePatch changes the settings whose fields are non-nil.
type QueuePatch struct {
	Concurrency   *int
	RateLimit     *float64
	MaxAttempts   *int
	Timeout       *time.Duration
	Paused        *bool
	Weight        *int
	RetryStatuses *RetryStatuses
}
