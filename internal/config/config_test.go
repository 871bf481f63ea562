package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/auth"
)

// testSigningKey is a valid whsec_ key (24 bytes of "x"); envOf supplies
// it unless the test sets SPOOL_SIGNING_KEYS itself (to "" for none), so
// tests about other settings are not refused for delivering unsigned.
const testSigningKey = "whsec_eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4"

func envOf(m map[string]string) Env {
	return func(k string) (string, bool) {
		v, ok := m[k]
		if _, set := m["SPOOL_SIGNING_KEYS"]; k == "SPOOL_SIGNING_KEYS" && !set {
			return testSigningKey, true
		}
		return v, ok
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k1"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8000" || c.AdminAddr != ":9090" || c.DataDir != "./data" || c.Role != RoleAll {
		t.Errorf("defaults: %+v", c)
	}
	if !c.Embedded() || !c.Migrate {
		t.Errorf("embedded mode should migrate by default: embedded=%v migrate=%v", c.Embedded(), c.Migrate)
	}
	if c.Retention != 7*24*time.Hour || c.LeaseDuration != 30*time.Second || c.Workers != 100 || c.IdempotencyRetention != 24*time.Hour {
		t.Errorf("durations: %+v", c)
	}
	if c.MaxBodyBytes != 1<<20 || c.MaxInflightBodyBytes != 0 {
		t.Errorf("body limits: %d, %d in flight; want 1 MiB and 0 (derived by the API)", c.MaxBodyBytes, c.MaxInflightBodyBytes)
	}
}

// TestUIDefaults: the dashboard is on, with a 12h sign-in, no trace link
// and a Secure cookie only over TLS, unless told otherwise.
func TestUIDefaults(t *testing.T) {
	c, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.UI || c.UISessionTTL != 12*time.Hour || c.UITraceURL != "" || c.UISecureCookie {
		t.Errorf("UI defaults: ui=%v ttl=%s trace=%q secure=%v", c.UI, c.UISessionTTL, c.UITraceURL, c.UISecureCookie)
	}
	c, err = Load([]string{"--ui=false"}, envOf(map[string]string{"SPOOL_API_KEYS": "k",
		"SPOOL_UI_TRACE_URL": "https://tempo.example.com/explore?trace={trace_id}", "SPOOL_UI_SESSION_TTL": "1h",
		"SPOOL_UI_SECURE_COOKIE": "true"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.UI || c.UISessionTTL != time.Hour || c.UITraceURL != "https://tempo.example.com/explore?trace={trace_id}" || !c.UISecureCookie {
		t.Errorf("UI settings: ui=%v ttl=%s trace=%q secure=%v", c.UI, c.UISessionTTL, c.UITraceURL, c.UISecureCookie)
	}
}

func TestIdempotencyRetention(t *testing.T) {
	c, err := Load([]string{"--idempotency-retention", "48h"}, envOf(map[string]string{"SPOOL_API_KEYS": "k"}), io.Discard)
	if err != nil || c.IdempotencyRetention != 48*time.Hour {
		t.Fatalf("--idempotency-retention 48h: %v, %v", c.IdempotencyRetention, err)
	}
	for _, v := range []string{"soon", "30s", "-1h"} {
		_, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k", "SPOOL_IDEMPOTENCY_RETENTION": v}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "SPOOL_IDEMPOTENCY_RETENTION") {
			t.Errorf("SPOOL_IDEMPOTENCY_RETENTION=%s: want an error naming it, got %v", v, err)
		}
	}
}

func TestFlagsBeatEnv(t *testing.T) {
	c, err := Load([]string{"--http-addr", "127.0.0.1:9000", "--workers", "7", "--migrate=false"},
		envOf(map[string]string{"SPOOL_HTTP_ADDR": "127.0.0.1:1", "SPOOL_WORKERS": "3"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9000" || c.Workers != 7 || c.Migrate {
		t.Errorf("got %+v", c)
	}
}

func TestPostgresDoesNotMigrateByDefault(t *testing.T) {
	c, err := Load(nil, envOf(map[string]string{"DATABASE_URL": "postgres://u:hunter2@db/spool", "SPOOL_API_KEYS": "k"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Embedded() || c.Migrate {
		t.Errorf("embedded=%v migrate=%v", c.Embedded(), c.Migrate)
	}
	if s := fmt.Sprintf("%v %+v %#v", c.DatabaseURL, c, c); strings.Contains(s, "hunter2") {
		t.Errorf("secret printed: %s", s)
	}
}

func TestFileSecrets(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.WriteFile(keys, []byte("# comment\nalpha\n\nbeta\n"), 0o600)
	db := filepath.Join(dir, "db")
	os.WriteFile(db, []byte("postgres://x@y/z\n"), 0o600)
	c, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS_FILE": keys, "SPOOL_DATABASE_URL_FILE": db}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.APIKeys) != 2 || c.APIKeys[0].Key.Value() != "alpha" || c.APIKeys[1].Key.Value() != "beta" {
		t.Errorf("keys: %d", len(c.APIKeys))
	}
	if c.DatabaseURL.Value() != "postgres://x@y/z" {
		t.Errorf("db url not read from file")
	}
	_, err = Load(nil, envOf(map[string]string{"SPOOL_API_KEYS_FILE": filepath.Join(dir, "missing")}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SPOOL_API_KEYS_FILE") {
		t.Errorf("missing file: %v", err)
	}
}

func TestAPIKeyRoles(t *testing.T) {
	c, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "old, r1:read,w1:write,a1:admin"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []APIKey{{"old", auth.Admin}, {"r1", auth.Read}, {"w1", auth.Write}, {"a1", auth.Admin}}
	if !slices.Equal(c.APIKeys, want) {
		t.Errorf("keys %v, want %v", c.APIKeys, want)
	}
	file := filepath.Join(t.TempDir(), "keys")
	os.WriteFile(file, []byte("# readers\nr2:read\nsecretpw:reader\n"), 0o600)
	for name, env := range map[string]map[string]string{
		"SPOOL_API_KEYS":      {"SPOOL_API_KEYS": "ok:read,secretpw:reader"},
		"SPOOL_API_KEYS_FILE": {"SPOOL_API_KEYS_FILE": file},
	} {
		_, err := Load(nil, envOf(env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), name+": key 2") || !strings.Contains(err.Error(), ":read, :write or :admin") {
			t.Errorf("%s: want an error naming the variable and key 2, got %v", name, err)
		}
		if err != nil && (strings.Contains(err.Error(), "secretpw") || strings.Contains(err.Error(), "reader")) {
			t.Errorf("%s: error shows the entry: %v", name, err)
		}
	}
}

func TestRefusesUnauthenticatedPublicListen(t *testing.T) {
	_, err := Load(nil, envOf(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--insecure-no-auth") {
		t.Fatalf("want refusal naming --insecure-no-auth, got %v", err)
	}
	for _, args := range [][]string{{"--insecure-no-auth"}, {"--http-addr", "127.0.0.1:8000"}, {"--http-addr", "[::1]:8000"}, {"--http-addr", "localhost:8000"}, {"--role", "worker"}} {
		if _, err := Load(args, envOf(nil), io.Discard); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

func TestRefusesUnsignedPublicListen(t *testing.T) {
	none := map[string]string{"SPOOL_API_KEYS": "k", "SPOOL_SIGNING_KEYS": ""}
	for _, args := range [][]string{nil, {"--role", "worker"}, {"--role", "worker", "--admin-addr", ""}} {
		_, err := Load(args, envOf(none), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--insecure-unsigned") || !strings.Contains(err.Error(), "SPOOL_SIGNING_KEYS") {
			t.Errorf("%v: want a refusal naming SPOOL_SIGNING_KEYS and --insecure-unsigned, got %v", args, err)
		}
	}
	for _, args := range [][]string{
		{"--insecure-unsigned"},
		{"--http-addr", "127.0.0.1:8000"},
		{"--role", "api"}, // the API signs nothing
		{"--role", "worker", "--admin-addr", "127.0.0.1:9090"},
	} {
		c, err := Load(args, envOf(none), io.Discard)
		if err != nil {
			t.Errorf("%v: %v", args, err)
			continue
		}
		if unsigned := c.Role != RoleAPI; c.Unsigned() != unsigned {
			t.Errorf("%v: Unsigned() = %v", args, c.Unsigned())
		}
	}
	c, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k", "SPOOL_SIGNING_KEYS": "", "SPOOL_INSECURE_UNSIGNED": "true"}), io.Discard)
	if err != nil || !c.InsecureUnsigned {
		t.Errorf("SPOOL_INSECURE_UNSIGNED=true: %v", err)
	}
	if _, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k", "SPOOL_INSECURE_UNSIGNED": "yes please"}), io.Discard); err == nil || !strings.Contains(err.Error(), "SPOOL_INSECURE_UNSIGNED") {
		t.Errorf("bad SPOOL_INSECURE_UNSIGNED: %v", err)
	}
	c, err = Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k"}), io.Discard)
	if err != nil || c.Unsigned() {
		t.Errorf("with a signing key: Unsigned()=%v, %v", c != nil && c.Unsigned(), err)
	}
}

// TestEnqueueLease: on by default; the variable and the flag turn it off.
func TestEnqueueLease(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want bool
	}{
		{nil, map[string]string{}, true},
		{nil, map[string]string{"SPOOL_ENQUEUE_LEASE": "false"}, false},
		{[]string{"--enqueue-lease=false"}, map[string]string{}, false},
		{[]string{"--enqueue-lease=true"}, map[string]string{"SPOOL_ENQUEUE_LEASE": "false"}, true},
	} {
		tc.env["SPOOL_API_KEYS"] = "k"
		c, err := Load(tc.args, envOf(tc.env), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.EnqueueLease != tc.want {
			t.Errorf("args %v, env %v: EnqueueLease = %v, want %v", tc.args, tc.env, c.EnqueueLease, tc.want)
		}
	}
}

func TestInvalidValuesNameTheVariable(t *testing.T) {
	cases := map[string]map[string]string{
		"SPOOL_WORKERS":              {"SPOOL_WORKERS": "many"},
		"SPOOL_LEASE_DURATION":       {"SPOOL_LEASE_DURATION": "forever"},
		"SPOOL_ROLE":                 {"SPOOL_ROLE": "boss"},
		"SPOOL_ALLOWED_TARGET_CIDRS": {"SPOOL_ALLOWED_TARGET_CIDRS": "10.0.0.0/99"},
		"SPOOL_SIGNING_KEYS":         {"SPOOL_SIGNING_KEYS": "notakey"},
		"SPOOL_LOG_LEVEL":            {"SPOOL_LOG_LEVEL": "loud"},
		"SPOOL_DATABASE_URL":         {"SPOOL_DATABASE_URL": "mysql:secretpw"},
		"SPOOL_MIGRATE":              {"SPOOL_MIGRATE": "maybe"},
		// Less than one maximum-size batch (10 × 1 MiB) could never admit one.
		"SPOOL_MAX_INFLIGHT_BODY_BYTES": {"SPOOL_MAX_INFLIGHT_BODY_BYTES": "1048576"},
		"SPOOL_SQLITE_SYNC":             {"SPOOL_SQLITE_SYNC": "off"},
		"SPOOL_UI":                      {"SPOOL_UI": "perhaps"},
		"SPOOL_UI_SESSION_TTL":          {"SPOOL_UI_SESSION_TTL": "10s"},
		"SPOOL_UI_TRACE_URL":            {"SPOOL_UI_TRACE_URL": "https://jaeger.example.com/trace/"},
		"SPOOL_UI_SECURE_COOKIE":        {"SPOOL_UI_SECURE_COOKIE": "yes please"},
		"SPOOL_ATTEMPT_BODY_BYTES":      {"SPOOL_ATTEMPT_BODY_BYTES": "65537"},
		"SPOOL_ENQUEUE_LEASE":           {"SPOOL_ENQUEUE_LEASE": "sometimes"},
	}
	for name, env := range cases {
		env["SPOOL_API_KEYS"] = "k"
		_, err := Load(nil, envOf(env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: want an error naming it, got %v", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%s: error leaks the value: %v", name, err)
		}
	}
}

// TestSQLiteSync: full by default (an acknowledged task survives power
// loss), normal on request, and the flag wins over the variable.
func TestSQLiteSync(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{}, nil, "full"},
		{map[string]string{"SPOOL_SQLITE_SYNC": "normal"}, nil, "normal"},
		{map[string]string{"SPOOL_SQLITE_SYNC": "full"}, nil, "full"},
		{map[string]string{"SPOOL_SQLITE_SYNC": "normal"}, []string{"--sqlite-sync", "full"}, "full"},
	} {
		tc.env["SPOOL_API_KEYS"] = "k"
		c, err := Load(tc.args, envOf(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.env, tc.args, err)
		}
		if c.SQLiteSync != tc.want {
			t.Errorf("%v %v: SQLiteSync %q, want %q", tc.env, tc.args, c.SQLiteSync, tc.want)
		}
	}
}

func TestCIDRs(t *testing.T) {
	c, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k", "SPOOL_ALLOWED_TARGET_CIDRS": "127.0.0.0/8, ::1"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.AllowedTargetCIDRs) != 2 || c.AllowedTargetCIDRs[1].Bits() != 128 {
		t.Errorf("cidrs %v", c.AllowedTargetCIDRs)
	}
}

func TestHelp(t *testing.T) {
	var b strings.Builder
	_, err := Load([]string{"--help"}, envOf(nil), &b)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(b.String(), "SPOOL_HTTP_ADDR") {
		t.Errorf("err=%v usage=%q", err, b.String())
	}
}

func TestAttemptBodyBytes(t *testing.T) {
	for env, want := range map[string]int{"": 2048, "0": 0, "65536": 65536, "100": 100} {
		m := map[string]string{"SPOOL_API_KEYS": "k"}
		if env != "" {
			m["SPOOL_ATTEMPT_BODY_BYTES"] = env
		}
		c, err := Load(nil, envOf(m), io.Discard)
		if err != nil || c.AttemptBodyBytes != want {
			t.Errorf("SPOOL_ATTEMPT_BODY_BYTES=%q: %v, %v; want %d", env, c, err, want)
		}
	}
	for _, bad := range []string{"-1", "65537", "lots"} {
		_, err := Load(nil, envOf(map[string]string{"SPOOL_API_KEYS": "k", "SPOOL_ATTEMPT_BODY_BYTES": bad}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "SPOOL_ATTEMPT_BODY_BYTES") {
			t.Errorf("SPOOL_ATTEMPT_BODY_BYTES=%q: error %v, want one naming the variable", bad, err)
		}
	}
}
