package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/spoolhq/spool/internal/dispatch"
	"github.com/spoolhq/spool/webhook"
)

// The cost scenario runs River in a process of its own, so its CPU can be
// read from /proc exactly as spool serve's is: the River client inserting
// one job per transaction at the rate (what an application embedding River
// does) and working them (fetch, the signed HTTP POST, completion), with
// River's maintenance services. The receiver stays in the parent, as
// `spool bench`'s receiver stays out of spool serve. The open-loop pacer
// that releases the inserts lives in this process too: a timer and a
// channel send per job, next to an INSERT and its round trips.
//
// The parent and the child talk in JSON lines: the child says
// {"ready":true} once its client has started, then answers each command on
// stdin with one line on stdout.

// childEnv names the environment variable that turns the program into the
// River child; its value is the childConfig as JSON.
const childEnv = "SPOOL_BENCH_RIVER_CHILD"

type childConfig struct {
	DSN     string `json:"dsn"`
	Key     string `json:"key"` // signing key, as SPOOL_SIGNING_KEYS
	Workers int    `json:"workers"`
	Pool    int32  `json:"pool"`
	Tuned   bool   `json:"tuned"` // River's benchmark fetch settings, else its defaults
}

type childCmd struct {
	Cmd         string  `json:"cmd"` // run, report, stop
	Rate        float64 `json:"rate,omitempty"`
	Tasks       int     `json:"tasks,omitempty"`
	Concurrency int     `json:"concurrency,omitempty"`
	Target      string  `json:"target,omitempty"`
	// Profile, on run, is where to write a CPU profile of this process
	// from the start of the run to the next report (the measured phase).
	Profile string `json:"profile,omitempty"`
}

// childRun answers "run" once every insert has returned.
type childRun struct {
	Inserted   int     `json:"inserted"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"` // first insert's start to last insert's end
}

// childReport answers "report": the jobs inserted since the last report
// with the start of each insert (enqueue→delivery latency is measured
// from there, as `spool bench` measures it from the start of the enqueue
// request), and the pool's cumulative counters.
type childReport struct {
	IDs          []int64 `json:"ids"`
	BeginNS      []int64 `json:"begin_ns"`
	PoolAcquires int64   `json:"pool_acquires"`
	PoolNewConns int64   `json:"pool_new_conns"`
}

func riverChild(spec string) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		return fmt.Errorf("%s: %w", childEnv, err)
	}
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return err
	}
	pcfg.MaxConns = cfg.Pool
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	keys, err := webhook.ParseKeys([]string{cfg.Key})
	if err != nil {
		return err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &postWorker{
		client: dispatch.NewHTTPClient(dispatch.Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
		key:    keys[0],
	})
	rc := &river.Config{
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.Workers}},
		Workers: workers,
	}
	if cfg.Tuned {
		rc.FetchCooldown = tunedFetchCooldown
		rc.FetchPollInterval = tunedFetchPollInterval
	}
	client, err := river.NewClient(riverpgxv5.New(pool), rc)
	if err != nil {
		return err
	}
	if err := client.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = client.Stop(sctx)
	}()

	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string]bool{"ready": true}); err != nil {
		return err
	}
	var ids, begins []int64
	var prof *os.File
	stopProfile := func() error {
		if prof == nil {
			return nil
		}
		pprof.StopCPUProfile()
		err := prof.Close()
		prof = nil
		return err
	}
	defer stopProfile()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var c childCmd
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			return fmt.Errorf("command %q: %w", in.Text(), err)
		}
		switch c.Cmd {
		case "run":
			if c.Profile != "" {
				if prof, err = os.Create(c.Profile); err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(prof); err != nil {
					return err
				}
			}
			res, is, bs := paceInserts(ctx, client, c)
			ids, begins = append(ids, is...), append(begins, bs...)
			if err := out.Encode(res); err != nil {
				return err
			}
		case "report":
			if err := stopProfile(); err != nil {
				return err
			}
			st := pool.Stat()
			if err := out.Encode(childReport{IDs: ids, BeginNS: begins, PoolAcquires: st.AcquireCount(), PoolNewConns: st.NewConnsCount()}); err != nil {
				return err
			}
			ids, begins = nil, nil
		case "stop":
			return nil
		default:
			return fmt.Errorf("unknown command %q", c.Cmd)
		}
	}
	if err := in.Err(); err != nil {
		return err
	}
	return errors.New("stdin closed without stop")
}

// paceInserts inserts c.Tasks jobs, one per transaction, job j released at
// start + j/rate (open loop, as `spool bench --rate` releases requests)
// to c.Concurrency inserting goroutines.
func paceInserts(ctx context.Context, cl *river.Client[pgx.Tx], c childCmd) (childRun, []int64, []int64) {
	jobs := make(chan int)
	go func() {
		defer close(jobs)
		t0 := time.Now()
		interval := time.Duration(float64(time.Second) / c.Rate)
		for j := range c.Tasks {
			if wait := time.Until(t0.Add(time.Duration(j) * interval)); wait > 0 {
				time.Sleep(wait)
			}
			jobs <- j
		}
	}()
	ids, begins := make([]int64, c.Tasks), make([]int64, c.Tasks)
	var (
		mu          sync.Mutex
		res         childRun
		first, last time.Time
		wg          sync.WaitGroup
	)
	for range max(c.Concurrency, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				begin := time.Now()
				r, err := cl.Insert(ctx, postArgs{Seq: j, URL: c.Target}, nil)
				end := time.Now()
				mu.Lock()
				if first.IsZero() || begin.Before(first) {
					first = begin
				}
				if end.After(last) {
					last = end
				}
				if err != nil {
					res.Errors++
					if res.FirstError == "" {
						res.FirstError = err.Error()
					}
				} else {
					ids[j], begins[j] = r.Job.ID, begin.UnixNano()
					res.Inserted++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Seconds = last.Sub(first).Seconds()
	// Drop the failed ones (id 0) so the parent waits only for real jobs.
	kept, keptB := ids[:0], begins[:0]
	for i, id := range ids {
		if id != 0 {
			kept, keptB = append(kept, id), append(keptB, begins[i])
		}
	}
	return res, kept, keptB
}
