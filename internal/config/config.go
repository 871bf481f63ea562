// Package config builds the one validated Config that `spool serve` runs
// with, from flags, SPOOL_* environment variables and *_FILE secrets, in
// that order of precedence. It imports nothing of Spool's but auth (for API
// key roles) and never logs or returns a secret's value.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/auth"
)

// Role selects what a `spool serve` process runs, so Kubernetes can scale
// the API and the workers apart.
type Role string

const (
	RoleAll    Role = "all"    // API, dispatcher and maintenance
	RoleAPI    Role = "api"    // HTTP API only
	RoleWorker Role = "worker" // dispatcher and maintenance (admin port only)
)

// Config is everything `spool serve` needs. Each field names its variable
// and default; secrets are Secret so they never print.
type Config struct {
	HTTPAddr  string // SPOOL_HTTP_ADDR, default ":8000": the API
	AdminAddr string // SPOOL_ADMIN_ADDR, default ":9090": /metrics and /debug/pprof/; "" disables

	DatabaseURL Secret // SPOOL_DATABASE_URL or DATABASE_URL (or _FILE); empty = embedded SQLite
	DataDir     string // SPOOL_DATA_DIR, default "./data": where the SQLite file lives
	// SQLiteSync (SPOOL_SQLITE_SYNC, --sqlite-sync) is the embedded store's
	// durability: "full" (default) fsyncs every commit, so an acknowledged
	// task survives power loss; "normal" fsyncs only at checkpoints, so it
	// survives a crash of the process but the last commits before a power
	// cut or VM reset may be lost. Unused on PostgreSQL.
	SQLiteSync string
	// Migrate applies schema migrations at start: SPOOL_MIGRATE, --migrate;
	// default true on SQLite, false on PostgreSQL (run `spool migrate` once instead).
	Migrate  bool
	MaxConns int // SPOOL_DATABASE_MAX_CONNS, default 0 = driver default

	// APIKeys from SPOOL_API_KEYS (comma-separated) or SPOOL_API_KEYS_FILE
	// (one per line); an entry may end in :read, :write or :admin (default admin).
	APIKeys        []APIKey
	InsecureNoAuth bool // --insecure-no-auth: allow no API key on a non-loopback address
	// SigningKeys (SPOOL_SIGNING_KEYS or _FILE, whsec_… keys) sign every
	// delivery, each adding its own signature, so keys rotate without a gap.
	SigningKeys []Secret
	// InsecureUnsigned (--insecure-unsigned, SPOOL_INSECURE_UNSIGNED) allows a
	// delivering process with no signing key on a non-loopback address.
	InsecureUnsigned bool
	// AllowedTargetCIDRs are exempt from the SSRF refusal (SPOOL_ALLOWED_TARGET_CIDRS, e.g. "127.0.0.0/8").
	AllowedTargetCIDRs []netip.Prefix

	Role          Role          // SPOOL_ROLE, default all
	Workers       int           // SPOOL_WORKERS, default 100: deliveries in flight per process
	LeaseDuration time.Duration // SPOOL_LEASE_DURATION, default 30s: a crashed worker's tasks are rescued after this
	PollInterval  time.Duration // SPOOL_POLL_INTERVAL, default 1s: fallback when no wake-up arrives
	// EnqueueLease (SPOOL_ENQUEUE_LEASE, default true): with role all, an
	// enqueue that finds free delivery slots in its process leases in its
	// own transaction (store.LeasesOnEnqueue).
	EnqueueLease bool
	Retention    time.Duration // SPOOL_RETENTION, default 168h: finished tasks are pruned after this
	// SchedulesFile declares schedules in YAML, reconciled at start and
	// whenever its content changes (SPOOL_SCHEDULES_FILE, default none).
	SchedulesFile string
	// IdempotencyRetention is how long an idempotency key stays reserved
	// after its first use, even once its task is pruned; a key is held as
	// long as its task is kept in any case (SPOOL_IDEMPOTENCY_RETENTION, default 24h).
	IdempotencyRetention time.Duration
	RetryMin             time.Duration // SPOOL_RETRY_MIN_BACKOFF, default 1s
	RetryMax             time.Duration // SPOOL_RETRY_MAX_BACKOFF, default 1h
	MaxBodyBytes         int64         // SPOOL_MAX_BODY_BYTES, default 1 MiB: one enqueue request
	// AttemptBodyBytes is how much of each response body an attempt's
	// record keeps (SPOOL_ATTEMPT_BODY_BYTES, default 2048, 0 keeps none,
	// at most 65536).
	AttemptBodyBytes int
	// MaxInflightBodyBytes bounds the request body bytes read and decoded at
	// once across all requests; beyond it a request waits up to a second,
	// then gets 503 with Retry-After (SPOOL_MAX_INFLIGHT_BODY_BYTES, default
	// 0 = two maximum-size batches, 2 × 10 × SPOOL_MAX_BODY_BYTES; at least
	// one batch, 10 × SPOOL_MAX_BODY_BYTES, when set).
	MaxInflightBodyBytes int64

	// DrainDelay keeps serving after readiness turns false on SIGTERM, so load
	// balancers stop sending before the listener closes (SPOOL_DRAIN_DELAY, default 5s).
	DrainDelay time.Duration
	// ShutdownTimeout bounds finishing in-flight requests and deliveries
	// before they are released for another worker (SPOOL_SHUTDOWN_TIMEOUT, default 30s).
	ShutdownTimeout time.Duration

	LogLevel string // SPOOL_LOG_LEVEL: debug, info (default), warn, error

	// UI serves the dashboard at /ui/ on the API port (SPOOL_UI, --ui, default true).
	UI bool
	// UITraceURL links a task's trace from the dashboard: a URL template in
	// which {trace_id} is replaced, e.g.
	// "https://jaeger.example.com/trace/{trace_id}" (SPOOL_UI_TRACE_URL,
	// default none).
	UITraceURL string
	// UISessionTTL is how long a dashboard sign-in lasts (SPOOL_UI_SESSION_TTL, default 12h).
	UISessionTTL time.Duration
	// UISecureCookie marks the session cookie Secure even on a plain-HTTP
	// request, for a TLS-terminating proxy in front (SPOOL_UI_SECURE_COOKIE,
	// default false; a request that arrives over TLS always gets Secure).
	UISecureCookie bool
}

