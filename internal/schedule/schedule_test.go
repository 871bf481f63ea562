package schedule

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustCompile(t *testing.T, s Spec) *Clock {
	t.Helper()
	c, err := Compile(s)
	if err != nil {
		t.Fatalf("Compile(%+v): %v", s, err)
	}
	return c
}

// TestNextRunTimes walks each schedule from after and checks the run times
// it yields, in particular across DST transitions (the package comment's
// rule), leap days and month ends. Times are written with the zone's
// offset so the table reads as wall-clock time.
func TestNextRunTimes(t *testing.T) {
	cases := []struct {
		name  string
		spec  Spec
		after string
		want  []string
	}{
		{"spring forward: 02:30 runs at 03:00, the first instant after the gap",
			Spec{Cron: "30 2 * * *", Timezone: "America/New_York"}, "2025-03-08T02:30:00-05:00",
			[]string{"2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"}},
		{"spring forward: times inside one gap collapse into one run",
			Spec{Cron: "*/15 * * * *", Timezone: "America/New_York"}, "2025-03-09T01:30:00-05:00",
			[]string{"2025-03-09T01:45:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T03:15:00-04:00"}},
		{"spring forward: hourly runs once at 03:00",
			Spec{Cron: "@hourly", Timezone: "America/New_York"}, "2025-03-09T00:30:00-05:00",
			[]string{"2025-03-09T01:00:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T04:00:00-04:00"}},
		{"fall back: 01:30 runs once, at its first occurrence",
			Spec{Cron: "30 1 * * *", Timezone: "America/New_York"}, "2025-11-01T01:30:00-04:00",
			[]string{"2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"}},
		{"fall back: the repeated hour's second pass runs nothing",
			Spec{Cron: "*/30 * * * *", Timezone: "America/New_York"}, "2025-11-02T00:30:00-04:00",
			[]string{"2025-11-02T01:00:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-02T02:00:00-05:00"}},
		{"fall back: from inside the second pass, the next is after it",
			Spec{Cron: "*/30 * * * *", Timezone: "America/New_York"}, "2025-11-02T01:10:00-05:00",
			[]string{"2025-11-02T02:00:00-05:00", "2025-11-02T02:30:00-05:00"}},
		{"Berlin fall back: 02:30 runs once in summer time",
			Spec{Cron: "30 2 * * *", Timezone: "Europe/Berlin"}, "2025-10-25T12:00:00+02:00",
			[]string{"2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"}},
		{"Berlin spring forward",
			Spec{Cron: "30 2 * * *", Timezone: "Europe/Berlin"}, "2025-03-29T12:00:00+01:00",
			[]string{"2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"}},
		{"southern hemisphere spring forward (October)",
			Spec{Cron: "30 2 * * *", Timezone: "Australia/Sydney"}, "2025-10-04T12:00:00+10:00",
			[]string{"2025-10-05T03:00:00+11:00", "2025-10-06T02:30:00+11:00"}},
		{"half-hour DST shift: 02:15 runs at 02:30",
			Spec{Cron: "15 2 * * *", Timezone: "Australia/Lord_Howe"}, "2025-10-04T12:00:00+10:30",
			[]string{"2025-10-05T02:30:00+11:00", "2025-10-06T02:15:00+11:00"}},
		{"leap days only",
			Spec{Cron: "0 12 29 2 *"}, "2025-01-01T00:00:00Z",
			[]string{"2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"}},
		{"leap day across a century that is not leap",
			Spec{Cron: "0 0 29 2 *"}, "2096-03-01T00:00:00Z",
			[]string{"2104-02-29T00:00:00Z"}},
		{"the 31st: months with 31 days only",
			Spec{Cron: "0 0 31 * *"}, "2025-01-31T00:00:00Z",
			[]string{"2025-03-31T00:00:00Z", "2025-05-31T00:00:00Z", "2025-07-31T00:00:00Z", "2025-08-31T00:00:00Z"}},
		{"the 30th skips February",
			Spec{Cron: "0 0 30 * *"}, "2025-01-30T00:00:00Z",
			[]string{"2025-03-30T00:00:00Z"}},
		{"@monthly in a zone: local midnight",
			Spec{Cron: "@monthly", Timezone: "Europe/Berlin"}, "2025-03-15T00:00:00Z",
			[]string{"2025-04-01T00:00:00+02:00", "2025-05-01T00:00:00+02:00"}},
		{"day of month or day of week, as cron has it",
			Spec{Cron: "0 9 1 * MON"}, "2025-09-01T09:00:00Z",
			[]string{"2025-09-08T09:00:00Z", "2025-09-15T09:00:00Z", "2025-09-22T09:00:00Z", "2025-09-29T09:00:00Z", "2025-10-01T09:00:00Z"}},
		{"every: aligned to the epoch",
			Spec{Every: time.Hour}, "2025-03-09T01:20:00-05:00",
			[]string{"2025-03-09T07:00:00Z", "2025-03-09T08:00:00Z"}},
		{"every: elapsed time across a DST change, whatever the zone",
			Spec{Every: 30 * time.Minute, Timezone: "America/New_York"}, "2025-03-09T01:40:00-05:00",
			[]string{"2025-03-09T03:00:00-04:00", "2025-03-09T03:30:00-04:00"}},
		{"every: anchored at start_at",
			Spec{Every: 90 * time.Second, StartAt: time.Date(2025, 1, 1, 0, 0, 7, 0, time.UTC)}, "2024-12-31T00:00:00Z",
			[]string{"2025-01-01T00:00:07Z", "2025-01-01T00:01:37Z", "2025-01-01T00:03:07Z"}},
		{"start_at is a lower bound for cron",
			Spec{Cron: "0 * * * *", StartAt: time.Date(2025, 1, 1, 5, 0, 0, 0, time.UTC)}, "2024-12-31T00:00:00Z",
			[]string{"2025-01-01T05:00:00Z", "2025-01-01T06:00:00Z"}},
		{"end_at ends it",
			Spec{Cron: "0 * * * *", EndAt: time.Date(2025, 1, 1, 2, 0, 0, 0, time.UTC)}, "2025-01-01T00:30:00Z",
			[]string{"2025-01-01T01:00:00Z", "2025-01-01T02:00:00Z"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustCompile(t, tc.spec)
			got := c.NextN(mustTime(t, tc.after), len(tc.want)+1)
			if tc.spec.EndAt.IsZero() {
				got = got[:len(tc.want)]
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d times %v, want %v", len(got), got, tc.want)
			}
			for i, w := range tc.want {
				if want := mustTime(t, w); !got[i].Equal(want) {
					t.Errorf("run %d: got %s (%s), want %s", i, got[i].In(c.Location()).Format(time.RFC3339), got[i], w)
				}
				if got[i].Location() != time.UTC {
					t.Errorf("run %d: %s is not in UTC", i, got[i])
				}
			}
		})
	}
}

