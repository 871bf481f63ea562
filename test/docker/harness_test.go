//go:build docker

package docker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// harness is what TestMain prepares once for every test: the tools to
// drive the engine and the images built for this run.
type harness struct {
	repo     string   // the repository root: the build context and compose.yaml's directory
	docker   string   // docker CLI for run, inspect, import, kill
	build    []string // argv prefix of a BuildKit build (docker build, or docker buildx build --load)
	buildEnv []string // environment added to that build (DOCKER_BUILDKIT=1 for a 20.10 client)
	compose  []string // argv prefix of Compose: docker compose (v2) or docker-compose (1.29)
	cacheDir string   // lock file and scratch space for the stand-in images
	runID    string   // unique per run: compose project names and the spool image tag

	goImage       string // stand-in for golang:1.26-bookworm
	runtimeImage  string // the Dockerfile's default, scratch
	postgresImage string // stand-in for postgres:17
	pythonImage   string // stand-in for python:3.11-slim-bookworm
	spoolImage    string // built from the Dockerfile for this run
	fastapiImage  string // built from examples/fastapi/Dockerfile for this run
}

// Shared by TestMain and the tests; set once before m.Run.
var (
	h        *harness
	skipMsg  string // non-empty: no engine, every test skips with this message
	setupErr error  // non-nil: the engine is there but setup failed, every test fails
)

// need returns the harness, skipping or failing the test when there is none.
func need(t *testing.T) *harness {
	t.Helper()
	if skipMsg != "" {
		t.Skip(skipMsg)
	}
	if setupErr != nil {
		t.Fatalf("docker test setup failed: %v", setupErr)
	}
	return h
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	require := os.Getenv("SPOOL_TEST_REQUIRE_DOCKER") == "1"
	probe, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	out, err := run(probe, nil, nil, "docker", "info", "--format", "{{.ServerVersion}}")
	cancel()
	if err != nil {
		reason := fmt.Sprintf("no Docker engine reachable (`docker info` failed: %s)", firstLine(out, err))
		if require {
			fmt.Fprintf(os.Stderr, "FAIL: SPOOL_TEST_REQUIRE_DOCKER=1 but %s\n", reason)
			return 1
		}
		skipMsg = reason + "; skipping the container tests (set SPOOL_TEST_REQUIRE_DOCKER=1 to fail instead)"
		return m.Run()
	}
	logf("Docker engine %s", strings.TrimSpace(out))

	// First run on a machine: debootstrap and three stand-in images (a few
	// minutes). Later runs: only the Spool image, mostly from cache.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	h, setupErr = setup(ctx)
	var missing missingTool
	switch {
	case errors.As(setupErr, &missing) && !require:
		// A machine without the tools to build the stand-ins is like one
		// without an engine: skip, unless CI demands the tests.
		skipMsg = setupErr.Error() + "; skipping the container tests (set SPOOL_TEST_REQUIRE_DOCKER=1 to fail instead)"
		setupErr = nil
		logf("%s", skipMsg)
	case setupErr != nil:
		logf("setup failed: %v", setupErr)
	}
	code := m.Run()
	if h != nil {
		h.teardown()
	}
	return code
}

// missingTool is a setup error caused by a tool this machine lacks, not by
// Spool's files.
type missingTool struct{ msg string }

func (e missingTool) Error() string { return e.msg }

