package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spoolhq/spool/internal/api"
	"github.com/spoolhq/spool/internal/auth"
	"github.com/spoolhq/spool/internal/config"
	"github.com/spoolhq/spool/internal/dispatch"
	"github.com/spoolhq/spool/internal/schedfile"
	"github.com/spoolhq/spool/internal/store"
	"github.com/spoolhq/spool/internal/store/postgres"
	"github.com/spoolhq/spool/internal/store/sqlite"
	"github.com/spoolhq/spool/internal/task"
	"github.com/spoolhq/spool/internal/telemetry"
	"github.com/spoolhq/spool/internal/ui"
	"github.com/spoolhq/spool/webhook"
)

// migratingStore is a Store whose driver can apply its schema.
type migratingStore interface {
	store.Store
	Migrate(ctx context.Context) error
}

// openStore picks the driver: PostgreSQL when a URL is configured, else the
// embedded SQLite file.
func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (migratingStore, string, error) {
	if cfg.Embedded() {
		s, err := sqlite.Open(ctx, cfg.SQLitePath(), sqlite.Options{Logger: log, Sync: sqlite.Sync(cfg.SQLiteSync)})
		if err != nil {
			return nil, "", fmt.Errorf("open SQLite store %s: %w", cfg.SQLitePath(), err)
		}
		return s, "sqlite", nil
	}
	s, err := postgres.Open(ctx, cfg.DatabaseURL.Value(), postgres.Options{MaxConns: int32(cfg.MaxConns), Logger: log})
	if err != nil {
		return nil, "", fmt.Errorf("open PostgreSQL store: %w", err)
	}
	return s, "postgres", nil
}

func migrate(ctx context.Context, args []string, env config.Env, stdout io.Writer) error {
	cfg, err := config.LoadDatabase(args, env, stdout)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(stdout, "info", "spool", buildVersion())
	st, driver, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", driver, err)
	}
	log.Info("schema up to date", "spool.store", driver)
	return nil
}

// defaultGCPercent is the garbage collector's target for spool serve when
// GOGC is not set: twice Go's default of 100. A request or a delivery makes
// short-lived garbage, and at 100 the collector took about a sixth of the
// CPU under load; at 200 single-task enqueues on SQLite went from 7,471 to
// 9,575 /s (medians of three alternating runs) for a heap that may grow to
// three times the live data instead of two. GOMEMLIMIT, which the
// Kubernetes manifests set from the container's limit, still caps it.
const defaultGCPercent = 200

