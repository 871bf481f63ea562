package ui

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/spoolhq/spool/internal/api"
	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/task"
)

// --- Overview ---

type overviewData struct {
	Queues       []queueRow
	Destinations []task.Destination
}

type queueRow struct {
	task.Queue
	Chart chart
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess session) error {
	qs, err := s.cfg.Store.ListQueues(r.Context())
	if err != nil {
		return fmt.Errorf("list queues: %w", err)
	}
	ds, err := s.cfg.Store.ListDestinations(r.Context(), destinationLive)
	if err != nil {
		return fmt.Errorf("list destinations: %w", err)
	}
	series := s.throughput()
	d := overviewData{Destinations: ds}
	for _, q := range qs {
		d.Queues = append(d.Queues, queueRow{Queue: q, Chart: series.chart(q.Name)})
	}
	s.render(w, r, sess, http.StatusOK, "overview", "Overview", d)
	return nil
}

// --- Queue ---

type queueData struct {
	Queue        task.Queue
	State        task.State // the tab; "" = every state
	Tasks        []task.Task
	After        string // this page's cursor
	Next         string // the next page's cursor; "" = last page
	Search       string
	NotFound     bool // the searched id is no task of this queue
	Settings     settingsForm
	Errors       []api.FieldProblem
	Filter       filterForm
	FilterErrors []api.FieldProblem
	Query        url.Values // the tab and filters, for the page links
}

// TabURL is the listing of one state (""= every state) with the same filters, from the start.
func (d queueData) TabURL(st task.State) string {
	q := d.Filter.values()
	if st != "" {
		q.Set("state", string(st))
	}
	u := "/ui/queues/" + url.PathEscape(d.Queue.Name)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// PageURL is this listing with its tab and filters, starting after after.
func (d queueData) PageURL(after string) string {
	q := url.Values{}
	for k, v := range d.Query {
		q[k] = v
	}
	if after != "" {
		q.Set("after", after)
	}
	u := "/ui/queues/" + url.PathEscape(d.Queue.Name)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

type settingsForm struct {
	Concurrency, RateLimit, MaxAttempts, Timeout, Weight, RetryStatuses string
}

func settingsOf(q task.Queue) settingsForm {
	return settingsForm{
		Concurrency: strconv.Itoa(q.Concurrency), RateLimit: strconv.FormatFloat(q.RateLimit, 'f', -1, 64),
		MaxAttempts: strconv.Itoa(q.MaxAttempts), Timeout: q.Timeout.String(), Weight: strconv.Itoa(q.Weight),
		RetryStatuses: q.RetryStatuses.String(),
	}
}

func (s *Server) queuePage(w http.ResponseWriter, r *http.Request, sess session) error {
	name := r.PathValue("queue")
	q, err := s.cfg.Store.GetQueue(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return &pageError{http.StatusNotFound, fmt.Sprintf("There is no queue %q.", name)}
	}
	if err != nil {
		return fmt.Errorf("get queue: %w", err)
	}
	d := queueData{Queue: q, Settings: settingsOf(q)}
	return s.renderQueue(w, r, sess, http.StatusOK, d)
}

func (s *Server) renderQueue(w http.ResponseWriter, r *http.Request, sess session, status int, d queueData) error {
	qv := r.URL.Query()
	if id := strings.TrimSpace(qv.Get("id")); id != "" {
		d.Search = id
		t, err := s.cfg.Store.GetTask(r.Context(), id)
		switch {
		case err == nil && t.Queue == d.Queue.Name:
			http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(t.ID), http.StatusSeeOther)
			return nil
		case err == nil, errors.Is(err, store.ErrNotFound):
			d.NotFound = true
		default:
			return fmt.Errorf("get task: %w", err)
		}
	}
	if st := qv.Get("state"); st != "" {
		state, err := task.ParseState(st)
		if err != nil {
			return &pageError{http.StatusBadRequest, fmt.Sprintf("Unknown state %q; the states are scheduled, available, running, retrying, succeeded, failed and cancelled.", st)}
		}
		d.State = state
	}
	d.Filter = filterOf(qv)
	p := store.ListParams{Queue: d.Queue.Name, State: d.State, After: qv.Get("after"), Limit: pageSize}
	if err := api.ListFilters(d.Filter.values(), &p); err != nil {
		prob, ok := api.ProblemOf(err)
		if !ok {
			return err
		}
		d.FilterErrors = problemFields(prob)
		status = prob.Status
	} else {
		page, err := s.cfg.Store.ListTasks(r.Context(), p)
		if err != nil {
			return fmt.Errorf("list tasks: %w", err)
		}
		d.Tasks, d.Next = page.Tasks, page.Next
	}
	d.After = p.After
	d.Query = d.Filter.values()
	if d.State != "" {
		d.Query.Set("state", string(d.State))
	}
	s.render(w, r, sess, status, "queue", "Queue "+d.Queue.Name, d)
	return nil
}

// filterForm is the queue page's filters as typed, kept in the page's
// address so a filtered page can be bookmarked and shared.
type filterForm struct {
	Priority, TargetHost, IdempotencyKey, CreatedAfter, CreatedBefore, RunAfter, RunBefore string
}

func filterOf(q url.Values) filterForm {
	g := func(k string) string { return strings.TrimSpace(q.Get(k)) }
	return filterForm{Priority: g("priority"), TargetHost: g("target_host"), IdempotencyKey: g("idempotency_key"),
		CreatedAfter: g("created_after"), CreatedBefore: g("created_before"), RunAfter: g("run_after"), RunBefore: g("run_before")}
}

// values is the filter as the API's query parameters. A time typed as a
// browser's datetime-local ("2026-01-02T15:04") is read as UTC.
func (f filterForm) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	tm := func(s string) string {
		if len(s) == len("2006-01-02T15:04") {
			return s + ":00Z"
		}
		if len(s) == len("2006-01-02T15:04:05") {
			return s + "Z"
		}
		return s
	}
	set("priority", f.Priority)
	set("target_host", f.TargetHost)
	set("idempotency_key", f.IdempotencyKey)
	set("created_after", tm(f.CreatedAfter))
	set("created_before", tm(f.CreatedBefore))
	set("run_after", tm(f.RunAfter))
	set("run_before", tm(f.RunBefore))
	return v
}

