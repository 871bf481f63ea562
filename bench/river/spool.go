package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spoolhq/spool/internal/benchstat"
	"github.com/spoolhq/spool/internal/testpg"
)

const benchAPIKey = "bench-api-key"

type spoolEnv struct {
	bin        string
	pg         *testpg.Server
	store      string // postgres or sqlite
	key        string // signing key
	work       string
	run        int
	profileDir string // "" = no profiles
	db         string // set by benchSpool on PostgreSQL
}

// benchOut is the JSON `spool bench --output json` prints (internal/cli).
type benchOut struct {
	Enqueue struct {
		Tasks          int               `json:"tasks"`
		Requests       int               `json:"requests"`
		Errors         int               `json:"errors"`
		Seconds        float64           `json:"seconds"`
		PerSecond      float64           `json:"per_second"`
		RequestLatency benchstat.Latency `json:"request_latency"`
	} `json:"enqueue"`
	Delivery *struct {
		Tasks      int                `json:"tasks"`
		Duplicates int64              `json:"duplicates"`
		Seconds    float64            `json:"seconds"`
		PerSecond  float64            `json:"per_second"`
		Latency    *benchstat.Latency `json:"latency"`
	} `json:"delivery"`
}

// phaseResult is one `spool bench` invocation and the CPU each process
// used meanwhile.
type phaseResult struct {
	Args        []string `json:"args"`
	Bench       benchOut `json:"bench"`
	ServeCPU    float64  `json:"serve_cpu_seconds"`
	PostgresCPU float64  `json:"postgres_cpu_seconds"`
	ClientCPU   float64  `json:"client_cpu_seconds"` // spool bench: enqueue clients and the receiver
	Seconds     float64  `json:"wall_seconds"`
	// OtherCores is the average number of cores other processes (other
	// work on the machine) kept busy during the phase.
	OtherCores float64 `json:"other_cores"`
	// PGSessions is, by state and wait event, the average number of the
	// database's sessions in it during the phase (PostgreSQL store only).
	PGSessions map[string]float64 `json:"pg_sessions,omitempty"`
	// PGWriteXacts is how many write transactions the phase committed.
	PGWriteXacts int64 `json:"pg_write_xacts,omitempty"`
}

type spoolResult struct {
	Store          string      `json:"store"`
	IdleRSSMB      float64     `json:"idle_rss_mb"`       // 3s after start, before any load
	IdleRSSAfterMB float64     `json:"idle_rss_after_mb"` // 3s after the last scenario
	PeakRSSMB      float64     `json:"peak_rss_mb"`
	Single         phaseResult `json:"single"`  // single-task enqueues, queue paused, then drained
	Batch          phaseResult `json:"batch"`   // batched enqueues, queue paused, then drained
	Latency        phaseResult `json:"latency"` // fixed rate, delivering while enqueueing

	SingleEnqueuePerSec float64           `json:"single_enqueue_per_second"`
	BatchEnqueuePerSec  float64           `json:"batch_enqueue_per_second"`
	DrainPerSec         float64           `json:"drain_per_second"`
	DrainSinglePerSec   float64           `json:"drain_after_single_per_second"`
	LatencyRatePerSec   float64           `json:"latency_achieved_per_second"`
	LatencyMS           benchstat.Latency `json:"latency_ms"`
}

// serveProc is a running `spool serve`.
type serveProc struct {
	pid        int
	api, admin string // host:port
	stop       func() // SIGTERM, then wait (SIGKILL after 45s); drops its database
}

// startServe migrates (PostgreSQL) and starts `spool serve` on e's store
// and waits until it is ready. On PostgreSQL it sets e.db to the fresh
// database it created.
func startServe(ctx context.Context, e *spoolEnv, dbName string) (_ *serveProc, err error) {
	var cleanup []func()
	stop := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	api, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(),
		"SPOOL_HTTP_ADDR="+api, "SPOOL_ADMIN_ADDR="+admin,
		"SPOOL_API_KEYS="+benchAPIKey, "SPOOL_SIGNING_KEYS="+e.key,
		"SPOOL_ALLOWED_TARGET_CIDRS=127.0.0.0/8", "DATABASE_URL=",
	)
	logPath := filepath.Join(e.work, fmt.Sprintf("serve-%s-%s.log", e.store, dbName))
	if e.store == "postgres" {
		e.db = dbName
		dsn, err := createDB(ctx, e.pg, dbName)
		if err != nil {
			return nil, err
		}
		cleanup = append(cleanup, func() { dropDB(e.pg, dbName) })
		env = append(env, "SPOOL_DATABASE_URL="+dsn)
		mig := exec.CommandContext(ctx, e.bin, "migrate")
		mig.Env = env
		if out, err := mig.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("spool migrate: %v\n%s", err, out)
		}
	} else {
		dir := filepath.Join(e.work, "sqlite-"+dbName)
		cleanup = append(cleanup, func() { os.RemoveAll(dir) })
		env = append(env, "SPOOL_DATABASE_URL=", "SPOOL_DATA_DIR="+dir)
	}

	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { logf.Close() })
	serve := exec.Command(e.bin, "serve")
	serve.Env = env
	serve.Stdout, serve.Stderr = logf, logf
	if err := serve.Start(); err != nil {
		return nil, fmt.Errorf("start serve: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	cleanup = append(cleanup, func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(45 * time.Second):
			_ = serve.Process.Kill()
			<-exited
		}
	})
	if err := waitReady(ctx, "http://"+api+"/readyz", exited, logPath); err != nil {
		return nil, err
	}
	return &serveProc{pid: serve.Process.Pid, api: api, admin: admin, stop: stop}, nil
}