// tuneGC applies defaultGCPercent unless GOGC is set (then the runtime has
// applied it already) and returns the percent in force.
func tuneGC(env config.Env) int {
	if v, ok := env("GOGC"); ok && v != "" {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(defaultGCPercent)
	return defaultGCPercent
}

// serve runs the service until ctx ends (SIGTERM/SIGINT), then shuts down
// in the order that loses nothing.
func serve(ctx context.Context, args []string, env config.Env, stdout io.Writer) error {
	cfg, err := config.Load(args, env, stdout)
	if err != nil {
		return err
	}
	gcPercent := tuneGC(env)
	metrics := telemetry.NewMetrics(buildVersion(), buildCommit())
	// A stuck stdout must never stall a request or a delivery: lines go
	// through a bounded queue and are dropped (and counted) when it is full.
	// Close is deferred first so it runs last, after every other deferred
	// step has logged, and writes out what is still queued.
	// The secret values themselves are blanked wherever they turn up in a
	// line (a key pasted into a URL path, a password inside a driver error).
	secrets := []string{telemetry.DSNPassword(cfg.DatabaseURL.Value())}
	for _, k := range cfg.APIKeys {
		secrets = append(secrets, k.Key.Value())
	}
	for _, k := range cfg.SigningKeys {
		secrets = append(secrets, k.Value())
	}
	log, logs := telemetry.NewAsyncLogger(stdout, telemetry.Options{
		Level: cfg.LogLevel, Service: "spool", Version: buildVersion(), Secrets: secrets,
		OnDrop: func(n int) { metrics.LogDropped.Add(float64(n)) },
	})
	defer logs.Close()
	// Work that must outlive the signal (the shutdown itself) uses base.
	base := context.WithoutCancel(ctx)

	// --- Tracing: OTLP when the OTEL_* variables ask for it, else the no-op
	// provider (a caller's traceparent still reaches the delivered request) ---
	tracing, err := telemetry.NewTracing(ctx, env, buildVersion(), log)
	if err != nil {
		return err
	}
	// Deferred before the store's Close, so it runs after it: the last step
	// of the shutdown (8. below), when no span can start any more.
	defer func() {
		fctx, cancel := context.WithTimeout(base, 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(fctx); err != nil {
			log.Warn("spans not exported at shutdown", "error.message", err.Error())
		}
	}()
	if tracing.Enabled() {
		log.Info("tracing on", "spool.tracing.exporter", tracing.Exporter())
	}

	// --- Store ---
	st, driver, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.Migrate {
		if err := st.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate %s: %w", driver, err)
		}
	}
	if stats := poolStats(st); stats != nil {
		metrics.RegisterPool(stats)
	}
	// Single-task enqueues that arrive together share one transaction.
	// SQLite has one writer anyway; on PostgreSQL two committers keep the
	// pipeline full without splitting the groups small.
	gc := store.GroupCommitOptions{Committers: 2}
	if driver == "sqlite" {
		gc.Committers = 1
	}
	var live store.Store = countingStore{store.GroupCommit(st, gc), metrics}

	// Every delivery is signed with every key, so a rotation can add the new
	// key before receivers know it and drop the old one after they all do.
	signingKeys := make([][]byte, len(cfg.SigningKeys))
	for i, k := range cfg.SigningKeys {
		if signingKeys[i], err = webhook.ParseKey(k.Value()); err != nil {
			return fmt.Errorf("SPOOL_SIGNING_KEYS: key %d: %w", i+1, err)
		}
	}
	if cfg.Unsigned() {
		// Said once, here: config refused this on a non-loopback address
		// unless --insecure-unsigned was given.
		log.Warn("deliveries are not signed: no SPOOL_SIGNING_KEYS configured; receivers cannot tell Spool's requests from anyone else's",
			"spool.insecure_unsigned", cfg.InsecureUnsigned)
	}
	guard := dispatch.Guard{Allowed: cfg.AllowedTargetCIDRs}

	// --- Readiness: store reachable and not shutting down ---
	var shuttingDown atomic.Bool
	ready := func(ctx context.Context) error {
		if shuttingDown.Load() {
			return errors.New("shutting down")
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := live.Ping(ctx); err != nil {
			if errors.Is(err, store.ErrNotMigrated) {
				return err // says which version it has and needs
			}
			return fmt.Errorf("store unreachable: %w", store.ErrUnavailable)
		}
		return nil
	}

	// --- Admin server: metrics, pprof, health (never on the API mux) ---
	var servers []*http.Server
	errc := make(chan error, 3)
	listen := func(name, addr string, h http.Handler) (*http.Server, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", name, err)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			BaseContext:       func(net.Listener) context.Context { return base },
		}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s server: %w", name, err)
			}
		}()
		log.Info("listening", "spool.listener", name, "server.address", ln.Addr().String())
		servers = append(servers, srv)
		return srv, nil
	}
	if cfg.AdminAddr != "" {
		if _, err := listen("admin", cfg.AdminAddr, adminMux(metrics, ready)); err != nil {
			return err
		}
	}

	// --- API ---
	var apiSrv *http.Server
	if cfg.Role != config.RoleWorker {
		keys := make([]auth.Key, len(cfg.APIKeys))
		for i, k := range cfg.APIKeys {
			keys[i] = auth.Key{Secret: k.Key.Value(), Role: k.Role}
		}
		if len(keys) == 0 {
			log.Warn("API authentication is off: no SPOOL_API_KEYS configured")
		}
		h, err := api.New(api.Config{
			Store:        live,
			Logger:       log,
			APIKeys:      keys,
			MaxBodyBytes: cfg.MaxBodyBytes,
			// 0 lets the API derive it from MaxBodyBytes.
			MaxInflightBodyBytes: cfg.MaxInflightBodyBytes,
			CheckTarget:          func(u *url.URL) error { return guard.CheckURL(u) },
			Ready:                ready,
			// Metrics outside tracing (so they time the whole request); the
			// request log inside sees the server span's trace id.
			Instrument: func(route string, h http.Handler) http.Handler {
				return metrics.Instrument(route, tracing.Instrument(route, h))
			},
			TracerProvider: tracing.TracerProvider(),
			SchedulesFile:  cfg.SchedulesFile,
			Version:        buildVersion(),
		})
		if err != nil {
			return err
		}
		if cfg.UI {
			// The dashboard shares the API's port, keys and store.
			dash, err := ui.New(ui.Config{
				Store:        live,
				Logger:       log,
				APIKeys:      keys,
				SessionTTL:   cfg.UISessionTTL,
				SecureCookie: cfg.UISecureCookie,
				TraceURL:     cfg.UITraceURL,
				CheckTarget:  func(u *url.URL) error { return guard.CheckURL(u) },
				MaxBodyBytes: cfg.MaxBodyBytes,
				Instrument: func(route string, h http.Handler) http.Handler {
					return metrics.Instrument(route, tracing.Instrument(route, h))
				},
			})
			if err != nil {
				return err
			}
			h = withDashboard(h, dash)
		}
		if apiSrv, err = listen("api", cfg.HTTPAddr, h); err != nil {
			return err
		}
	}

	// --- Dispatcher and maintenance ---
	var disp *dispatch.Dispatcher
	maintCtx, stopMaint := context.WithCancel(base)
	defer stopMaint()
	var maintDone sync.WaitGroup
	if cfg.Role != config.RoleAPI {
		owner := instanceID()
		disp = dispatch.New(dispatch.Config{
			Store:          live,
			Logger:         log,
			Metrics:        metrics,
			Client:         dispatch.NewHTTPClient(guard),
			SigningKeys:    signingKeys,
			Workers:        cfg.Workers,
			LeaseDuration:  cfg.LeaseDuration,
			PollInterval:   cfg.PollInterval,
			Backoff:        task.Backoff{Min: cfg.RetryMin, Max: cfg.RetryMax},
			UserAgent:      "spool/" + buildVersion(),
			TracerProvider: tracing.TracerProvider(),
			// One name for this process in leadership, destination
			// reports and the attempts it records.
			Replica:          owner,
			AttemptBodyBytes: cfg.AttemptBodyBytes,
		})
		if err := disp.Start(base); err != nil {
			return fmt.Errorf("start dispatcher: %w", err)
		}
		// An enqueue that finds free delivery slots here leases in its own
		// transaction and hands its tasks straight to the dispatcher.
		if le, ok := st.(store.LeasesOnEnqueue); ok && cfg.EnqueueLease {
			le.SetEnqueueLeaser(disp)
		}
		m := &dispatch.Maintainer{Store: live, Logger: log, Metrics: metrics, Owner: owner, Retention: cfg.Retention,
			IdempotencyRetention: cfg.IdempotencyRetention}
		if pg, ok := st.(*postgres.Store); ok {
			m.RefreshStats = pg.RefreshStats
		}
		maintDone.Add(1)
		go func() { defer maintDone.Done(); m.Run(maintCtx) }()
	}
	// --- Schedules file ---
	// Every replica reconciles it when its own copy changes; puts of the
	// same content are idempotent (an unchanged timing keeps its next run).
	if cfg.SchedulesFile != "" {
		data, err := os.ReadFile(cfg.SchedulesFile)
		if err != nil {
			return fmt.Errorf("SPOOL_SCHEDULES_FILE: %w", err)
		}
		checkTarget := func(u *url.URL) error { return guard.CheckURL(u) }
		if _, err := schedfile.Parse(data, checkTarget); err != nil {
			return fmt.Errorf("SPOOL_SCHEDULES_FILE %s: %w", cfg.SchedulesFile, err)
		}
		r := &schedfile.Reconciler{Store: live, Path: cfg.SchedulesFile, Logger: log, CheckTarget: checkTarget}
		maintDone.Add(1)
		go func() { defer maintDone.Done(); r.Run(maintCtx) }()
	}
	log.Info("spool started", "spool.store", driver, "spool.role", string(cfg.Role), "spool.workers", cfg.Workers, "spool.gc_percent", gcPercent,
		"spool.auth", len(cfg.APIKeys) > 0, "spool.signing", len(signingKeys) > 0)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutdown signal received")
	case runErr = <-errc:
		log.Error("server failed; shutting down", "error.message", runErr.Error())
	}

	// --- Shutdown, step by step ---
	// A second SIGTERM or SIGINT cuts it short: in-flight deliveries are
	// released at once (their attempts are not counted) and the process
	// exits. (The first signal was taken by ctx; only later ones reach this.)
	hurryCtx, hurry := context.WithCancel(base)
	defer hurry()
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			log.Warn("second signal: releasing in-flight tasks and exiting now")
			hurry()
		case <-hurryCtx.Done():
		}
	}()
	// 1. Readiness turns false so load balancers stop sending new requests.
	shuttingDown.Store(true)
	// 2. Stop leasing at once: a task taken now would only be released at
	// the timeout. Deliveries in flight go on through the drain window.
	if disp != nil {
		disp.StopLeasing()
	}
	// 3. Drain window: keep serving the API while that news propagates.
	if runErr == nil && cfg.DrainDelay > 0 {
		log.Info("draining", "event.duration", cfg.DrainDelay.Nanoseconds())
		select {
		case <-time.After(cfg.DrainDelay):
		case <-hurryCtx.Done():
		}
	}
	sctx, cancel := context.WithTimeout(hurryCtx, cfg.ShutdownTimeout)
	defer cancel()
	// 4. Stop accepting connections and finish in-flight API requests.
	if apiSrv != nil {
		if err := apiSrv.Shutdown(sctx); err != nil {
			log.Warn("API shutdown incomplete", "error.message", err.Error())
		}
	}
	// 5+6. Finish in-flight deliveries or release them; store completions.
	if disp != nil {
		disp.Stop(sctx)
	}
	stopMaint()
	maintDone.Wait()
	// The admin server goes last so metrics and probes answer throughout.
	for _, s := range servers {
		if s != apiSrv {
			_ = s.Shutdown(sctx)
		}
	}
	// 7. Close the store (deferred above).
	// 8. Export the spans still buffered (deferred above, runs after 7).
	log.Info("shutdown complete")
	return runErr
}

// adminMux serves metrics, pprof and health on the admin port.
// withDashboard sends /ui and everything under /ui/ to the dashboard and
// the rest to the API.
func withDashboard(apiH, dash http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ui" || strings.HasPrefix(r.URL.Path, ui.Prefix) {
			dash.ServeHTTP(w, r)
			return
		}
		apiH.ServeHTTP(w, r)
	})
}

func adminMux(m *telemetry.Metrics, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"status":"unavailable","detail":%q}`, err.Error())
			return
		}
		io.WriteString(w, `{"status":"ok"}`)
	})
	return mux
}

// instanceID names this process for leader election and logs.
func instanceID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