// Secret is a string that never prints.
type Secret string

func (Secret) String() string               { return "[redacted]" }
func (Secret) GoString() string             { return "[redacted]" }
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Value returns the secret itself, for the one place that needs it.
func (s Secret) Value() string { return string(s) }

// APIKey is a bearer key and the role it grants.
type APIKey struct {
	Key  Secret
	Role auth.Role
}

// Embedded reports whether the config selects the embedded SQLite store.
func (c *Config) Embedded() bool { return c.DatabaseURL == "" }

// SQLitePath is the embedded database file.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "spool.db") }

// Env looks a variable up; os.LookupEnv in production, a map in tests.
type Env func(key string) (string, bool)

// Load parses args (without the command name) and env into a validated
// Config. It returns flag.ErrHelp after printing usage for -h/--help.
func Load(args []string, env Env, usage io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("spool serve", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.Usage = func() {
		fmt.Fprint(usage, `Usage: spool serve [flags]

Runs the Spool service: HTTP API, dispatcher and maintenance. Each flag can
also be set by the environment variable in brackets; flags win. Any secret
variable X can instead be read from a file named by X_FILE.

Example:
  SPOOL_API_KEYS=change-me spool serve
  spool serve --http-addr 127.0.0.1:8000     # no key needed on loopback

Flags:
`)
		fs.PrintDefaults()
	}

	var (
		c       Config
		migrate optBool
		role    = string(RoleAll)
		errs    []error
		lookup  = func(k string) string { v, _ := env(k); return v }
		has     = func(k string) bool { _, ok := env(k); return ok }
		fromEnv = func(dst *string, def string, keys ...string) {
			*dst = def
			for _, k := range keys {
				if has(k) {
					*dst = lookup(k)
					return
				}
			}
		}
		strVar = func(dst *string, name, key, def, help string) {
			fromEnv(dst, def, key)
			fs.StringVar(dst, name, *dst, help+" ["+key+"]")
		}
		durVar = func(dst *time.Duration, name, key string, def time.Duration, help string) {
			*dst = def
			if has(key) {
				d, err := time.ParseDuration(lookup(key))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %q is not a duration (e.g. 30s, 5m)", key, lookup(key)))
				}
				*dst = d
			}
			fs.DurationVar(dst, name, *dst, help+" ["+key+"]")
		}
		intVar = func(dst *int, name, key string, def int, help string) {
			*dst = def
			if has(key) {
				n, err := strconv.Atoi(lookup(key))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %q is not an integer", key, lookup(key)))
				}
				*dst = n
			}
			fs.IntVar(dst, name, *dst, help+" ["+key+"]")
		}
		boolVar = func(dst *bool, name, key, help string) {
			if has(key) {
				b, err := strconv.ParseBool(lookup(key))
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %q is not true or false", key, lookup(key)))
				}
				*dst = b
			}
			fs.BoolVar(dst, name, *dst, help+" ["+key+"]")
		}
	)

	strVar(&c.HTTPAddr, "http-addr", "SPOOL_HTTP_ADDR", ":8000", "API listen address")
	strVar(&c.AdminAddr, "admin-addr", "SPOOL_ADMIN_ADDR", ":9090", "admin listen address (/metrics, /debug/pprof/); empty disables")
	strVar(&c.DataDir, "data-dir", "SPOOL_DATA_DIR", "./data", "directory of the embedded SQLite database")
	strVar(&c.SQLiteSync, "sqlite-sync", "SPOOL_SQLITE_SYNC", "full", "embedded SQLite durability: full (every commit fsynced: survives power loss) or normal (survives a process crash; the last commits may be lost to a power cut)")
	strVar(&role, "role", "SPOOL_ROLE", string(RoleAll), "what to run: all, api or worker")
	strVar(&c.LogLevel, "log-level", "SPOOL_LOG_LEVEL", "info", "debug, info, warn or error")
	intVar(&c.Workers, "workers", "SPOOL_WORKERS", 100, "deliveries in flight at once in this process")
	intVar(&c.MaxConns, "database-max-conns", "SPOOL_DATABASE_MAX_CONNS", 0, "PostgreSQL pool size (0 = driver default)")
	durVar(&c.LeaseDuration, "lease-duration", "SPOOL_LEASE_DURATION", 30*time.Second, "how long a task lease lasts without renewal; a dead worker's tasks are rescued after it")
	durVar(&c.PollInterval, "poll-interval", "SPOOL_POLL_INTERVAL", time.Second, "how often to look for due tasks when no wake-up arrives")
	durVar(&c.Retention, "retention", "SPOOL_RETENTION", 7*24*time.Hour, "how long finished tasks are kept")
	durVar(&c.IdempotencyRetention, "idempotency-retention", "SPOOL_IDEMPOTENCY_RETENTION", 24*time.Hour,
		"how long an idempotency key stays reserved after its first use, even once its task is pruned")
	strVar(&c.SchedulesFile, "schedules-file", "SPOOL_SCHEDULES_FILE", "", "YAML file of schedules, applied at start and whenever it changes")
	durVar(&c.RetryMin, "retry-min-backoff", "SPOOL_RETRY_MIN_BACKOFF", time.Second, "delay before the second attempt (doubles each time, with jitter)")
	durVar(&c.RetryMax, "retry-max-backoff", "SPOOL_RETRY_MAX_BACKOFF", time.Hour, "longest delay between attempts")
	durVar(&c.DrainDelay, "drain-delay", "SPOOL_DRAIN_DELAY", 5*time.Second, "on SIGTERM, keep serving this long after readiness turns false")
	durVar(&c.ShutdownTimeout, "shutdown-timeout", "SPOOL_SHUTDOWN_TIMEOUT", 30*time.Second, "on SIGTERM, how long in-flight requests and deliveries may take before they are released")
	intVar(&c.AttemptBodyBytes, "attempt-body-bytes", "SPOOL_ATTEMPT_BODY_BYTES", 2048,
		"bytes of each response body kept in the task's attempt history (0 = none)")
	maxBody := int(1 << 20)
	intVar(&maxBody, "max-body-bytes", "SPOOL_MAX_BODY_BYTES", 1<<20, "largest accepted request body for one task")
	inflight := 0
	intVar(&inflight, "max-inflight-body-bytes", "SPOOL_MAX_INFLIGHT_BODY_BYTES", 0,
		"request body bytes decoded at once across all requests; more waits up to 1s, then gets 503 (0 = 2 maximum-size batches)")
	if has("SPOOL_MIGRATE") {
		if err := migrate.Set(lookup("SPOOL_MIGRATE")); err != nil {
			errs = append(errs, fmt.Errorf("SPOOL_MIGRATE: %q is not true or false", lookup("SPOOL_MIGRATE")))
		}
	}
	fs.Var(&migrate, "migrate", "apply schema migrations at start (default true on SQLite, false on PostgreSQL) [SPOOL_MIGRATE]")
	boolVar(&c.InsecureNoAuth, "insecure-no-auth", "SPOOL_INSECURE_NO_AUTH", "serve the API without authentication on a non-loopback address")
	boolVar(&c.InsecureUnsigned, "insecure-unsigned", "SPOOL_INSECURE_UNSIGNED", "deliver unsigned requests (no SPOOL_SIGNING_KEYS) from a process on a non-loopback address")
	c.EnqueueLease = true
	boolVar(&c.EnqueueLease, "enqueue-lease", "SPOOL_ENQUEUE_LEASE", "with role all, let an enqueue that finds free delivery slots lease in its own transaction (default true)")
	c.UI = true
	boolVar(&c.UI, "ui", "SPOOL_UI", "serve the dashboard at /ui/ on the API port (default true)")
	strVar(&c.UITraceURL, "ui-trace-url", "SPOOL_UI_TRACE_URL", "", "the dashboard's link to a task's trace, with {trace_id} in it, e.g. https://jaeger.example.com/trace/{trace_id}")
	durVar(&c.UISessionTTL, "ui-session-ttl", "SPOOL_UI_SESSION_TTL", 12*time.Hour, "how long a dashboard sign-in lasts")
	boolVar(&c.UISecureCookie, "ui-secure-cookie", "SPOOL_UI_SECURE_COOKIE", "mark the dashboard's session cookie Secure on plain-HTTP requests too (behind a TLS-terminating proxy)")
	var cidrs string
	fromEnv(&cidrs, "", "SPOOL_ALLOWED_TARGET_CIDRS")
	fs.StringVar(&cidrs, "allowed-target-cidrs", cidrs, "comma-separated address ranges that delivery targets may use despite the SSRF guard, e.g. 127.0.0.0/8 [SPOOL_ALLOWED_TARGET_CIDRS]")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.MaxBodyBytes = int64(maxBody)
	c.MaxInflightBodyBytes = int64(inflight)
	c.Role = Role(role)

	dbURL, err := secret(env, "SPOOL_DATABASE_URL", "DATABASE_URL")
	if err != nil {
		return nil, err
	}
	c.DatabaseURL = Secret(dbURL)
	if c.APIKeys, err = apiKeys(env); err != nil {
		return nil, err
	}
	if c.SigningKeys, err = secretList(env, "SPOOL_SIGNING_KEYS"); err != nil {
		return nil, err
	}
	if c.AllowedTargetCIDRs, err = parseCIDRs(cidrs); err != nil {
		return nil, err
	}
	c.Migrate = c.Embedded()
	if migrate.set {
		c.Migrate = migrate.v
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.Role {
	case RoleAll, RoleAPI, RoleWorker:
	default:
		bad("SPOOL_ROLE: %q is not all, api or worker", c.Role)
	}
	if c.Role != RoleWorker {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad("SPOOL_HTTP_ADDR: %q is not host:port", c.HTTPAddr)
		}
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			bad("SPOOL_ADMIN_ADDR: %q is not host:port", c.AdminAddr)
		}
	}
	if c.Workers < 1 || c.Workers > 10000 {
		bad("SPOOL_WORKERS: must be 1-10000, got %d", c.Workers)
	}
	if c.MaxConns < 0 {
		bad("SPOOL_DATABASE_MAX_CONNS: must be ≥ 0, got %d", c.MaxConns)
	}
	if c.LeaseDuration < 100*time.Millisecond {
		bad("SPOOL_LEASE_DURATION: must be at least 100ms, got %s", c.LeaseDuration)
	}
	if c.PollInterval < time.Millisecond {
		bad("SPOOL_POLL_INTERVAL: must be at least 1ms, got %s", c.PollInterval)
	}
	if c.Retention < time.Minute {
		bad("SPOOL_RETENTION: must be at least 1m, got %s", c.Retention)
	}
	if c.IdempotencyRetention < time.Minute {
		bad("SPOOL_IDEMPOTENCY_RETENTION: must be at least 1m, got %s", c.IdempotencyRetention)
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		bad("SPOOL_RETRY_MIN_BACKOFF/SPOOL_RETRY_MAX_BACKOFF: need 0 < min ≤ max, got %s and %s", c.RetryMin, c.RetryMax)
	}
	if c.DrainDelay < 0 || c.ShutdownTimeout < 0 {
		bad("SPOOL_DRAIN_DELAY and SPOOL_SHUTDOWN_TIMEOUT must not be negative")
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 64<<20 {
		bad("SPOOL_MAX_BODY_BYTES: must be 1024-67108864, got %d", c.MaxBodyBytes)
	}
	// 65536 is task.MaxAttemptBodyBytes: every attempt row may hold it.
	if c.AttemptBodyBytes < 0 || c.AttemptBodyBytes > 65536 {
		bad("SPOOL_ATTEMPT_BODY_BYTES: must be 0-65536 (0 keeps no excerpt), got %d", c.AttemptBodyBytes)
	}
	// 10 is api.BatchBodyFactor: a batch body may be ten single-task bodies.
	if batch := 10 * c.MaxBodyBytes; c.MaxInflightBodyBytes != 0 && c.MaxInflightBodyBytes < batch {
		bad("SPOOL_MAX_INFLIGHT_BODY_BYTES: must be 0 (the default) or at least one maximum-size batch body, 10 × SPOOL_MAX_BODY_BYTES = %d, got %d", batch, c.MaxInflightBodyBytes)
	}
	switch c.SQLiteSync {
	case "full", "normal":
	default:
		bad("SPOOL_SQLITE_SYNC: %q is not full or normal", c.SQLiteSync)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("SPOOL_LOG_LEVEL: %q is not debug, info, warn or error", c.LogLevel)
	}
	if u := c.DatabaseURL.Value(); u != "" && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") && !strings.Contains(u, "=") {
		// Never echo the URL: it may hold a password.
		bad("SPOOL_DATABASE_URL: not a postgres:// URL or key=value connection string")
	}
	for i, k := range c.SigningKeys {
		if !strings.HasPrefix(k.Value(), "whsec_") {
			bad("SPOOL_SIGNING_KEYS: key %d does not start with whsec_", i+1)
		}
	}
	if c.UISessionTTL < time.Minute || c.UISessionTTL > 7*24*time.Hour {
		bad("SPOOL_UI_SESSION_TTL: must be between 1m and 168h, got %s", c.UISessionTTL)
	}
	if c.UITraceURL != "" {
		u, err := url.Parse(strings.ReplaceAll(c.UITraceURL, "{trace_id}", "0"))
		switch {
		case !strings.Contains(c.UITraceURL, "{trace_id}"):
			bad("SPOOL_UI_TRACE_URL: must contain {trace_id}, e.g. https://jaeger.example.com/trace/{trace_id}")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad("SPOOL_UI_TRACE_URL: must be an http(s) URL with a host")
		}
	}
	if len(c.APIKeys) == 0 && !c.InsecureNoAuth && c.Role != RoleWorker && !Loopback(c.HTTPAddr) {
		bad("no API key configured (SPOOL_API_KEYS or SPOOL_API_KEYS_FILE) and SPOOL_HTTP_ADDR %q is not a loopback address: refusing to serve an unauthenticated API; set a key, listen on 127.0.0.1, or pass --insecure-no-auth", c.HTTPAddr)
	}
	if len(c.SigningKeys) == 0 && !c.InsecureUnsigned && c.Role != RoleAPI && !Loopback(c.deliveryAddr()) {
		bad("no signing key configured (SPOOL_SIGNING_KEYS or SPOOL_SIGNING_KEYS_FILE) and %s %q is not a loopback address: refusing to deliver unsigned requests that receivers cannot authenticate; set a whsec_ key, listen on 127.0.0.1, or pass --insecure-unsigned", c.deliveryAddrVar(), c.deliveryAddr())
	}
	return errors.Join(errs...)
}

