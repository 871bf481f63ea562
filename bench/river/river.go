package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/spoolhq/spool/internal/benchstat"
	"github.com/spoolhq/spool/internal/dispatch"
	"github.com/spoolhq/spool/internal/sink"
	"github.com/spoolhq/spool/internal/testpg"
	"github.com/spoolhq/spool/webhook"
)

// River's own benchmark (cmd/river/riverbench) sets these: "these numbers
// have an outsized effect on results". Its defaults are 100ms and 1s.
const (
	tunedFetchCooldown     = 2 * time.Millisecond
	tunedFetchPollInterval = 20 * time.Millisecond
)

// postArgs is a River job that delivers like a Spool task: the target URL
// is stored with the job, as Spool stores it with the task.
type postArgs struct {
	Seq int    `json:"seq"`
	URL string `json:"url"`
}

func (postArgs) Kind() string { return "http_post" }

// postWorker makes the request Spool's dispatcher makes for a task: POST
// of the same payload with the same headers (Content-Type, User-Agent,
// Spool-Queue, Spool-Attempt, traceparent, and Standard Webhooks signature
// headers over the body) through the same SSRF-guarded client, draining
// the response so the connection is reused.
type postWorker struct {
	river.WorkerDefaults[postArgs]
	client *http.Client
	key    []byte
}

