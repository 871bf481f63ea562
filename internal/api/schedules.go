package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
)

// nextRunsShown is how many upcoming run times a schedule's JSON lists.
const nextRunsShown = 5

// scheduleJSON is the wire shape of a schedule.
type scheduleJSON struct {
	Name      string          `json:"name"`
	Cron      string          `json:"cron,omitempty"`
	Every     string          `json:"every,omitempty"`
	Timezone  string          `json:"timezone"`
	Queue     string          `json:"queue"`
	Task      templateJSON    `json:"task"`
	Paused    bool            `json:"paused"`
	Missed    schedule.Missed `json:"missed"`
	Jitter    string          `json:"jitter"`
	StartAt   *string         `json:"start_at"`
	EndAt     *string         `json:"end_at"`
	Source    schedule.Source `json:"source"`
	NextRunAt *string         `json:"next_run_at"`
	LastRunAt *string         `json:"last_run_at"`
	NextRuns  []string        `json:"next_runs"`
	CreatedAt string          `json:"created_at"`
	UpdatedAt string          `json:"updated_at"`
}

// templateJSON is a task template in the fields of an enqueued task, so a
// GET's task can be PUT back unchanged.
type templateJSON struct {
	Target        targetJSON      `json:"target"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payload_base64,omitempty"`
	ContentType   string          `json:"content_type,omitempty"`
	Priority      int             `json:"priority"`
	MaxAttempts   int             `json:"max_attempts,omitempty"`
	Timeout       string          `json:"timeout,omitempty"`
}

type scheduleListJSON struct {
	Schedules  []scheduleJSON `json:"schedules"`
	NextCursor string         `json:"next_cursor"`
}

// putScheduleReply is a created (201) or replaced (200) schedule.
type putScheduleReply struct {
	scheduleJSON
	created bool
}

func (p putScheduleReply) MarshalJSON() ([]byte, error) { return marshal(p.scheduleJSON) }

func (p putScheduleReply) httpStatus() int {
	if p.created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func (p putScheduleReply) location() string { return "/v1/schedules/" + p.Name }

func fmtOptTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := fmtTime(t)
	return &s
}

// toScheduleJSON renders sc; next_runs are the stored next run and those
// after it, or, while paused, the runs a resume now would give.
func toScheduleJSON(sc schedule.Schedule, now time.Time) scheduleJSON {
	j := scheduleJSON{
		Name: sc.Name, Cron: sc.Spec.Cron, Timezone: sc.Spec.Timezone, Queue: sc.Queue,
		Task: toTemplateJSON(sc.Task), Paused: sc.Paused, Missed: sc.Spec.Missed,
		Jitter: fmtDuration(sc.Spec.Jitter), StartAt: fmtOptTime(sc.Spec.StartAt), EndAt: fmtOptTime(sc.Spec.EndAt),
		Source: sc.Source, NextRunAt: fmtOptTime(sc.NextRunAt), LastRunAt: fmtOptTime(sc.LastRunAt),
		NextRuns: []string{}, CreatedAt: fmtTime(sc.CreatedAt), UpdatedAt: fmtTime(sc.UpdatedAt),
	}
	if j.Timezone == "" {
		j.Timezone = "UTC"
	}
	if sc.Spec.Every != 0 {
		j.Every = fmtDuration(sc.Spec.Every)
	}
	clock, err := schedule.Compile(sc.Spec)
	if err != nil {
		return j // stored specs compile; a vanished zone shows no runs
	}
	var runs []time.Time
	switch {
	case sc.Paused:
		runs = clock.NextN(now, nextRunsShown)
	case !sc.NextRunAt.IsZero():
		runs = append([]time.Time{sc.NextRunAt}, clock.NextN(sc.NextRunAt, nextRunsShown-1)...)
	}
	for _, r := range runs {
		j.NextRuns = append(j.NextRuns, fmtTime(r))
	}
	return j
}