// Unsigned reports whether deliveries go out without a signature, which
// `spool serve` says once in its log.
func (c *Config) Unsigned() bool { return len(c.SigningKeys) == 0 && c.Role != RoleAPI }

// deliveryAddr is the address that tells whether a delivering process runs
// only for its own machine: the API's, or for a worker (which serves no API)
// its admin listener.
func (c *Config) deliveryAddr() string {
	if c.Role == RoleWorker {
		return c.AdminAddr
	}
	return c.HTTPAddr
}

func (c *Config) deliveryAddrVar() string {
	if c.Role == RoleWorker {
		return "SPOOL_ADMIN_ADDR"
	}
	return "SPOOL_HTTP_ADDR"
}

// Loopback reports whether a listen address only accepts local connections.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// secret reads the first of keys that is set, directly or through KEY_FILE.
func secret(env Env, keys ...string) (string, error) {
	for _, k := range keys {
		if v, ok := env(k); ok && v != "" {
			return v, nil
		}
		if path, ok := env(k + "_FILE"); ok && path != "" {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("%s_FILE: %w", k, pathErr(err))
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", nil
}

// secretList reads KEY (comma-separated) or KEY_FILE (one per line, # comments).
func secretList(env Env, key string) ([]Secret, error) {
	var raw []string
	if v, ok := env(key); ok && v != "" {
		raw = strings.Split(v, ",")
	} else if path, ok := env(key + "_FILE"); ok && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s_FILE: %w", key, pathErr(err))
		}
		raw = strings.Split(string(b), "\n")
	}
	var out []Secret
	for _, s := range raw {
		s = strings.TrimSpace(s)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		out = append(out, Secret(s))
	}
	return out, nil
}

