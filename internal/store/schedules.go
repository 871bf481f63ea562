package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/task"
)

// ScheduleListParams selects a page of schedules in name order.
type ScheduleListParams struct {
	After string // exclusive lower bound on name ("" = from the start)
	Limit int    // 1..1000
}

// ScheduleClaim is what ClaimSchedules did for one schedule.
type ScheduleClaim struct {
	Schedule string
	// Enqueued holds one result per planned run, in scheduled order; a
	// result is Existing when that run's task was already there.
	Enqueued []Enqueued
	Skipped  int       // missed runs the policy dropped
	Now      time.Time // the claim's clock, for the lag of each run
}

// The driver-independent halves of the schedule methods: both drivers
// call these under their row lock, so the rules live in one place.

// PreparePut returns the schedule PutSchedule stores for s, given the
// stored one (nil when new) and now. It refuses an invalid spec and an
// API change to a file schedule.
func PreparePut(s schedule.Schedule, old *schedule.Schedule, now time.Time) (schedule.Schedule, error) {
	if msg := schedule.CheckName(s.Name); msg != "" {
		return schedule.Schedule{}, fmt.Errorf("put schedule: name %s", msg)
	}
	if s.Queue == "" {
		return schedule.Schedule{}, fmt.Errorf("put schedule %s: empty queue", s.Name)
	}
	clock, err := schedule.Compile(s.Spec)
	if err != nil {
		return schedule.Schedule{}, fmt.Errorf("put schedule %s: %w", s.Name, err)
	}
	if s.Source == "" {
		s.Source = schedule.SourceAPI
	}
	if s.Spec.Missed == "" {
		s.Spec.Missed = schedule.MissedLatest
	}
	s.CreatedAt, s.UpdatedAt, s.LastRunAt = now, now, time.Time{}
	if old != nil {
		if old.Source == schedule.SourceFile && s.Source != schedule.SourceFile {
			return schedule.Schedule{}, fmt.Errorf("put schedule %s: %w", s.Name, ErrFileSchedule)
		}
		s.CreatedAt, s.LastRunAt = old.CreatedAt, old.LastRunAt
		if s.NextRunAt.IsZero() && sameTiming(old.Spec, s.Spec) && old.Paused == s.Paused {
			s.NextRunAt = old.NextRunAt
			return s, nil
		}
	}
	if s.NextRunAt.IsZero() {
		s.NextRunAt = clock.Next(later(now, s.LastRunAt))
	}
	return s, nil
}

// PreparePause returns s paused or resumed at now.
func PreparePause(s schedule.Schedule, paused bool, by schedule.Source, now time.Time) (schedule.Schedule, error) {
	if s.Source == schedule.SourceFile && by != schedule.SourceFile {
		return s, fmt.Errorf("pause schedule %s: %w", s.Name, ErrFileSchedule)
	}
	if s.Paused == paused {
		return s, nil
	}
	s.Paused, s.UpdatedAt = paused, now
	if !paused {
		clock, err := schedule.Compile(s.Spec)
		if err != nil {
			return s, fmt.Errorf("resume schedule %s: %w", s.Name, err)
		}
		s.NextRunAt = clock.Next(later(now, s.LastRunAt))
	}
	return s, nil
}

// CheckDelete refuses an API delete of a file schedule.
func CheckDelete(s schedule.Schedule, by schedule.Source) error {
	if s.Source == schedule.SourceFile && by != schedule.SourceFile {
		return fmt.Errorf("delete schedule %s: %w", s.Name, ErrFileSchedule)
	}
	return nil
}

// PlanClaim plans a due schedule's runs at now and returns the tasks to
// enqueue with the schedule as it is to be stored after them. A stored
// spec that no longer compiles (a time zone gone from the system's
// database) is an error: the schedule waits rather than guess.
func PlanClaim(s schedule.Schedule, now time.Time) ([]NewTask, schedule.Schedule, int, error) {
	clock, err := schedule.Compile(s.Spec)
	if err != nil {
		return nil, s, 0, fmt.Errorf("schedule %s: %w", s.Name, err)
	}
	p := clock.Due(s.NextRunAt, now, s.Spec.Missed)
	s.NextRunAt = p.Next
	if len(p.Runs) > 0 {
		s.LastRunAt = p.Runs[len(p.Runs)-1]
	}
	return RunTasks(s, p.Runs), s, p.Skipped, nil
}

// RunTasks builds one task per scheduled time of s: its template, in its
// queue, due at the time plus its jitter, with the run's idempotency key.
func RunTasks(s schedule.Schedule, runs []time.Time) []NewTask {
	out := make([]NewTask, len(runs))
	for i, at := range runs {
		out[i] = NewTask{
			ID:             uuid.Must(uuid.NewV7()).String(),
			Queue:          s.Queue,
			Target:         s.Task.Target,
			Payload:        s.Task.Payload,
			ContentType:    s.Task.ContentType,
			Priority:       s.Task.Priority,
			RunAt:          at.Add(schedule.Jitter(s.Name, at, s.Spec.Jitter)).UTC(),
			MaxAttempts:    s.Task.MaxAttempts,
			Timeout:        s.Task.Timeout,
			IdempotencyKey: schedule.IdempotencyKey(s.Name, at),
			Schedule:       s.Name,
			ScheduledFor:   at.UTC(),
		}
	}
	return out
}

func sameTiming(a, b schedule.Spec) bool {
	return a.Cron == b.Cron && a.Every == b.Every && a.Timezone == b.Timezone &&
		a.StartAt.Equal(b.StartAt) && a.EndAt.Equal(b.EndAt)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// templateJSON is how both drivers store a schedule's task template.
type templateJSON struct {
	URL         string            `json:"url"`
	Method      string            `json:"method,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Payload     []byte            `json:"payload,omitempty"` // base64
	HasPayload  bool              `json:"has_payload,omitempty"`
	ContentType string            `json:"content_type,omitempty"`
	Priority    int               `json:"priority"`
	MaxAttempts int               `json:"max_attempts,omitempty"`
	TimeoutMS   int64             `json:"timeout_ms,omitempty"`
}

// EncodeTemplate is the stored form of a task template.
func EncodeTemplate(t schedule.Template) ([]byte, error) {
	return json.Marshal(templateJSON{
		URL: t.Target.URL, Method: t.Target.Method, Headers: t.Target.Headers,
		Payload: t.Payload, HasPayload: t.Payload != nil, ContentType: t.ContentType,
		Priority: t.Priority, MaxAttempts: t.MaxAttempts, TimeoutMS: t.Timeout.Milliseconds(),
	})
}

// DecodeTemplate reads EncodeTemplate's form.
func DecodeTemplate(b []byte) (schedule.Template, error) {
	var j templateJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return schedule.Template{}, fmt.Errorf("decode task template: %w", err)
	}
	t := schedule.Template{
		Target:      task.Target{URL: j.URL, Method: j.Method, Headers: j.Headers},
		Payload:     j.Payload,
		ContentType: j.ContentType,
		Priority:    j.Priority,
		MaxAttempts: j.MaxAttempts,
		Timeout:     time.Duration(j.TimeoutMS) * time.Millisecond,
	}
	if j.HasPayload && t.Payload == nil {
		t.Payload = []byte{}
	}
	return t, nil
}