// Active reports whether any filter is set.
func (f filterForm) Active() bool { return f != filterForm{} }

func (s *Server) pauseQueue(w http.ResponseWriter, r *http.Request, sess session) error {
	return s.setPaused(w, r, true)
}

func (s *Server) resumeQueue(w http.ResponseWriter, r *http.Request, sess session) error {
	return s.setPaused(w, r, false)
}

func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, paused bool) error {
	name := r.PathValue("queue")
	if msg := api.CheckQueueName(name); msg != "" {
		return &pageError{http.StatusUnprocessableEntity, "queue: " + msg}
	}
	if _, err := s.cfg.Store.UpdateQueue(r.Context(), name, task.QueuePatch{Paused: &paused}); err != nil {
		return fmt.Errorf("pause queue: %w", err)
	}
	msg := "Queue resumed: its tasks are delivered again."
	if paused {
		msg = "Queue paused: no task of it starts until it is resumed."
	}
	s.redirect(w, r, queueURL(name, r.PostForm), msg)
	return nil
}

// queueSettings applies the settings form through the API's PATCH decoder,
// so a bad value is refused with the API's message.
func (s *Server) queueSettings(w http.ResponseWriter, r *http.Request, sess session) error {
	name := r.PathValue("queue")
	q, err := s.cfg.Store.GetQueue(r.Context(), name)
	if err != nil {
		return fmt.Errorf("get queue: %w", err)
	}
	f := r.PostForm
	form := settingsForm{Concurrency: f.Get("concurrency"), RateLimit: f.Get("rate_limit"), MaxAttempts: f.Get("max_attempts"),
		Timeout: f.Get("timeout"), Weight: f.Get("weight"), RetryStatuses: f.Get("retry_statuses")}
	cur := settingsOf(q)
	body := jsonObject{}
	if form.Concurrency != cur.Concurrency {
		body.number("concurrency", form.Concurrency)
	}
	if form.RateLimit != cur.RateLimit {
		body.number("rate_limit", form.RateLimit)
	}
	if form.MaxAttempts != cur.MaxAttempts {
		body.number("max_attempts", form.MaxAttempts)
	}
	if form.Timeout != cur.Timeout {
		body.str("timeout", strings.TrimSpace(form.Timeout))
	}
	if form.Weight != cur.Weight {
		body.number("weight", form.Weight)
	}
	if form.RetryStatuses != cur.RetryStatuses {
		var toks []string
		for t := range strings.SplitSeq(form.RetryStatuses, ",") {
			if t = strings.TrimSpace(t); t != "" {
				toks = append(toks, t)
			}
		}
		body.value("retry_statuses", toks)
	}
	p, err := api.DecodeQueuePatch(body.bytes())
	if err != nil {
		prob, ok := api.ProblemOf(err)
		if !ok {
			return err
		}
		d := queueData{Queue: q, Settings: form, Errors: problemFields(prob)}
		return s.renderQueue(w, r, sess, prob.Status, d)
	}
	if _, err := s.cfg.Store.UpdateQueue(r.Context(), name, p); err != nil {
		return fmt.Errorf("update queue: %w", err)
	}
	s.redirect(w, r, "/ui/queues/"+url.PathEscape(name), "Settings saved.")
	return nil
}