func (w *postWorker) Work(ctx context.Context, job *river.Job[postArgs]) error {
	body := []byte(`{"seq":` + strconv.Itoa(job.Args.Seq) + `}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, job.Args.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	id := strconv.FormatInt(job.ID, 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "spool")
	req.Header.Set("Spool-Queue", job.Queue)
	req.Header.Set("Spool-Attempt", strconv.Itoa(job.Attempt))
	var tp [16]byte
	copy(tp[:], id)
	req.Header.Set("Traceparent", "00-"+hex.EncodeToString(tp[:])+"-"+hex.EncodeToString(tp[:8])+"-01")
	webhook.SetHeaders(req.Header, [][]byte{w.key}, id, time.Now(), body)
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// riverPhase is one measured River scenario.
type riverPhase struct {
	Tasks       int     `json:"tasks"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"per_second"`
	SelfCPU     float64 `json:"self_cpu_seconds"` // River, its worker and the receiver (this process)
	PostgresCPU float64 `json:"postgres_cpu_seconds"`
	OtherCores  float64 `json:"other_cores"` // see phaseResult
	// PGSessions: see phaseResult.
	PGSessions   map[string]float64 `json:"pg_sessions,omitempty"`
	PGWriteXacts int64              `json:"pg_write_xacts"`
}

type riverResult struct {
	Insert       riverPhase  `json:"insert"`        // client.Insert: one job per transaction
	BatchInsert  riverPhase  `json:"batch_insert"`  // client.InsertMany
	DrainSingle  riverPhase  `json:"drain_single"`  // tuned, the jobs of Insert
	Drain        riverPhase  `json:"drain"`         // tuned, the jobs of BatchInsert
	DrainDefault *riverPhase `json:"drain_default"` // River's default fetch settings
}

func benchRiver(ctx context.Context, log *slog.Logger, pg *testpg.Server, p params, key string, run int) (*riverResult, error) {
	name := fmt.Sprintf("river_r%d", run)
	dsn, err := createDB(ctx, pg, name)
	if err != nil {
		return nil, err
	}
	defer dropDB(pg, name)
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = p.RiverPoolSize
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return nil, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("river migrate: %w", err)
	}

	keys, err := webhook.ParseKeys([]string{key})
	if err != nil {
		return nil, err
	}
	rec := benchstat.NewRecorder(sink.New(sink.Config{Keys: keys}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: rec, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with Shutdown below
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	target := "http://" + ln.Addr().String() + "/bench"

	workers := river.NewWorkers()
	river.AddWorker(workers, &postWorker{
		client: dispatch.NewHTTPClient(dispatch.Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
		key:    keys[0],
	})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	newClient := func(tuned bool) (*river.Client[pgx.Tx], error) {
		cfg := &river.Config{
			Logger:  quiet,
			Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: p.Workers}},
			Workers: workers,
		}
		if tuned {
			cfg.FetchCooldown = tunedFetchCooldown
			cfg.FetchPollInterval = tunedFetchPollInterval
		}
		return river.NewClient(driver, cfg)
	}
	inserter, err := newClient(true) // never started: it only inserts
	if err != nil {
		return nil, err
	}

	r := &riverResult{}
	var ids []int64
	measure := func(ph *riverPhase, n int, f func() (time.Duration, error)) error {
		waits := sampleWaits(ctx, pg, name)
		self0, pg0, busy0 := selfCPU(), postgresCPU(pg), machineBusy()
		start := time.Now()
		d, err := f()
		wall, busy := time.Since(start), machineBusy()-busy0
		*ph = riverPhase{Tasks: n, Seconds: d.Seconds(), PerSecond: float64(n) / d.Seconds(),
			SelfCPU: (selfCPU() - self0).Seconds(), PostgresCPU: (postgresCPU(pg) - pg0).Seconds()}
		ph.OtherCores = otherCores(busy, time.Duration((ph.SelfCPU+ph.PostgresCPU)*float64(time.Second)), wall)
		ph.PGSessions, ph.PGWriteXacts = waits.stop()
		return err
	}

	if err := measure(&r.Insert, p.InsertTasks, func() (d time.Duration, err error) {
		ids, d, err = insertSingles(ctx, inserter, p.InsertTasks, p.InsertClients, target)
		return d, err
	}); err != nil {
		return nil, fmt.Errorf("insert: %w", err)
	}
	if err := measure(&r.DrainSingle, len(ids), func() (time.Duration, error) {
		return drain(ctx, newClient, true, rec, ids)
	}); err != nil {
		return nil, fmt.Errorf("drain after single inserts: %w", err)
	}
	if err := measure(&r.BatchInsert, p.DrainTasks, func() (d time.Duration, err error) {
		ids, d, err = insertBatches(ctx, inserter, p.DrainTasks, p.Batch, p.BatchClients, target, 0)
		return d, err
	}); err != nil {
		return nil, fmt.Errorf("batch insert: %w", err)
	}
	if err := measure(&r.Drain, len(ids), func() (time.Duration, error) {
		return drain(ctx, newClient, true, rec, ids)
	}); err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	if p.RiverDefaults {
		if ids, _, err = insertBatches(ctx, inserter, p.DrainTasks, p.Batch, p.BatchClients, target, p.DrainTasks); err != nil {
			return nil, fmt.Errorf("batch insert for the default drain: %w", err)
		}
		r.DrainDefault = &riverPhase{}
		if err := measure(r.DrainDefault, len(ids), func() (time.Duration, error) {
			return drain(ctx, newClient, false, rec, ids)
		}); err != nil {
			return nil, fmt.Errorf("drain with defaults: %w", err)
		}
	}
	attrs := []any{"run", run, "insert/s", round(r.Insert.PerSecond), "batch_insert/s", round(r.BatchInsert.PerSecond),
		"drain/s", round(r.Drain.PerSecond), "drain_single/s", round(r.DrainSingle.PerSecond)}
	if r.DrainDefault != nil {
		attrs = append(attrs, "drain_default/s", round(r.DrainDefault.PerSecond))
	}
	log.Info("river", attrs...)
	return r, nil
}

// insertSingles inserts n jobs with client.Insert (each its own
// transaction) from c goroutines, and returns their ids and the time taken.
func insertSingles(ctx context.Context, cl *river.Client[pgx.Tx], n, c int, target string) ([]int64, time.Duration, error) {
	ids := make([]int64, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, c)
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				res, err := cl.Insert(ctx, postArgs{Seq: i, URL: target}, nil)
				if err != nil {
					errs[w] = err
					return
				}
				ids[i] = res.Job.ID
			}
		}()
	}
	wg.Wait()
	return ids, time.Since(start), errors.Join(errs...)
}

// insertBatches inserts n jobs with client.InsertMany, batch at a time,
// from c goroutines.
func insertBatches(ctx context.Context, cl *river.Client[pgx.Tx], n, batch, c int, target string, seq0 int) ([]int64, time.Duration, error) {
	ids := make([]int64, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, c)
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				from := int(next.Add(int64(batch)) - int64(batch))
				if from >= n {
					return
				}
				to := min(from+batch, n)
				ps := make([]river.InsertManyParams, 0, to-from)
				for i := from; i < to; i++ {
					ps = append(ps, river.InsertManyParams{Args: postArgs{Seq: seq0 + i, URL: target}})
				}
				res, err := cl.InsertMany(ctx, ps)
				if err != nil {
					errs[w] = err
					return
				}
				for i, r := range res {
					ids[from+i] = r.Job.ID
				}
			}
		}()
	}
	wg.Wait()
	return ids, time.Since(start), errors.Join(errs...)
}

// drain starts a client and returns the time from just before Start (as
// River's own benchmark times it) to the arrival of the last of ids at
// the receiver.
func drain(ctx context.Context, newClient func(bool) (*river.Client[pgx.Tx], error), tuned bool, rec *benchstat.Recorder, ids []int64) (time.Duration, error) {
	cl, err := newClient(tuned)
	if err != nil {
		return 0, err
	}
	todo := make([]string, len(ids))
	for i, id := range ids {
		todo[i] = strconv.FormatInt(id, 10)
	}
	start := time.Now()
	if err := cl.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cl.Stop(sctx) // jobs are all done; a slow stop changes nothing measured
	}()
	var last time.Time
	progress := time.Now()
	for len(todo) > 0 {
		kept := todo[:0]
		for _, id := range todo {
			at, ok := rec.Received(id)
			if !ok {
				kept = append(kept, id)
				continue
			}
			if at.After(last) {
				last = at
			}
		}
		if len(kept) < len(todo) {
			progress = time.Now()
		}
		todo = kept
		if len(todo) == 0 {
			break
		}
		if time.Since(progress) > 30*time.Second {
			return 0, fmt.Errorf("%d of %d jobs not delivered; nothing arrived for 30s", len(todo), len(ids))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return last.Sub(start), nil
}
