// Package schedule is Spool's periodic schedules domain: what a schedule
// is, how its cron expression or interval is parsed, the run times it
// yields in its time zone, and which of its due runs to enqueue after a
// delay (the missed-run policy). It knows nothing of HTTP or storage; the
// store enqueues the runs it plans, the API validates with it.
//
// # Time
//
// A cron schedule is wall-clock time in its time zone, and each wall-clock
// time runs at most once:
//
//   - Spring forward: a time inside the gap (02:30 on a day the clocks jump
//     from 02:00 to 03:00) runs at the first instant after the gap, 03:00
//     local. Several times inside one gap (*/15 yields 02:00, 02:15, 02:30,
//     02:45) collapse into that one run at 03:00. A daily job is never
//     silently dropped for a year's shortest day.
//   - Fall back: a time in the repeated hour (01:30 on a day the clocks go
//     from 02:00 back to 01:00) runs once, at its first occurrence (01:30
//     daylight time); the second pass through that hour runs nothing.
//   - Days are what cron says: "0 0 29 2 *" runs on leap days only, "0 0 31
//   - *" in months with 31 days only. An expression that never matches a
//     date (February 30) is refused.
//
// An `every` schedule is elapsed time, not wall-clock time: its runs are
// start_at + k·every (the Unix epoch when start_at is unset, so every: 1h
// runs on the hour UTC), whatever the time zone and its changes.
//
// The cron parser is github.com/robfig/cron/v3 (five fields, plus the
// @yearly, @monthly, @weekly, @daily, @midnight, @hourly names). Its own
// Next walks local time across DST transitions in ways that repeat or drop
// runs, so Spool runs it on the wall clock written as UTC (where no day is
// 23 or 25 hours long) and maps each wall-clock time back to an instant
// itself, by the rules above.
package schedule

import (
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/spoolhq/spool/internal/task"
)

// Missed is what happens to runs that were not enqueued on time.
type Missed string

// The missed-run policies.
const (
	// MissedSkip drops missed runs.
	MissedSkip Missed = "skip"
	// MissedLatest enqueues one run for the missed period: its latest time.
	MissedLatest Missed = "latest"
	// MissedAll enqueues every missed run, at most MaxCatchUp of them (the
	// latest); older ones are dropped.
	MissedAll Missed = "all"
)

// Source says where a schedule was declared.
type Source string

// The sources.
const (
	SourceAPI  Source = "api"
	SourceFile Source = "file"
)

// Limits.
const (
	// Grace is how late a run may be enqueued and still be on time. A
	// leader failover (a dead leader's lease lasts 10 s) or a slow tick
	// stays well within it; a run later than Grace counts as missed and
	// follows the schedule's missed policy.
	Grace = time.Minute
	// MaxCatchUp bounds the missed runs MissedAll enqueues at once.
	MaxCatchUp = 100
	// MinEvery is the shortest interval.
	MinEvery = time.Second
	// MaxEvery is the longest interval.
	MaxEvery = 366 * 24 * time.Hour
	// MaxJitter bounds the random delay added to each run.
	MaxJitter = time.Hour
)

// nameRE is the schedule name syntax, the queue name's: it fits a URL
// segment, an idempotency key, a metric label and a log field.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckName returns why name cannot name a schedule, or "".
func CheckName(name string) string {
	if !nameRE.MatchString(name) {
		return fmt.Sprintf("must be 1 to 128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit, got %q", name)
	}
	return ""
}

// Template is the task each run enqueues: the fields of an enqueued task
// that a schedule fixes (its run time and idempotency key come from the
// run).
type Template struct {
	Target      task.Target
	Payload     []byte // nil = none
	ContentType string
	Priority    int
	MaxAttempts int           // 0 = the queue's
	Timeout     time.Duration // 0 = the queue's
}

// Spec is when a schedule runs. Exactly one of Cron and Every is set.
type Spec struct {
	Cron     string        // five fields, or a name such as @hourly
	Every    time.Duration // a whole number of seconds, MinEvery..MaxEvery
	Timezone string        // IANA name; "" = UTC
	Missed   Missed        // "" = MissedLatest
	Jitter   time.Duration // each run's task is delayed by a stable pseudo-random 0..Jitter
	StartAt  time.Time     // zero = none; no run before it
	EndAt    time.Time     // zero = none; no run after it
}

// Schedule is a named periodic schedule and its progress.
type Schedule struct {
	Name   string
	Spec   Spec
	Queue  string
	Task   Template
	Paused bool
	Source Source
	// NextRunAt is the next time to enqueue; zero once the schedule has
	// ended (EndAt passed).
	NextRunAt time.Time
	// LastRunAt is the scheduled time of the latest run enqueued; zero
	// before the first.
	LastRunAt time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
}

// FieldError is one invalid field of a Spec.
type FieldError struct {
	Field  string // the API's name: cron, every, timezone, missed, jitter, start_at, end_at
	Reason string
}