// bulk retries or cancels the selected tasks of a queue, at most maxBulk.
func (s *Server) bulk(w http.ResponseWriter, r *http.Request, sess session) error {
	name := r.PathValue("queue")
	ids := r.PostForm["id"]
	action := r.PostForm.Get("action")
	if action != "retry" && action != "cancel" {
		return &pageError{http.StatusBadRequest, "Choose retry or cancel."}
	}
	if len(ids) == 0 {
		s.redirect(w, r, queueURL(name, r.PostForm), "No task selected.")
		return nil
	}
	if len(ids) > maxBulk {
		return &pageError{http.StatusUnprocessableEntity, fmt.Sprintf("Select at most %d tasks at a time (%d selected).", maxBulk, len(ids))}
	}
	var res []store.BulkResult
	var err error
	if action == "retry" {
		res, err = s.cfg.Store.RetryTasks(r.Context(), name, ids)
	} else {
		res, err = s.cfg.Store.CancelTasks(r.Context(), name, ids)
	}
	if err != nil {
		return fmt.Errorf("%s tasks: %w", action, err)
	}
	var done, skipped int
	for _, br := range res {
		if br.Err == nil {
			done++
		} else {
			skipped++
		}
	}
	verb := map[string]string{"retry": "Retried", "cancel": "Cancelled"}[action]
	msg := fmt.Sprintf("%s %d of %d selected tasks.", verb, done, len(ids))
	if skipped > 0 {
		msg += fmt.Sprintf(" %d were skipped (not in a state that allows it, or gone).", skipped)
	}
	s.redirect(w, r, queueURL(name, r.PostForm), msg)
	return nil
}

// retryFailed retries the queue's failed tasks, maxSweep per request so
// each request's cost is bounded; the message says whether more remain.
// Retried tasks leave the failed state, so pressing again takes the next.
func (s *Server) retryFailed(w http.ResponseWriter, r *http.Request, sess session) error {
	name := r.PathValue("queue")
	sw, err := s.cfg.Store.RetryState(r.Context(), store.SweepParams{Queue: name, State: task.Failed, Limit: maxSweep})
	if err != nil {
		return fmt.Errorf("retry failed tasks: %w", err)
	}
	msg := fmt.Sprintf("Retried %d failed tasks.", sw.Changed)
	if sw.More {
		msg += fmt.Sprintf(" More failed tasks remain: press the button again to retry the next %d.", maxSweep)
	}
	s.redirect(w, r, "/ui/queues/"+url.PathEscape(name)+"?state=failed", msg)
	return nil
}

// queueURL is where an action on a queue returns: the listing (tab,
// filters, page) the form came from, when it is one of this queue's.
func queueURL(name string, f url.Values) string {
	base := "/ui/queues/" + url.PathEscape(name)
	if b := f.Get("back"); b == base || strings.HasPrefix(b, base+"?") {
		return b
	}
	return base
}

// --- Task ---

type taskData struct {
	Task      task.Task
	Headers   []header
	Payload   payloadView
	TraceID   string
	TraceURL  string
	Curl      string
	CanRetry  bool
	CanCancel bool
	Attempts  []task.Attempt // newest first
	traceTmpl string
}