func toTemplateJSON(t schedule.Template) templateJSON {
	j := templateJSON{
		Target:      targetJSON{URL: t.Target.URL, Method: t.Target.Method, Headers: t.Target.Headers},
		ContentType: t.ContentType, Priority: t.Priority, MaxAttempts: t.MaxAttempts,
	}
	if j.Target.Method == "" {
		j.Target.Method = "POST"
	}
	if j.Target.Headers == nil {
		j.Target.Headers = map[string]string{}
	}
	if t.Timeout != 0 {
		j.Timeout = fmtDuration(t.Timeout)
	}
	if t.Payload != nil {
		mt, _, _ := mime.ParseMediaType(t.ContentType)
		if (mt == "application/json" || strings.HasSuffix(mt, "+json")) && json.Valid(t.Payload) {
			j.Payload = json.RawMessage(t.Payload)
		} else {
			j.PayloadBase64 = base64.StdEncoding.EncodeToString(t.Payload)
		}
	}
	return j
}

// scheduleName returns the path's schedule name, or a 404 for a name no
// schedule can have.
func scheduleName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if schedule.CheckName(name) != "" {
		return "", notFound("no schedule named %s", quoteInput(name))
	}
	return name, nil
}

// scheduleErr maps the store's answers about one schedule to problems.
func (s *server) scheduleErr(name, op string, err error) error {
	var errs schedule.Errors
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("no schedule named %q", name)
	case errors.Is(err, store.ErrFileSchedule):
		file := "the schedules file"
		if s.cfg.SchedulesFile != "" {
			file = s.cfg.SchedulesFile
		}
		return conflict("schedule %q is declared in %s (SPOOL_SCHEDULES_FILE); change it there, the API cannot %s it", name, file, op)
	case errors.As(err, &errs):
		fs := make([]fieldError, len(errs))
		for i, e := range errs {
			fs[i] = fieldError{Field: e.Field, Detail: e.Reason}
		}
		return invalid(fs...)
	}
	return fmt.Errorf("%s schedule %s: %w", op, name, err)
}

// putSchedule: PUT /v1/schedules/{name} creates or replaces a schedule.
func (s *server) putSchedule(r *http.Request) (putScheduleReply, error) {
	name := r.PathValue("name")
	if msg := schedule.CheckName(name); msg != "" {
		return putScheduleReply{}, invalidField("name", "%s", msg)
	}
	body, err := readJSONBody(r)
	if err != nil {
		return putScheduleReply{}, err
	}
	now := s.cfg.Now()
	sc, err := decodeSchedule(body, name, decodeEnv{now: now, maxBodyBytes: s.cfg.MaxBodyBytes, checkTarget: s.cfg.CheckTarget})
	if err != nil {
		return putScheduleReply{}, err
	}
	stored, created, err := s.cfg.Store.PutSchedule(r.Context(), sc)
	if err != nil {
		return putScheduleReply{}, s.scheduleErr(name, "change", err)
	}
	return putScheduleReply{scheduleJSON: toScheduleJSON(stored, now), created: created}, nil
}

func (s *server) getSchedule(r *http.Request) (scheduleJSON, error) {
	name, err := scheduleName(r)
	if err != nil {
		return scheduleJSON{}, err
	}
	sc, err := s.cfg.Store.GetSchedule(r.Context(), name)
	if err != nil {
		return scheduleJSON{}, s.scheduleErr(name, "get", err)
	}
	return toScheduleJSON(sc, s.cfg.Now()), nil
}

// deleteSchedule answers with the schedule it deleted.
func (s *server) deleteSchedule(r *http.Request) (scheduleJSON, error) {
	name, err := scheduleName(r)
	if err != nil {
		return scheduleJSON{}, err
	}
	sc, err := s.cfg.Store.GetSchedule(r.Context(), name)
	if err != nil {
		return scheduleJSON{}, s.scheduleErr(name, "delete", err)
	}
	if err := s.cfg.Store.DeleteSchedule(r.Context(), name, schedule.SourceAPI); err != nil {
		return scheduleJSON{}, s.scheduleErr(name, "delete", err)
	}
	return toScheduleJSON(sc, s.cfg.Now()), nil
}

func (s *server) pauseSchedule(r *http.Request) (scheduleJSON, error) {
	return s.setSchedulePaused(r, true)
}

func (s *server) resumeSchedule(r *http.Request) (scheduleJSON, error) {
	return s.setSchedulePaused(r, false)
}