func setup(ctx context.Context) (*harness, error) {
	repo, err := repoRoot()
	if err != nil {
		return nil, err
	}
	cache := os.Getenv("SPOOL_TEST_DOCKER_CACHE")
	if cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		cache = filepath.Join(dir, "spool-test-docker")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	x := &harness{repo: repo, docker: "docker", cacheDir: cache, runID: hex.EncodeToString(id[:])}
	if x.build, x.buildEnv, err = findBuildKit(ctx); err != nil {
		return nil, err
	}
	if x.compose, err = findCompose(ctx); err != nil {
		return nil, err
	}
	logf("builder: %s %s; compose: %s", strings.Join(x.buildEnv, " "), strings.Join(x.build, " "), strings.Join(x.compose, " "))

	// Old images of runs that crashed before their teardown.
	_, _ = run(ctx, nil, nil, x.docker, "image", "prune", "-a", "-f", "--filter", "label=spool.test.run", "--filter", "until=3h")

	if err := x.standIns(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := x.buildSpool(ctx); err != nil {
		return nil, err
	}
	logf("built %s in %s", x.spoolImage, time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	if err := x.buildFastAPI(ctx); err != nil {
		return x, err
	}
	logf("built %s in %s", x.fastapiImage, time.Since(start).Round(100*time.Millisecond))
	return x, nil
}

func (x *harness) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, img := range []string{x.spoolImage, x.fastapiImage} {
		if img == "" {
			continue
		}
		if _, err := run(ctx, nil, nil, x.docker, "image", "rm", img); err != nil {
			logf("teardown: %v", err)
		}
	}
}

// buildFastAPI builds examples/fastapi/Dockerfile on the Python stand-in,
// the way a user builds it on python:3.11-slim-bookworm: only the base
// image argument differs.
func (x *harness) buildFastAPI(ctx context.Context) error {
	x.fastapiImage = "spool-test/fastapi:run-" + x.runID
	args := append(append([]string{}, x.build[1:]...),
		"--progress=plain",
		"--build-arg", "PYTHON_IMAGE="+x.pythonImage,
		"--label", "spool.test.run="+x.runID,
		"-t", x.fastapiImage, filepath.Join(x.repo, "examples", "fastapi"))
	if _, err := run(ctx, append(os.Environ(), x.buildEnv...), nil, x.build[0], args...); err != nil {
		x.fastapiImage = ""
		return fmt.Errorf("build the FastAPI example's image: %w", err)
	}
	return nil
}

// buildSpool builds the repository's Dockerfile on the stand-in bases, the
// way a user builds it on the official ones: only the two base-image
// arguments differ.
func (x *harness) buildSpool(ctx context.Context) error {
	x.spoolImage = "spool-test/spool:run-" + x.runID
	commit, err := run(ctx, nil, nil, "git", "-C", x.repo, "rev-parse", "--short=12", "HEAD")
	if err != nil {
		commit = "unknown"
	}
	args := append(append([]string{}, x.build[1:]...),
		"--progress=plain",
		"--build-arg", "GO_IMAGE="+x.goImage,
		"--build-arg", "RUNTIME_IMAGE="+x.runtimeImage,
		"--build-arg", "VERSION=test-"+x.runID,
		"--build-arg", "COMMIT="+strings.TrimSpace(commit),
		"--label", "spool.test.run="+x.runID,
		"-t", x.spoolImage, x.repo)
	if _, err := run(ctx, append(os.Environ(), x.buildEnv...), nil, x.build[0], args...); err != nil {
		x.spoolImage = ""
		return fmt.Errorf("build the Spool image: %w", err)
	}
	return nil
}

// findBuildKit picks a docker client that builds with BuildKit: one with the
// buildx plugin, or a 20.10-era client whose built-in BuildKit needs only
// DOCKER_BUILDKIT=1 (a newer client without buildx refuses to). Every
// `docker` on PATH is tried; SPOOL_TEST_DOCKER_BUILD overrides the choice.
func findBuildKit(ctx context.Context) ([]string, []string, error) {
	if v := os.Getenv("SPOOL_TEST_DOCKER_BUILD"); v != "" {
		return strings.Fields(v), []string{"DOCKER_BUILDKIT=1"}, nil
	}
	clients := lookPathAll("docker")
	for _, d := range clients {
		if _, err := run(ctx, nil, nil, d, "buildx", "version"); err == nil {
			return []string{d, "buildx", "build", "--load"}, nil, nil
		}
	}
	for _, d := range clients {
		out, err := run(ctx, nil, nil, d, "version", "--format", "{{.Client.Version}}")
		major, _, _ := strings.Cut(strings.TrimSpace(out), ".")
		if n, perr := strconv.Atoi(major); err == nil && perr == nil && n < 23 {
			return []string{d, "build"}, []string{"DOCKER_BUILDKIT=1"}, nil
		}
	}
	return nil, nil, missingTool{fmt.Sprintf("no docker client on PATH (%v) can build with BuildKit, which the Dockerfile's cache mounts need: install the buildx plugin", clients)}
}

// findCompose prefers the Compose v2 plugin and falls back to docker-compose
// 1.29; SPOOL_TEST_COMPOSE (e.g. "docker-compose") overrides.
func findCompose(ctx context.Context) ([]string, error) {
	if v := os.Getenv("SPOOL_TEST_COMPOSE"); v != "" {
		return strings.Fields(v), nil
	}
	if _, err := run(ctx, nil, nil, "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}, nil
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	return nil, missingTool{"neither `docker compose` nor docker-compose is installed"}
}

// lookPathAll lists every executable called name on PATH, once per real file.
func lookPathAll(name string) []string {
	var out []string
	seen := map[string]bool{}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		out = append(out, p)
	}
	return out
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}

// run runs a command and returns its combined output; on failure the error
// carries the command and the output's tail.
func run(ctx context.Context, env []string, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		return buf.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(buf.String(), 4000))
	}
	return buf.String(), nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func firstLine(out string, err error) string {
	s := strings.TrimSpace(out)
	if s == "" {
		s = err.Error()
	}
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "docker_test %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// dockerOut runs docker with the test's deadline and fails the test on error.
func (x *harness) dockerOut(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := run(ctx, nil, nil, x.docker, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// --- the Spool HTTP API, through a published port on 127.0.0.1 ---

type apiClient struct {
	base string // http://127.0.0.1:port
	key  string
	c    *http.Client
}

func newAPI(hostPort, key string) *apiClient {
	return &apiClient{base: "http://" + hostPort, key: key, c: &http.Client{Timeout: 10 * time.Second}}
}

// call sends a JSON request and decodes a JSON answer into out (if not nil).
// It returns the status, or an error when no answer came.
func (a *apiClient) call(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode %q: %w", method, path, tail(string(b), 300), err)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, tail(string(b), 500))
	}
	return resp.StatusCode, nil
}

// poll is a GET for a polling loop: false on any error, which the loop's
// deadline turns into a failure if it lasts.
func (a *apiClient) poll(path string, out any) bool {
	_, err := a.call(http.MethodGet, path, nil, out)
	return err == nil
}

// must is call that fails the test on any error.
func (a *apiClient) must(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	code, err := a.call(method, path, body, out)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

type apiTask struct {
	ID         string `json:"id"`
	Queue      string `json:"queue"`
	State      string `json:"state"`
	Attempt    int    `json:"attempt"`
	LastStatus int    `json:"last_status"`
}

type apiQueue struct {
	Name        string         `json:"name"`
	Paused      bool           `json:"paused"`
	Concurrency int            `json:"concurrency"`
	RateLimit   float64        `json:"rate_limit"`
	MaxAttempts int            `json:"max_attempts"`
	Timeout     string         `json:"timeout"`
	Counts      map[string]int `json:"counts"`
}

type sinkStats struct {
	Received      int64 `json:"received"`
	Unique        int64 `json:"unique"`
	Duplicates    int64 `json:"duplicates"`
	BadSignatures int64 `json:"bad_signatures"`
}

// eventually polls cond every 100ms until it returns true or timeout passes;
// then it fails with what describe says.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, describe())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