// TraceLink is the trace viewer's address of a trace id ("" without SPOOL_UI_TRACE_URL).
func (d taskData) TraceLink(id string) string {
	if d.traceTmpl == "" || id == "" {
		return ""
	}
	return strings.ReplaceAll(d.traceTmpl, "{trace_id}", id)
}

type header struct{ Name, Value string }

func (s *Server) taskPage(w http.ResponseWriter, r *http.Request, sess session) error {
	id := r.PathValue("id")
	t, err := s.cfg.Store.GetTask(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return &pageError{http.StatusNotFound, fmt.Sprintf("There is no task %q (it may have been pruned).", id)}
	}
	if err != nil {
		return fmt.Errorf("get task: %w", err)
	}
	admin := sess.role.Allows(auth.Admin)
	d := taskData{Task: t, Headers: headersOf(t.Target.Headers, admin), Payload: viewPayload(t.Payload, t.ContentType),
		CanRetry: t.State == task.Failed || t.State == task.Cancelled, CanCancel: !t.State.Final(), traceTmpl: s.cfg.TraceURL}
	d.TraceID = traceID(t.TraceParent)
	if d.TraceID != "" && s.cfg.TraceURL != "" {
		d.TraceURL = strings.ReplaceAll(s.cfg.TraceURL, "{trace_id}", d.TraceID)
	}
	d.Curl = s.curl(r, t, admin)
	if d.Attempts, err = s.cfg.Store.ListAttempts(r.Context(), t.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("list attempts: %w", err)
	}
	slices.Reverse(d.Attempts) // newest first
	s.render(w, r, sess, http.StatusOK, "task", "Task "+t.ID, d)
	return nil
}