func (s *server) setSchedulePaused(r *http.Request, paused bool) (scheduleJSON, error) {
	name, err := scheduleName(r)
	if err != nil {
		return scheduleJSON{}, err
	}
	op := map[bool]string{true: "pause", false: "resume"}[paused]
	sc, err := s.cfg.Store.SetSchedulePaused(r.Context(), name, paused, schedule.SourceAPI)
	if err != nil {
		return scheduleJSON{}, s.scheduleErr(name, op, err)
	}
	return toScheduleJSON(sc, s.cfg.Now()), nil
}

// triggerSchedule enqueues one run now, outside the schedule's times: it
// records the schedule and now as its scheduled time, carries no
// idempotency key and leaves the schedule's next run where it was.
func (s *server) triggerSchedule(r *http.Request) (taskJSON, error) {
	name, err := scheduleName(r)
	if err != nil {
		return taskJSON{}, err
	}
	sc, err := s.cfg.Store.GetSchedule(r.Context(), name)
	if err != nil {
		return taskJSON{}, s.scheduleErr(name, "trigger", err)
	}
	nt := store.RunTasks(sc, []time.Time{s.cfg.Now()})[0]
	nt.IdempotencyKey, nt.RunAt = "", time.Time{}
	res, err := s.cfg.Store.Enqueue(r.Context(), []store.NewTask{nt})
	if err != nil {
		return taskJSON{}, fmt.Errorf("trigger schedule %s: %w", name, err)
	}
	return toTaskJSON(res[0].Task, redactedView), nil
}

func (s *server) listSchedules(r *http.Request) (scheduleListJSON, error) {
	var p store.ScheduleListParams
	var cursor string
	c, err := pageQuery(r, &p.Limit, &cursor, "limit, cursor", nil)
	if err != nil {
		return scheduleListJSON{}, err
	}
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || schedule.CheckName(string(b)) != "" {
			c.add("cursor", "is not a cursor this server issued; pass next_cursor from the previous page unchanged")
		}
		p.After = string(b)
	}
	if err := c.err(); err != nil {
		return scheduleListJSON{}, err
	}
	scs, err := s.cfg.Store.ListSchedules(r.Context(), p)
	if err != nil {
		return scheduleListJSON{}, fmt.Errorf("list schedules: %w", err)
	}
	now := s.cfg.Now()
	out := scheduleListJSON{Schedules: make([]scheduleJSON, len(scs))}
	for i, sc := range scs {
		out.Schedules[i] = toScheduleJSON(sc, now)
	}
	if len(scs) == p.Limit {
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(scs[len(scs)-1].Name))
	}
	return out, nil
}