// apiKeys reads SPOOL_API_KEYS (or _FILE) and splits each entry into key
// and role. Errors name the variable and the entry's position, never the entry.
func apiKeys(env Env) ([]APIKey, error) {
	list, err := secretList(env, "SPOOL_API_KEYS")
	if err != nil {
		return nil, err
	}
	name := "SPOOL_API_KEYS"
	if v, _ := env(name); v == "" {
		name += "_FILE"
	}
	out := make([]APIKey, len(list))
	for i, s := range list {
		k, err := auth.ParseKey(s.Value())
		if err != nil {
			return nil, fmt.Errorf("%s: key %d: %w", name, i+1, err)
		}
		out[i] = APIKey{Key: Secret(k.Secret), Role: k.Role}
	}
	return out, nil
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("SPOOL_ALLOWED_TARGET_CIDRS: %q is not a CIDR such as 127.0.0.0/8", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// pathErr keeps the path but drops nothing secret (file contents never appear).
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot read %s: %w", pe.Path, pe.Err)
	}
	return err
}

// optBool is a bool flag that remembers whether it was set.
type optBool struct{ v, set bool }

func (b *optBool) String() string   { return strconv.FormatBool(b.v) }
func (b *optBool) IsBoolFlag() bool { return true }
func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.v, b.set = v, true
	return nil
}

// LoadDatabase reads only what `spool migrate` needs: the database URL (or
// _FILE) and the data directory.
func LoadDatabase(args []string, env Env, usage io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("spool migrate", flag.ContinueOnError)
	fs.SetOutput(usage)
	c := Config{DataDir: "./data"}
	if v, ok := env("SPOOL_DATA_DIR"); ok {
		c.DataDir = v
	}
	fs.Usage = func() {
		fmt.Fprint(usage, `Usage: spool migrate [flags]

Applies the schema migrations embedded in this binary to the database named
by SPOOL_DATABASE_URL (or DATABASE_URL, or their _FILE forms), or to the
embedded SQLite file in SPOOL_DATA_DIR when none is set. Safe to run from
several processes at once and to run again.

Example:
  SPOOL_DATABASE_URL_FILE=/run/secrets/database-url spool migrate

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the embedded SQLite database [SPOOL_DATA_DIR]")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("migrate: unexpected argument %q", fs.Arg(0))
	}
	u, err := secret(env, "SPOOL_DATABASE_URL", "DATABASE_URL")
	if err != nil {
		return nil, err
	}
	c.DatabaseURL = Secret(u)
	return &c, nil
}