// headersOf lists a target's headers by name, their values replaced by
// api.Redacted unless the key is admin (as the API does).
func headersOf(h map[string]string, admin bool) []header {
	out := make([]header, 0, len(h))
	for n, v := range h {
		if !admin {
			v = api.Redacted
		}
		out = append(out, header{n, v})
	}
	slices.SortFunc(out, func(a, b header) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// traceID is the trace id of a W3C traceparent ("00-<trace>-<span>-<flags>").
func traceID(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || strings.Trim(parts[1], "0") == "" {
		return ""
	}
	return parts[1]
}

func (s *Server) retryTask(w http.ResponseWriter, r *http.Request, sess session) error {
	return s.taskAction(w, r, "retry")
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request, sess session) error {
	return s.taskAction(w, r, "cancel")
}

func (s *Server) taskAction(w http.ResponseWriter, r *http.Request, action string) error {
	id := r.PathValue("id")
	var err error
	if action == "retry" {
		_, err = s.cfg.Store.RetryTask(r.Context(), id)
	} else {
		_, err = s.cfg.Store.CancelTask(r.Context(), id)
	}
	to := "/ui/tasks/" + url.PathEscape(id)
	switch {
	case err == nil && action == "retry":
		s.redirect(w, r, to, "Task retried: it is available for delivery again, attempts counted from zero.")
	case err == nil:
		s.redirect(w, r, to, "Task cancelled.")
	case errors.Is(err, store.ErrNotFound):
		return &pageError{http.StatusNotFound, fmt.Sprintf("There is no task %q.", id)}
	case errors.Is(err, store.ErrConflict) && action == "retry":
		s.redirect(w, r, to, "Not retried: only a failed or cancelled task can be retried.")
	case errors.Is(err, store.ErrConflict):
		s.redirect(w, r, to, "Not cancelled: the task has already finished.")
	default:
		return fmt.Errorf("%s task: %w", action, err)
	}
	return nil
}

// curl is a command that enqueues the same task through the API, with the
// key as $SPOOL_API_KEY (never a real key) and, for keys that may not see
// them, header values as the API shows them (redacted).
func (s *Server) curl(r *http.Request, t task.Task, admin bool) string {
	body := jsonObject{}
	target := jsonObject{}
	target.str("url", t.Target.URL)
	if t.Target.Method != "" && t.Target.Method != "POST" {
		target.str("method", t.Target.Method)
	}
	if len(t.Target.Headers) > 0 {
		h := map[string]string{}
		for _, kv := range headersOf(t.Target.Headers, admin) {
			h[kv.Name] = kv.Value
		}
		target.value("headers", h)
	}
	body.raw("target", target.bytes())
	switch {
	case len(t.Payload) == 0:
	case isJSON(t.ContentType) && json.Valid(t.Payload):
		var c bytes.Buffer
		if json.Compact(&c, t.Payload) == nil {
			body.raw("payload", c.Bytes())
		}
	default:
		body.str("payload_base64", base64.StdEncoding.EncodeToString(t.Payload))
	}
	if t.ContentType != "" && !(isJSON(t.ContentType) && t.ContentType == "application/json") {
		body.str("content_type", t.ContentType)
	}
	if t.Priority != task.DefaultPriority {
		body.value("priority", t.Priority)
	}
	body.value("max_attempts", t.MaxAttempts)
	body.str("timeout", t.Timeout.String())
	base := s.cfg.APIBase
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return "curl -sS -X POST " + shellQuote(base+"/v1/queues/"+url.PathEscape(t.Queue)+"/tasks") + " \\\n" +
		"  -H \"Authorization: Bearer $SPOOL_API_KEY\" \\\n" +
		"  -H 'Content-Type: application/json' \\\n" +
		"  -d " + shellQuote(string(body.bytes()))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// --- Enqueue ---

type enqueueData struct {
	Form   enqueueForm
	Errors []api.FieldProblem
	Note   string
}

type enqueueForm struct {
	Queue, URL, Method, Headers, Payload, PayloadKind, ContentType string
	Priority, Delay, RunAt, MaxAttempts, Timeout, IdempotencyKey   string
}

var methods = []string{"POST", "PUT", "PATCH", "DELETE", "GET", "HEAD", "OPTIONS"}

func (s *Server) enqueueForm(w http.ResponseWriter, r *http.Request, sess session) error {
	q := r.URL.Query()
	d := enqueueData{Form: enqueueForm{Queue: q.Get("queue"), Method: "POST", PayloadKind: "json", Priority: strconv.Itoa(task.DefaultPriority)}}
	if from := q.Get("from"); from != "" {
		t, err := s.cfg.Store.GetTask(r.Context(), from)
		if errors.Is(err, store.ErrNotFound) {
			return &pageError{http.StatusNotFound, fmt.Sprintf("There is no task %q to copy.", from)}
		}
		if err != nil {
			return fmt.Errorf("get task: %w", err)
		}
		admin := sess.role.Allows(auth.Admin)
		d.Form = formOf(t, admin)
		if !admin && len(t.Target.Headers) > 0 {
			d.Note = "Header values are hidden from your key's role: fill them in before enqueueing."
		}
	}
	s.render(w, r, sess, http.StatusOK, "enqueue", "Enqueue a task", d)
	return nil
}

// formOf prefills the form from a task ("enqueue a copy"); header values
// are left blank for keys that may not see them.
func formOf(t task.Task, admin bool) enqueueForm {
	f := enqueueForm{Queue: t.Queue, URL: t.Target.URL, Method: t.Target.Method, ContentType: t.ContentType,
		Priority: strconv.Itoa(t.Priority), MaxAttempts: strconv.Itoa(t.MaxAttempts), Timeout: t.Timeout.String()}
	if f.Method == "" {
		f.Method = "POST"
	}
	var lines []string
	for _, h := range headersOf(t.Target.Headers, true) {
		v := h.Value
		if !admin {
			v = ""
		}
		lines = append(lines, h.Name+": "+v)
	}
	f.Headers = strings.Join(lines, "\n")
	pv := viewPayload(t.Payload, t.ContentType)
	switch pv.Kind {
	case "json":
		f.PayloadKind, f.Payload = "json", pv.Text
	case "text":
		f.PayloadKind, f.Payload = "text", pv.Text
	case "hex":
		f.PayloadKind, f.Payload = "base64", base64.StdEncoding.EncodeToString(t.Payload)
	default:
		f.PayloadKind = "json"
	}
	return f
}

func (s *Server) enqueue(w http.ResponseWriter, r *http.Request, sess session) error {
	f := r.PostForm
	form := enqueueForm{Queue: strings.TrimSpace(f.Get("queue")), URL: strings.TrimSpace(f.Get("url")), Method: f.Get("method"),
		Headers: f.Get("headers"), Payload: f.Get("payload"), PayloadKind: f.Get("payload_kind"), ContentType: strings.TrimSpace(f.Get("content_type")),
		Priority: strings.TrimSpace(f.Get("priority")), Delay: strings.TrimSpace(f.Get("delay")), RunAt: strings.TrimSpace(f.Get("run_at")),
		MaxAttempts: strings.TrimSpace(f.Get("max_attempts")), Timeout: strings.TrimSpace(f.Get("timeout")), IdempotencyKey: f.Get("idempotency_key")}
	body, formErrs := form.json()
	var nt store.NewTask
	var err error
	if len(formErrs) == 0 {
		nt, err = api.DecodeTask(form.Queue, body, api.EnqueueOptions{MaxBodyBytes: s.cfg.MaxBodyBytes, CheckTarget: s.cfg.CheckTarget, Now: s.cfg.Now})
	}
	if err == nil && len(formErrs) == 0 {
		id, uerr := uuid.NewV7()
		if uerr != nil {
			return fmt.Errorf("new task id: %w", uerr)
		}
		nt.ID = id.String()
		res, serr := s.cfg.Store.Enqueue(r.Context(), []store.NewTask{nt})
		var refused *store.IdempotencyError
		switch {
		case errors.As(serr, &refused):
			err = api.IdempotencyRefusal(refused)
		case serr != nil:
			return fmt.Errorf("enqueue: %w", serr)
		case len(res) != 1:
			return fmt.Errorf("enqueue: store returned %d results for 1 task", len(res))
		default:
			msg := "Task enqueued."
			if res[0].Existing {
				msg = "This idempotency key was already used for the same request: here is the task it made."
			}
			s.redirect(w, r, "/ui/tasks/"+url.PathEscape(res[0].Task.ID), msg)
			return nil
		}
	}
	status := http.StatusUnprocessableEntity
	errs := formErrs
	if err != nil {
		prob, ok := api.ProblemOf(err)
		if !ok {
			return err
		}
		status, errs = prob.Status, problemFields(prob)
	}
	s.render(w, r, sess, status, "enqueue", "Enqueue a task", enqueueData{Form: form, Errors: errs})
	return nil
}

func problemFields(p api.Problem) []api.FieldProblem {
	if len(p.Fields) > 0 {
		return p.Fields
	}
	return []api.FieldProblem{{Detail: p.Detail}}
}

// json builds the API's enqueue body from the form: what the form cannot
// express as JSON (a header line without a colon, a payload that is not
// JSON) is refused here; everything else is left to api.DecodeTask so the
// messages are the API's.
func (f enqueueForm) json() ([]byte, []api.FieldProblem) {
	var errs []api.FieldProblem
	target := jsonObject{}
	target.str("url", f.URL)
	if f.Method != "" {
		target.str("method", f.Method)
	}
	if strings.TrimSpace(f.Headers) != "" {
		h := map[string]string{}
		for i, line := range strings.Split(strings.ReplaceAll(f.Headers, "\r\n", "\n"), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				errs = append(errs, api.FieldProblem{Field: "target.headers", Detail: fmt.Sprintf("line %d is not \"Name: value\"", i+1)})
				continue
			}
			h[strings.TrimSpace(name)] = strings.TrimSpace(value)
		}
		target.value("headers", h)
	}
	body := jsonObject{}
	body.raw("target", target.bytes())
	switch f.PayloadKind {
	case "", "json":
		if strings.TrimSpace(f.Payload) != "" {
			if !json.Valid([]byte(f.Payload)) {
				errs = append(errs, api.FieldProblem{Field: "payload", Detail: "is not valid JSON; choose \"text\" to send it as it is"})
			} else {
				body.raw("payload", []byte(f.Payload))
			}
		}
	case "text":
		if f.Payload != "" {
			body.str("payload_base64", base64.StdEncoding.EncodeToString([]byte(f.Payload)))
			if f.ContentType == "" {
				f.ContentType = "text/plain; charset=utf-8"
			}
		}
	case "base64":
		if s := strings.Join(strings.Fields(f.Payload), ""); s != "" {
			body.str("payload_base64", s)
		}
	default:
		errs = append(errs, api.FieldProblem{Field: "payload_kind", Detail: "must be json, text or base64"})
	}
	if f.ContentType != "" {
		body.str("content_type", f.ContentType)
	}
	if f.Priority != "" {
		body.number("priority", f.Priority)
	}
	if f.Delay != "" {
		body.str("delay", f.Delay)
	}
	if f.RunAt != "" {
		body.str("run_at", f.RunAt)
	}
	if f.MaxAttempts != "" {
		body.number("max_attempts", f.MaxAttempts)
	}
	if f.Timeout != "" {
		body.str("timeout", f.Timeout)
	}
	if f.IdempotencyKey != "" {
		body.str("idempotency_key", f.IdempotencyKey)
	}
	return body.bytes(), errs
}

// jsonObject writes a JSON object member by member, in order.
type jsonObject struct{ buf bytes.Buffer }

func (o *jsonObject) key(k string) {
	if o.buf.Len() == 0 {
		o.buf.WriteByte('{')
	} else {
		o.buf.WriteByte(',')
	}
	kb, _ := json.Marshal(k)
	o.buf.Write(kb)
	o.buf.WriteByte(':')
}

func (o *jsonObject) raw(k string, v []byte) { o.key(k); o.buf.Write(v) }

func (o *jsonObject) value(k string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte("null")
	}
	o.raw(k, b)
}

func (o *jsonObject) str(k, v string) { o.value(k, v) }

// number writes a form's number as a JSON number when it reads as one and
// as a string otherwise, so the API's decoder names the field and its
// expected type.
func (o *jsonObject) number(k, v string) {
	v = strings.TrimSpace(v)
	if _, err := strconv.ParseFloat(v, 64); err == nil && json.Valid([]byte(v)) {
		o.raw(k, []byte(v))
		return
	}
	o.str(k, v)
}

func (o *jsonObject) bytes() []byte {
	if o.buf.Len() == 0 {
		return []byte("{}")
	}
	return append(slices.Clone(o.buf.Bytes()), '}')
}

// --- Sign-in ---

type signInData struct {
	Next    string
	Expired bool
	Error   string
}

func (s *Server) signInForm(w http.ResponseWriter, r *http.Request, sess session) error {
	q := r.URL.Query()
	if _, err := s.session(r); err == nil {
		// Open mode, or signed in already: nothing to sign in to.
		http.Redirect(w, r, safeNext(q.Get("next")), http.StatusSeeOther)
		return nil
	}
	s.render(w, r, session{}, http.StatusOK, "signin", "Sign in", signInData{Next: safeNext(q.Get("next")), Expired: q.Get("expired") != ""})
	return nil
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request, _ session) error {
	if s.sess.openMode() {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return nil
	}
	if err := r.ParseForm(); err != nil {
		return &pageError{http.StatusBadRequest, "The form could not be read."}
	}
	next := safeNext(r.PostForm.Get("next"))
	now, addr := s.cfg.Now(), clientAddr(r)
	if wait := s.signIns.wait(addr, now); wait > 0 {
		secs := max(int(wait.Round(time.Second)/time.Second), 1)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.render(w, r, session{}, http.StatusTooManyRequests, "signin", "Sign in",
			signInData{Next: next, Error: fmt.Sprintf("Too many failed sign-ins from this address. Try again in %d s.", secs)})
		return nil
	}
	value, sess, ok := s.sess.signIn(strings.TrimSpace(r.PostForm.Get("key")), now)
	if !ok {
		s.signIns.failed(addr, now)
		s.render(w, r, session{}, http.StatusUnauthorized, "signin", "Sign in",
			signInData{Next: next, Error: "That API key is not valid. Use one of the keys in SPOOL_API_KEYS."})
		return nil
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: Prefix, Expires: sess.expires,
		MaxAge: int(sess.expires.Sub(s.cfg.Now()).Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	s.redirect(w, r, next, fmt.Sprintf("Signed in with a %s key.", sess.role))
	return nil
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, _ session) error {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
	return nil
}

// safeNext keeps a post-sign-in redirect on the dashboard: a path under
// /ui/, never another site ("//evil.example", "/ui/../x" are refused).
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, Prefix) ||
		strings.Contains(u.Path, "..") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") ||
		u.Path == "/ui/signin" {
		return Prefix
	}
	return u.RequestURI()
}
