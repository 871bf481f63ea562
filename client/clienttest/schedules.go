package clienttest

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Schedule is the fake's schedule record, in the API's JSON shape. The fake
// does not run schedules: next_run_at and next_runs stay empty, and
// triggering is the only way a schedule makes a task.
type Schedule struct {
	Name      string       `json:"name"`
	Cron      string       `json:"cron,omitempty"`
	Every     string       `json:"every,omitempty"`
	Timezone  string       `json:"timezone"`
	Queue     string       `json:"queue"`
	Task      scheduleTask `json:"task"`
	Paused    bool         `json:"paused"`
	Missed    string       `json:"missed"`
	Jitter    string       `json:"jitter"`
	StartAt   *time.Time   `json:"start_at"`
	EndAt     *time.Time   `json:"end_at"`
	Source    string       `json:"source"`
	NextRunAt *time.Time   `json:"next_run_at"`
	LastRunAt *time.Time   `json:"last_run_at"`
	NextRuns  []time.Time  `json:"next_runs"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
	body      enqueueBody  // the template as received, for triggers
}

type scheduleTask struct {
	Target      target `json:"target"`
	ContentType string `json:"content_type,omitempty"`
	Priority    int    `json:"priority"`
	MaxAttempts int    `json:"max_attempts,omitempty"`
	Timeout     string `json:"timeout,omitempty"`
}

type scheduleBody struct {
	Name     string      `json:"name"`
	Cron     string      `json:"cron"`
	Every    string      `json:"every"`
	Timezone string      `json:"timezone"`
	Queue    string      `json:"queue"`
	Task     enqueueBody `json:"task"`
	Paused   bool        `json:"paused"`
	Missed   string      `json:"missed"`
	Jitter   string      `json:"jitter"`
	StartAt  *time.Time  `json:"start_at"`
	EndAt    *time.Time  `json:"end_at"`
}

// SetSchedule stores a schedule as given (e.g. one with Source "file").
func (s *Server) SetSchedule(sc Schedule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc.NextRuns == nil {
		sc.NextRuns = []time.Time{}
	}
	s.scheds[sc.Name] = &sc
}

func (s *Server) putSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	data, _ := io.ReadAll(r.Body)
	var b scheduleBody
	if err := strictDecode(data, &b); err != nil {
		problem(w, http.StatusBadRequest, "malformed schedule: "+err.Error(), nil)
		return
	}
	var errs []fieldError
	if (b.Cron == "") == (b.Every == "") {
		errs = append(errs, fieldError{"cron", "give exactly one of cron and every"})
	}
	if b.Every != "" {
		if _, err := time.ParseDuration(b.Every); err != nil {
			errs = append(errs, fieldError{"every", "must be a duration"})
		}
	}
	if b.Queue == "" {
		errs = append(errs, fieldError{"queue", "required"})
	}
	if b.Task.Delay != "" || b.Task.RunAt != "" || b.Task.IdempotencyKey != "" {
		errs = append(errs, fieldError{"task", "delay, run_at and idempotency_key are set by the schedule"})
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	t, terrs := s.validate(s.queueLocked(b.Queue, now), b.Task, "task.", now)
	errs = append(errs, terrs...)
	if len(errs) > 0 {
		problem(w, http.StatusUnprocessableEntity, "invalid schedule", errs)
		return
	}
	old, exists := s.scheds[name]
	if exists && old.Source == "file" {
		problem(w, http.StatusConflict, fmt.Sprintf("schedule %q is declared in the schedules file (SPOOL_SCHEDULES_FILE); change it there", name), nil)
		return
	}
	sc := &Schedule{
		Name: name, Cron: b.Cron, Every: b.Every, Timezone: b.Timezone, Queue: b.Queue, Paused: b.Paused,
		Missed: b.Missed, Jitter: b.Jitter, StartAt: b.StartAt, EndAt: b.EndAt, Source: "api",
		NextRuns: []time.Time{}, CreatedAt: now, UpdatedAt: now, body: b.Task,
		Task: scheduleTask{Target: t.Target, ContentType: t.ContentType, Priority: t.Priority, Timeout: b.Task.Timeout},
	}
	if b.Task.MaxAttempts != nil {
		sc.Task.MaxAttempts = *b.Task.MaxAttempts
	}
	if sc.Timezone == "" {
		sc.Timezone = "UTC"
	}
	if sc.Missed == "" {
		sc.Missed = "latest"
	}
	if sc.Jitter == "" {
		sc.Jitter = "0s"
	}
	status := http.StatusCreated
	if exists {
		sc.CreatedAt, status = old.CreatedAt, http.StatusOK
	}
	s.scheds[name] = sc
	writeJSON(w, status, sc)
}

// scheduleLocked finds the path's schedule or answers 404.
func (s *Server) scheduleLocked(w http.ResponseWriter, r *http.Request) *Schedule {
	sc, ok := s.scheds[r.PathValue("name")]
	if !ok {
		problem(w, http.StatusNotFound, fmt.Sprintf("no schedule named %q", r.PathValue("name")), nil)
	}
	return sc
}

func fileConflict(w http.ResponseWriter, sc *Schedule) bool {
	if sc.Source != "file" {
		return false
	}
	problem(w, http.StatusConflict, fmt.Sprintf("schedule %q is declared in the schedules file (SPOOL_SCHEDULES_FILE); change it there", sc.Name), nil)
	return true
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc := s.scheduleLocked(w, r); sc != nil {
		writeJSON(w, http.StatusOK, sc)
	}
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scheduleLocked(w, r)
	if sc == nil || fileConflict(w, sc) {
		return
	}
	delete(s.scheds, sc.Name)
	writeJSON(w, http.StatusOK, sc)
}

func (s *Server) pauseSchedule(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		sc := s.scheduleLocked(w, r)
		if sc == nil || fileConflict(w, sc) {
			return
		}
		sc.Paused = paused
		writeJSON(w, http.StatusOK, sc)
	}
}

func (s *Server) triggerSchedule(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scheduleLocked(w, r)
	if sc == nil {
		return
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	t, _ := s.validate(s.queueLocked(sc.Queue, now), sc.body, "task.", now)
	t.Queue = sc.Queue
	s.insertLocked(t)
	writeJSON(w, http.StatusCreated, struct {
		*Task
		Schedule     string    `json:"schedule"`
		ScheduledFor time.Time `json:"scheduled_for"`
	}{t, sc.Name, now})
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			problem(w, http.StatusUnprocessableEntity, "invalid limit", []fieldError{{"limit", "must be an integer from 1 to 1000"}})
			return
		}
		limit = n
	}
	after := ""
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil {
			problem(w, http.StatusUnprocessableEntity, "invalid cursor", []fieldError{{"cursor", "is not a cursor this server issued"}})
			return
		}
		after = string(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n := range s.scheds {
		if n > after {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	out := struct {
		Schedules  []*Schedule `json:"schedules"`
		NextCursor string      `json:"next_cursor"`
	}{Schedules: []*Schedule{}}
	if len(names) > limit {
		names = names[:limit]
	}
	for _, n := range names {
		out.Schedules = append(out.Schedules, s.scheds[n])
	}
	if len(names) == limit {
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(names[len(names)-1]))
	}
	writeJSON(w, http.StatusOK, out)
}
