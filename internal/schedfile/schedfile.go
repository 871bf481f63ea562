// Package schedfile reconciles the schedules declared in a YAML file
// (SPOOL_SCHEDULES_FILE) with the store: at start and whenever the file's
// content changes, every schedule in the file is put (marked source file)
// and every file schedule no longer in it is deleted. It polls the
// content rather than watching inotify events, which a Kubernetes
// ConfigMap's symlink swap would not deliver on the file itself.
//
// Each entry is judged by the API's own decoder (api.DecodeSchedule), so
// a file accepts exactly what PUT /v1/schedules/{name} accepts. A file
// with any invalid entry changes nothing: a typo must not delete the
// schedules that followed it.
package schedfile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spoolhq/spool/internal/api"
	"github.com/spoolhq/spool/internal/schedule"
	"github.com/spoolhq/spool/internal/store"
)

// DefaultInterval is how often the file's content is checked.
const DefaultInterval = 5 * time.Second

// document is the file's shape: a list of schedules, each with a name and
// the fields of PUT /v1/schedules/{name}.
//
//	schedules:
//	  - name: nightly-report
//	    cron: "30 2 * * *"
//	    timezone: Europe/Paris
//	    queue: reports
//	    task:
//	      target: {url: "https://example.com/report"}
//	      payload: {kind: nightly}
type document struct {
	Schedules []map[string]any `yaml:"schedules"`
}

// Reconciler keeps the store's file schedules equal to the file's.
type Reconciler struct {
	Store       store.Store
	Path        string
	Logger      *slog.Logger
	CheckTarget func(*url.URL) error // as the API's; nil = none
	Interval    time.Duration        // default DefaultInterval

	applied [sha256.Size]byte // content last reconciled
	done    bool
	invalid [sha256.Size]byte // content last refused as invalid (logged once)
}

// Parse reads the file's schedules, judged as the API judges a PUT.
func Parse(data []byte, checkTarget func(*url.URL) error) ([]schedule.Schedule, error) {
	var doc document
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var (
		out  []schedule.Schedule
		errs []error
		seen = map[string]bool{}
	)
	for i, entry := range doc.Schedules {
		name, _ := entry["name"].(string)
		where := fmt.Sprintf("schedules[%d]", i)
		if name != "" {
			where += " (" + name + ")"
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("%s: the name is declared twice", where))
			continue
		}
		seen[name] = true
		body, err := json.Marshal(entry)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		sc, err := api.DecodeSchedule(body, name, checkTarget)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		sc.Source = schedule.SourceFile
		out = append(out, sc)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// Reconcile applies the file once if its content changed since the last
// success (always the first time). It reports whether it applied it.
func (r *Reconciler) Reconcile(ctx context.Context) (bool, error) {
	data, err := os.ReadFile(r.Path)
	if err != nil {
		return false, fmt.Errorf("schedules file: %w", err)
	}
	sum := sha256.Sum256(data)
	if (r.done && sum == r.applied) || sum == r.invalid {
		return false, nil
	}
	scs, err := Parse(data, r.CheckTarget)
	if err != nil {
		r.invalid = sum // refused until the content changes; store errors are retried
		return false, fmt.Errorf("schedules file %s: %w", r.Path, err)
	}
	want := make(map[string]bool, len(scs))
	for _, sc := range scs {
		want[sc.Name] = true
		if _, _, err := r.Store.PutSchedule(ctx, sc); err != nil {
			return false, fmt.Errorf("schedules file %s: put %s: %w", r.Path, sc.Name, err)
		}
	}
	deleted := 0
	after := ""
	for {
		page, err := r.Store.ListSchedules(ctx, store.ScheduleListParams{After: after, Limit: 1000})
		if err != nil {
			return false, fmt.Errorf("schedules file %s: list: %w", r.Path, err)
		}
		for _, sc := range page {
			if sc.Source != schedule.SourceFile || want[sc.Name] {
				continue
			}
			if err := r.Store.DeleteSchedule(ctx, sc.Name, schedule.SourceFile); err != nil && !errors.Is(err, store.ErrNotFound) {
				return false, fmt.Errorf("schedules file %s: delete %s: %w", r.Path, sc.Name, err)
			}
			deleted++
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].Name
	}
	r.applied, r.done = sum, true
	r.logger().Info("schedules file applied", "file.path", r.Path, "schedules", len(scs), "deleted", deleted)
	return true, nil
}

// Run reconciles at once and then every Interval until ctx ends, logging
// failures (the previous state stays in force; a store error is retried).
func (r *Reconciler) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.logger().Error("schedules file not applied", "error.message", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Reconciler) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