// TestResolveAgreesWithWallClock checks, for every minute of the two DST
// days of a few zones, that Resolve returns an instant that reads as the
// wall time asked for (or, in a gap, the transition) and is the earliest
// such instant.
func TestResolveAgreesWithWallClock(t *testing.T) {
	for _, zone := range []string{"America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		for _, day := range []time.Time{time.Date(2025, 3, 9, 0, 0, 0, 0, time.UTC), time.Date(2025, 3, 30, 0, 0, 0, 0, time.UTC),
			time.Date(2025, 10, 5, 0, 0, 0, 0, time.UTC), time.Date(2025, 10, 26, 0, 0, 0, 0, time.UTC), time.Date(2025, 11, 2, 0, 0, 0, 0, time.UTC)} {
			for m := range 24 * 60 {
				w := day.Add(time.Duration(m) * time.Minute)
				got := Resolve(w, loc)
				if wallAsUTC(got.In(loc)).Equal(w) {
					if earlier := got.Add(-time.Hour); wallAsUTC(earlier.In(loc)).Equal(w) {
						t.Fatalf("%s %s: resolved to %s but %s reads the same earlier", zone, w.Format("2006-01-02 15:04"), got, earlier)
					}
					if earlier := got.Add(-30 * time.Minute); wallAsUTC(earlier.In(loc)).Equal(w) {
						t.Fatalf("%s %s: resolved to %s but %s reads the same earlier", zone, w.Format("2006-01-02 15:04"), got, earlier)
					}
					continue
				}
				// A gap: the instant before got reads earlier than w, got later.
				before := wallAsUTC(got.Add(-time.Second).In(loc))
				if !before.Before(w) || !wallAsUTC(got.In(loc)).After(w) {
					t.Fatalf("%s %s: resolved to %s (%s), which is not the end of a gap over it", zone, w.Format("2006-01-02 15:04"), got, got.In(loc))
				}
			}
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	cases := []struct {
		spec   Spec
		field  string
		reason string
	}{
		{Spec{Cron: "61 * * * *"}, "cron", "invalid cron expression"},
		{Spec{Cron: "* * * *"}, "cron", "invalid cron expression"},
		{Spec{Cron: "*/5 * * * * *"}, "cron", "invalid cron expression"},
		{Spec{Cron: "@fortnightly"}, "cron", "invalid cron expression"},
		{Spec{Cron: "0 0 30 2 *"}, "cron", "never matches"},
		{Spec{Cron: "TZ=UTC 0 * * * *"}, "cron", "set timezone instead"},
		{Spec{Cron: "@every 5m"}, "cron", "set every instead"},
		{Spec{}, "cron", "required"},
		{Spec{Cron: "@daily", Every: time.Minute}, "every", "mutually exclusive"},
		{Spec{Every: 500 * time.Millisecond}, "every", "must be from 1s"},
		{Spec{Every: 1500 * time.Millisecond}, "every", "whole number of seconds"},
		{Spec{Cron: "@daily", Timezone: "Mars/Olympus_Mons"}, "timezone", "IANA"},
		{Spec{Cron: "@daily", Timezone: "Local"}, "timezone", "IANA"},
		{Spec{Cron: "@daily", Missed: "sometimes"}, "missed", "skip, latest, all"},
		{Spec{Cron: "@daily", Jitter: -time.Second}, "jitter", "from 0s"},
		{Spec{Cron: "@daily", Jitter: 2 * time.Hour}, "jitter", "to 1h0m0s"},
		{Spec{Cron: "@daily", StartAt: time.Unix(100, 0), EndAt: time.Unix(100, 0)}, "end_at", "after start_at"},
	}
	for _, tc := range cases {
		_, err := Compile(tc.spec)
		var errs Errors
		if !errors.As(err, &errs) {
			t.Errorf("Compile(%+v) = %v, want Errors", tc.spec, err)
			continue
		}
		if errs[0].Field != tc.field || !strings.Contains(errs[0].Reason, tc.reason) {
			t.Errorf("Compile(%+v): %s: %s; want field %s, reason with %q", tc.spec, errs[0].Field, errs[0].Reason, tc.field, tc.reason)
		}
	}
}

func TestDue(t *testing.T) {
	base := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	minutely := mustCompile(t, Spec{Every: time.Minute})
	// Down from 10:00 to 10:30:30: 10:30 is on time (within Grace), 10:00
	// to 10:29 are missed.
	now := base.Add(30*time.Minute + 30*time.Second)
	for _, tc := range []struct {
		policy    Missed
		wantFirst time.Time
		wantRuns  int
		skipped   int
	}{
		{MissedSkip, base.Add(30 * time.Minute), 1, 30},
		{"", base.Add(29 * time.Minute), 2, 29},
		{MissedLatest, base.Add(29 * time.Minute), 2, 29},
		{MissedAll, base, 31, 0},
	} {
		p := minutely.Due(base, now, tc.policy)
		if len(p.Runs) != tc.wantRuns || !p.Runs[0].Equal(tc.wantFirst) || p.Skipped != tc.skipped {
			t.Errorf("%q: runs %d from %s, skipped %d; want %d from %s, skipped %d", tc.policy, len(p.Runs), p.Runs[0], p.Skipped, tc.wantRuns, tc.wantFirst, tc.skipped)
		}
		if !p.Runs[len(p.Runs)-1].Equal(base.Add(30*time.Minute)) || !p.Next.Equal(base.Add(31*time.Minute)) {
			t.Errorf("%q: last run %s, next %s", tc.policy, p.Runs[len(p.Runs)-1], p.Next)
		}
	}

	// Late by less than Grace (a failover): every run is on time, whatever the policy.
	secondly := mustCompile(t, Spec{Every: time.Second})
	for _, policy := range []Missed{MissedSkip, MissedLatest, MissedAll} {
		p := secondly.Due(base, base.Add(12*time.Second+300*time.Millisecond), policy)
		if len(p.Runs) != 13 || p.Skipped != 0 || !p.Next.Equal(base.Add(13*time.Second)) {
			t.Errorf("%s, 12s late: %d runs, %d skipped, next %s", policy, len(p.Runs), p.Skipped, p.Next)
		}
	}

	// Not due: nothing.
	if p := secondly.Due(base, base.Add(-time.Millisecond), MissedAll); len(p.Runs) != 0 || !p.Next.Equal(base) {
		t.Errorf("not due: %+v", p)
	}

	// all is bounded: a week away at one run a second enqueues the last
	// MaxCatchUp missed runs and the on-time ones, and counts the rest.
	now = base.Add(7 * 24 * time.Hour)
	p := secondly.Due(base, now, MissedAll)
	onTime := int(Grace/time.Second) + 1 // now-60s .. now
	total := int(now.Sub(base)/time.Second) + 1
	if len(p.Runs) != MaxCatchUp+onTime || p.Skipped != total-len(p.Runs) {
		t.Errorf("a week away: %d runs, %d skipped; want %d and %d", len(p.Runs), p.Skipped, MaxCatchUp+onTime, total-MaxCatchUp-onTime)
	}
	for i := 1; i < len(p.Runs); i++ {
		if p.Runs[i].Sub(p.Runs[i-1]) != time.Second {
			t.Fatalf("runs %d and %d are %s apart", i-1, i, p.Runs[i].Sub(p.Runs[i-1]))
		}
	}
	if !p.Runs[len(p.Runs)-1].Equal(now) {
		t.Errorf("last run %s, want %s", p.Runs[len(p.Runs)-1], now)
	}

	// The same bound for cron, walked run by run.
	cronMinutely := mustCompile(t, Spec{Cron: "* * * * *", Timezone: "Europe/Berlin"})
	p = cronMinutely.Due(base, base.Add(3*time.Hour), MissedAll)
	if len(p.Runs) != MaxCatchUp+2 || p.Skipped != 180+1-MaxCatchUp-2 {
		t.Errorf("cron, 3h away: %d runs, %d skipped", len(p.Runs), p.Skipped)
	}

	// A schedule that ends stops: Next is zero.
	ending := mustCompile(t, Spec{Every: time.Minute, EndAt: base.Add(2 * time.Minute)})
	p = ending.Due(base, base.Add(10*time.Minute), MissedAll)
	if len(p.Runs) != 3 || !p.Next.IsZero() {
		t.Errorf("ending: %d runs, next %s", len(p.Runs), p.Next)
	}
}

func TestJitterIsStableAndBounded(t *testing.T) {
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	if Jitter("a", at, 0) != 0 {
		t.Error("no jitter asked, some given")
	}
	seen := map[time.Duration]bool{}
	for i := range 100 {
		ti := at.Add(time.Duration(i) * time.Minute)
		j := Jitter("nightly", ti, time.Minute)
		if j < 0 || j >= time.Minute {
			t.Fatalf("jitter %s out of [0, 1m)", j)
		}
		if j != Jitter("nightly", ti, time.Minute) {
			t.Fatal("jitter differs between calls")
		}
		seen[j] = true
	}
	if len(seen) < 90 {
		t.Errorf("only %d distinct delays over 100 runs", len(seen))
	}
}

func TestIdempotencyKey(t *testing.T) {
	at := time.Date(2025, 3, 9, 3, 0, 0, 0, time.FixedZone("EDT", -4*3600))
	if got, want := IdempotencyKey("nightly", at), "schedule:nightly:2025-03-09T07:00:00Z"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"nightly", "a", "report.daily-1_x"} {
		if msg := CheckName(ok); msg != "" {
			t.Errorf("%q refused: %s", ok, msg)
		}
	}
	for _, bad := range []string{"", "-x", "a b", "a/b", strings.Repeat("a", 129)} {
		if CheckName(bad) == "" {
			t.Errorf("%q accepted", bad)
		}
	}
}