// Errors lists a Spec's invalid fields.
type Errors []FieldError

func (e Errors) Error() string {
	parts := make([]string, len(e))
	for i, f := range e {
		parts[i] = f.Field + ": " + f.Reason
	}
	return "invalid schedule: " + strings.Join(parts, "; ")
}

// Clock yields a valid Spec's run times.
type Clock struct {
	spec Spec
	loc  *time.Location
	cron *cron.SpecSchedule // nil for Every
}

// parser accepts standard five-field cron and the @ names.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Compile validates s and returns its Clock, or Errors naming each
// invalid field.
func Compile(s Spec) (*Clock, error) {
	var errs Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	c := &Clock{spec: s, loc: time.UTC}
	if s.Timezone != "" {
		// LoadLocation also takes "Local" and file paths' look-alikes; only
		// IANA names are portable between replicas.
		loc, err := time.LoadLocation(s.Timezone)
		switch {
		case err != nil || s.Timezone == "Local":
			bad("timezone", "must be an IANA time zone name such as \"Europe/Paris\" or \"UTC\", got %q", s.Timezone)
		default:
			c.loc = loc
		}
	}
	switch {
	case s.Cron != "" && s.Every != 0:
		bad("every", "cron and every are mutually exclusive; give one")
	case s.Cron == "" && s.Every == 0:
		bad("cron", "required: a cron expression such as \"0 3 * * *\", or every: a duration such as \"5m\"")
	case s.Cron != "":
		spec, reason := parseCron(s.Cron)
		if reason != "" {
			bad("cron", "%s", reason)
		} else {
			c.cron = spec
		}
	default:
		switch {
		case s.Every < MinEvery || s.Every > MaxEvery:
			bad("every", "must be from %s to %s, got %s", MinEvery, MaxEvery, s.Every)
		case s.Every%time.Second != 0:
			bad("every", "must be a whole number of seconds, got %s", s.Every)
		}
	}
	switch s.Missed {
	case "", MissedSkip, MissedLatest, MissedAll:
	default:
		bad("missed", "must be one of skip, latest, all, got %q", s.Missed)
	}
	if s.Jitter < 0 || s.Jitter > MaxJitter {
		bad("jitter", "must be from 0s to %s, got %s", MaxJitter, s.Jitter)
	}
	if !s.StartAt.IsZero() && !s.EndAt.IsZero() && !s.EndAt.After(s.StartAt) {
		bad("end_at", "must be after start_at")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if c.cron != nil {
		// robfig gives up after five years; a leap day is at most eight away
		// (2096 → 2104), so look from a few starting years.
		never := true
		for _, y := range []int{2000, 2004, 2096} {
			if !c.cron.Next(time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
				never = false
				break
			}
		}
		if never {
			return nil, Errors{{Field: "cron", Reason: fmt.Sprintf("%q never matches a date (such as February 30)", s.Cron)}}
		}
	}
	return c, nil
}

// parseCron parses a five-field expression or an @ name, in UTC (see the
// package comment), or says why it cannot.
func parseCron(expr string) (*cron.SpecSchedule, string) {
	trimmed := strings.TrimSpace(expr)
	switch {
	case strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ="):
		return nil, "must not carry a time zone; set timezone instead"
	case strings.HasPrefix(trimmed, "@every"):
		return nil, "@every is not a cron expression here; set every instead (e.g. \"5m\")"
	}
	sched, err := parser.Parse(trimmed)
	if err != nil {
		return nil, fmt.Sprintf("invalid cron expression %q: %s (five fields: minute hour day-of-month month day-of-week, or @yearly, @monthly, @weekly, @daily, @hourly)", expr, err.Error())
	}
	spec, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Sprintf("invalid cron expression %q", expr)
	}
	spec.Location = time.UTC
	return spec, ""
}

// Location is the Clock's time zone.
func (c *Clock) Location() *time.Location { return c.loc }

// Next returns the first run time strictly after after, or zero when
// there is none (past EndAt).
func (c *Clock) Next(after time.Time) time.Time {
	if !c.spec.StartAt.IsZero() && after.Before(c.spec.StartAt) {
		// StartAt itself may be a run time.
		after = c.spec.StartAt.Add(-time.Nanosecond)
	}
	var t time.Time
	if c.cron == nil {
		t = c.nextEvery(after)
	} else {
		t = c.nextCron(after)
	}
	if t.IsZero() || (!c.spec.EndAt.IsZero() && t.After(c.spec.EndAt)) {
		return time.Time{}
	}
	return t.UTC()
}

// NextN returns up to n run times after after.
func (c *Clock) NextN(after time.Time, n int) []time.Time {
	out := make([]time.Time, 0, n)
	for len(out) < n {
		after = c.Next(after)
		if after.IsZero() {
			break
		}
		out = append(out, after)
	}
	return out
}