func benchSpool(ctx context.Context, log *slog.Logger, e spoolEnv, p params) (*spoolResult, error) {
	sp, err := startServe(ctx, &e, fmt.Sprintf("spool_r%d", e.run))
	if err != nil {
		return nil, err
	}
	defer sp.stop()
	pid, api, admin := sp.pid, sp.api, sp.admin

	r := &spoolResult{Store: e.store}
	time.Sleep(3 * time.Second)
	r.IdleRSSMB, _ = memory(pid)

	sb := spoolBench{bin: e.bin, server: "http://" + api, admin: "http://" + admin, key: e.key, pid: pid, pg: e.pg, db: e.db, log: log}
	if e.profileDir != "" {
		sb.profile = func(name string) string { return filepath.Join(e.profileDir, e.store+"-"+name+".pprof") }
	}
	if r.Single, err = sb.run(ctx, "single", "--tasks", strconv.Itoa(p.InsertTasks), "--concurrency", strconv.Itoa(p.InsertClients), "--drain", "--queue", "single"); err != nil {
		return nil, err
	}
	if r.Batch, err = sb.run(ctx, "batch", "--tasks", strconv.Itoa(p.DrainTasks), "--batch", strconv.Itoa(p.Batch),
		"--concurrency", strconv.Itoa(p.BatchClients), "--drain", "--queue", "batch"); err != nil {
		return nil, err
	}
	if r.Latency, err = sb.run(ctx, "latency", "--tasks", strconv.Itoa(p.LatencyTasks), "--rate", strconv.FormatFloat(p.LatencyRate, 'f', -1, 64),
		"--concurrency", "20", "--queue", "latency"); err != nil {
		return nil, err
	}
	time.Sleep(3 * time.Second)
	r.IdleRSSAfterMB, r.PeakRSSMB = memory(pid)

	r.SingleEnqueuePerSec = r.Single.Bench.Enqueue.PerSecond
	r.BatchEnqueuePerSec = r.Batch.Bench.Enqueue.PerSecond
	r.DrainPerSec = r.Batch.Bench.Delivery.PerSecond
	r.DrainSinglePerSec = r.Single.Bench.Delivery.PerSecond
	r.LatencyRatePerSec = r.Latency.Bench.Enqueue.PerSecond
	if l := r.Latency.Bench.Delivery.Latency; l != nil {
		r.LatencyMS = *l
	}
	log.Info("spool", "store", e.store, "run", e.run,
		"single_enqueue/s", round(r.SingleEnqueuePerSec), "batch_enqueue/s", round(r.BatchEnqueuePerSec),
		"drain/s", round(r.DrainPerSec), "p99_ms", r.LatencyMS.P99MS, "idle_rss_mb", r.IdleRSSMB)
	return r, nil
}

func round(v float64) int { return int(v + 0.5) }

func waitReady(ctx context.Context, url string, exited <-chan error, logPath string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("spool serve exited: %v\n%s", err, b)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("spool serve not ready within 30s")
		}
	}
}

type spoolBench struct {
	bin, server, admin, key string
	pid                     int
	pg                      *testpg.Server
	db                      string // "" on SQLite: no session sampling
	log                     *slog.Logger
	profile                 func(phase string) string // nil = no profiles
	profileSeconds          int                       // 0 = 5
}

// run runs one `spool bench` and measures the CPU every process used.
func (s spoolBench) run(ctx context.Context, phase string, args ...string) (phaseResult, error) {
	args = append([]string{"bench", "--output", "json", "--no-progress"}, args...)
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Env = append(os.Environ(), "SPOOL_SERVER="+s.server, "SPOOL_API_KEY="+benchAPIKey, "SPOOL_SIGNING_KEYS="+s.key)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb

	var profDone chan struct{}
	if s.profile != nil {
		profDone = make(chan struct{})
		go func() {
			defer close(profDone)
			secs := s.profileSeconds
			if secs <= 0 {
				secs = 5
			}
			if err := saveProfile(s.admin+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), s.profile(phase)); err != nil {
				s.log.Warn("profile", "phase", phase, "error", err)
			}
		}()
	}
	var waits *waitSampler
	if s.db != "" {
		waits = sampleWaits(ctx, s.pg, s.db)
	}
	serve0, pg0, busy0 := cpuOf(s.pid), postgresCPU(s.pg), machineBusy()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	busy := machineBusy() - busy0
	res := phaseResult{
		Args:        args[1:],
		ServeCPU:    (cpuOf(s.pid) - serve0).Seconds(),
		PostgresCPU: (postgresCPU(s.pg) - pg0).Seconds(),
		Seconds:     wall.Seconds(),
	}
	if waits != nil {
		res.PGSessions, res.PGWriteXacts = waits.stop()
	}
	if cmd.ProcessState != nil {
		res.ClientCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	ours := time.Duration((res.ServeCPU + res.PostgresCPU + res.ClientCPU) * float64(time.Second))
	res.OtherCores = otherCores(busy, ours, wall)
	if profDone != nil {
		<-profDone
	}
	if err != nil {
		return res, fmt.Errorf("spool %v: %v\n%s", args, err, errb.String())
	}
	if err := json.Unmarshal(out.Bytes(), &res.Bench); err != nil {
		return res, fmt.Errorf("spool %v: output: %w", args, err)
	}
	if res.Bench.Delivery == nil || res.Bench.Delivery.Tasks != res.Bench.Enqueue.Tasks {
		return res, fmt.Errorf("spool %v: not every task was delivered", args)
	}
	return res, nil
}

func saveProfile(url, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