// decodeSchedule turns a PUT body into the schedule to store. The task
// template is judged by the enqueue decoder (parseTask), less the fields
// each run sets itself.
func decodeSchedule(body []byte, name string, env decodeEnv) (schedule.Schedule, error) {
	raw, err := parseJSON(body)
	if err != nil {
		return schedule.Schedule{}, err
	}
	ms, ok, dup := members(raw)
	if !ok {
		return schedule.Schedule{}, invalidField("", "the body must be a JSON object, got %s", kind(raw))
	}
	c := &collector{}
	if dup != "" {
		c.add(dup, "duplicate field")
	}
	sc := schedule.Schedule{Name: name, Source: schedule.SourceAPI}
	var (
		taskRaw  json.RawMessage
		specBad  bool // a timing field was refused: Compile would only echo it
		badField = func(before int) {
			if len(c.errs) > before {
				specBad = true
			}
		}
	)
	for _, m := range ms {
		if isNull(m.val) {
			continue
		}
		before := len(c.errs)
		switch m.key {
		case "name":
			if v, ok := decodeString(c, m.key, m.val); ok && v != name {
				c.add(m.key, "must match the name in the path (%s), or be left out", quoteInput(name))
			}
		case "cron":
			sc.Spec.Cron, _ = decodeString(c, m.key, m.val)
			badField(before)
		case "every":
			sc.Spec.Every, _ = decodeDuration(c, m.key, m.val, schedule.MinEvery, schedule.MaxEvery)
			badField(before)
		case "timezone":
			sc.Spec.Timezone, _ = decodeString(c, m.key, m.val)
			badField(before)
		case "missed":
			if v, ok := decodeString(c, m.key, m.val); ok {
				sc.Spec.Missed = schedule.Missed(v)
			}
			badField(before)
		case "jitter":
			sc.Spec.Jitter, _ = decodeDuration(c, m.key, m.val, 0, schedule.MaxJitter)
			badField(before)
		case "start_at", "end_at":
			v, ok := decodeString(c, m.key, m.val)
			if !ok {
				break
			}
			at, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				c.add(m.key, "must be an RFC 3339 time such as \"2030-01-02T15:04:05Z\", got %s", quoteInput(v))
				break
			}
			if m.key == "start_at" {
				sc.Spec.StartAt = at.UTC()
			} else {
				sc.Spec.EndAt = at.UTC()
			}
			badField(before)
		case "queue":
			if v, ok := decodeString(c, m.key, m.val); ok {
				if msg := checkQueueName(v); msg != "" {
					c.add(m.key, "%s", msg)
				}
				sc.Queue = v
			}
		case "task":
			taskRaw = m.val
		case "paused":
			sc.Paused, _ = decodeBool(c, m.key, m.val)
		default:
			c.add(m.key, "unknown field")
		}
	}
	if sc.Queue == "" && !hasField(c, "queue") {
		c.add("queue", "required: the queue each run's task is enqueued in")
	}
	if taskRaw == nil {
		c.add("task", "required: the task each run enqueues, with the fields of an enqueued task, e.g. {\"target\": {\"url\": \"https://example.com/hook\"}}")
	} else if tms, ok, tdup := members(taskRaw); !ok {
		c.add("task", "must be a task object, got %s", kind(taskRaw))
	} else {
		kept := tms[:0]
		for _, m := range tms {
			switch m.key {
			case "delay", "run_at":
				c.add("task."+m.key, "set by the schedule: each run is due at its scheduled time (plus jitter)")
			case "idempotency_key":
				c.add("task."+m.key, "set by the schedule: each run's key is schedule:<name>:<scheduled time>")
			default:
				kept = append(kept, m)
			}
		}
		env.queue = sc.Queue
		nt := parseTask(c, "task", kept, tdup, env)
		sc.Task = schedule.Template{
			Target: nt.Target, Payload: nt.Payload, ContentType: nt.ContentType,
			Priority: nt.Priority, MaxAttempts: nt.MaxAttempts, Timeout: nt.Timeout,
		}
	}
	if !specBad {
		if _, err := schedule.Compile(sc.Spec); err != nil {
			var errs schedule.Errors
			if errors.As(err, &errs) {
				for _, e := range errs {
					c.add(e.Field, "%s", e.Reason)
				}
			}
		}
	}
	if err := c.err(); err != nil {
		return schedule.Schedule{}, err
	}
	return sc, nil
}

// hasField reports whether c holds a problem with field.
func hasField(c *collector, field string) bool {
	for _, e := range c.errs {
		if e.Field == field {
			return true
		}
	}
	return false
}

// DecodeSchedule judges one schedule as PUT /v1/schedules/{name} would
// (body: its JSON object), so a schedule declared in a file obeys the
// same rules; the error lists every invalid field. checkTarget may be
// nil. The schedule's Source is left for the caller to set.
func DecodeSchedule(body []byte, name string, checkTarget func(*url.URL) error) (schedule.Schedule, error) {
	if msg := schedule.CheckName(name); msg != "" {
		return schedule.Schedule{}, fmt.Errorf("name: %s", msg)
	}
	sc, err := decodeSchedule(body, name, decodeEnv{now: time.Now(), maxBodyBytes: DefaultMaxBodyBytes, checkTarget: checkTarget})
	var ae *apiError
	if errors.As(err, &ae) && len(ae.fields) > 0 {
		parts := make([]string, len(ae.fields))
		for i, f := range ae.fields {
			parts[i] = f.Field + ": " + f.Detail
		}
		return schedule.Schedule{}, errors.New(strings.Join(parts, "; "))
	}
	if ae != nil {
		return schedule.Schedule{}, errors.New(ae.detail)
	}
	return sc, err
}