// nextEvery is the first anchor + k·every after after.
func (c *Clock) nextEvery(after time.Time) time.Time {
	anchor := c.spec.StartAt
	if anchor.IsZero() {
		anchor = time.Unix(0, 0)
	}
	if after.Before(anchor) {
		return anchor
	}
	k := after.Sub(anchor)/c.spec.Every + 1
	return anchor.Add(k * c.spec.Every)
}

// nextCron runs the parser on the wall clock written as UTC and maps each
// wall-clock time it yields back to an instant in the zone, until one is
// after after. In a repeated hour the wall times before after's resolve to
// their first occurrence, which is before after, and are passed over.
func (c *Clock) nextCron(after time.Time) time.Time {
	w := wallAsUTC(after.In(c.loc))
	// The loop ends well before this bound: a repeated hour holds at most
	// 60 wall times of a five-field expression.
	for range 1000 {
		n := c.cron.Next(w)
		// robfig looks five years ahead; leap days can be eight apart.
		for i := 0; n.IsZero() && i < 2; i++ {
			w = time.Date(w.Year()+5, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Second)
			n = c.cron.Next(w)
		}
		if n.IsZero() {
			return time.Time{}
		}
		w = n
		if t := Resolve(w, c.loc); t.After(after) {
			return t
		}
	}
	return time.Time{}
}

// wallAsUTC is t's wall clock, to the second, written as a UTC time.
func wallAsUTC(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.UTC)
}

// Resolve returns the instant at which the wall clock of loc reads w's
// UTC fields (to the second): the first of two (clocks went back), or the
// first instant after the gap when none does (clocks jumped over it).
func Resolve(w time.Time, loc *time.Location) time.Time {
	t := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, loc)
	start, end := t.ZoneBounds()
	if !wallAsUTC(t).Equal(w) {
		// In a gap, Go picks an instant on one side of it; the transition
		// is that zone period's start (picked after) or end (before).
		if wallAsUTC(t).After(w) {
			return start
		}
		return end
	}
	if !start.IsZero() {
		// The same wall time in the previous zone period comes first when
		// the clocks went back at start.
		_, prevOff := start.Add(-time.Nanosecond).Zone()
		cand := time.Unix(w.Unix()-int64(prevOff), 0).In(loc)
		if cand.Before(t) && wallAsUTC(cand).Equal(w) {
			return cand
		}
	}
	return t
}

// Plan is what to enqueue for a schedule at one moment.
type Plan struct {
	Runs    []time.Time // scheduled times to enqueue, ascending
	Skipped int         // missed times the policy dropped
	Next    time.Time   // the next run time after now; zero when ended
}

// Due plans a schedule whose next run time is next at now: the on-time
// runs (due, at most Grace late), then the missed ones (later than Grace)
// by policy. next after now plans nothing.
func (c *Clock) Due(next, now time.Time, policy Missed) Plan {
	if next.IsZero() || next.After(now) {
		return Plan{Next: next}
	}
	cutoff := now.Add(-Grace) // times before it are missed
	var (
		missed  []time.Time // the latest MaxCatchUp missed times
		nMissed int
		onTime  []time.Time
	)
	t := next
	if c.cron == nil && t.Before(cutoff) {
		// Intervals can be 1s apart after a week away: count the missed
		// times, and list only the last MaxCatchUp, without walking them.
		last := cutoff.Add(-time.Nanosecond)
		if !c.spec.EndAt.IsZero() && c.spec.EndAt.Before(last) {
			last = c.spec.EndAt
		}
		n := int(last.Sub(t)/c.spec.Every) + 1
		if n > MaxCatchUp {
			t = t.Add(time.Duration(n-MaxCatchUp) * c.spec.Every)
			nMissed = n - MaxCatchUp
		}
	}
	for ; !t.IsZero() && !t.After(now); t = c.Next(t) {
		if t.Before(cutoff) {
			nMissed++
			missed = append(missed, t)
			if len(missed) > MaxCatchUp {
				missed = missed[1:]
			}
			continue
		}
		onTime = append(onTime, t)
	}
	p := Plan{Next: t}
	switch policy {
	case MissedSkip:
		missed = nil
	case MissedAll:
	default:
		if len(missed) > 1 {
			missed = missed[len(missed)-1:]
		}
	}
	p.Runs = append(missed, onTime...)
	p.Skipped = nMissed - len(missed)
	return p
}

// Jitter is the delay of the run of schedule name at scheduled time at: a
// hash of both, below max. It is stable, so a retried claim delays a run
// the same way.
func Jitter(name string, at time.Time, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(at.UTC().Format(time.RFC3339Nano)))
	return time.Duration(h.Sum64() % uint64(max))
}

// IdempotencyKey is the key of the task for the run of schedule name at
// scheduled time at: one task per scheduled time, whoever enqueues it.
func IdempotencyKey(name string, at time.Time) string {
	return "schedule:" + name + ":" + at.UTC().Format(time.RFC3339Nano)
}
