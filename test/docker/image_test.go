//go:build docker

package docker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxImageBytes is the size budget of the image (decimal MB, as `docker
// images` prints it).
const maxImageBytes = 28_000_000

// TestImageSize holds the image users build (the Dockerfile's defaults:
// scratch, CA certificates, passwd and group, the binary, the data
// directory) to its budget and prints its size.
func TestImageSize(t *testing.T) {
	x := need(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	size, err := strconv.ParseInt(x.dockerOut(t, ctx, "image", "inspect", "--format", "{{.Size}}", x.spoolImage), 10, 64)
	if err != nil {
		t.Fatalf("image size: %v", err)
	}
	t.Logf("image size: %.2f MB (%d bytes, runtime %s)", float64(size)/1e6, size, x.runtimeImage)
	if size > maxImageBytes {
		t.Fatalf("image is %.2f MB, over the %.0f MB budget", float64(size)/1e6, maxImageBytes/1e6)
	}
}

// The image itself: its metadata, and a container of it on a
// read-only root filesystem serving /readyz and turning healthy.
func TestImage(t *testing.T) {
	x := need(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var img struct {
		Config struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			Env          []string
			ExposedPorts map[string]struct{}
			Volumes      map[string]struct{}
			Labels       map[string]string
			Healthcheck  struct{ Test []string }
		}
	}
	if err := json.Unmarshal([]byte(x.dockerOut(t, ctx, "image", "inspect", "--format", "{{json .}}", x.spoolImage)), &img); err != nil {
		t.Fatal(err)
	}
	c := img.Config
	if c.User != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532", c.User)
	}
	if strings.Join(c.Entrypoint, " ") != "/spool" || strings.Join(c.Cmd, " ") != "serve" {
		t.Errorf("ENTRYPOINT %q CMD %q, want [/spool] [serve]", c.Entrypoint, c.Cmd)
	}
	if strings.Join(c.Healthcheck.Test, " ") != "CMD /spool healthcheck" {
		t.Errorf("HEALTHCHECK %q, want exec form of /spool healthcheck", c.Healthcheck.Test)
	}
	for _, p := range []string{"8000/tcp", "9090/tcp"} {
		if _, ok := c.ExposedPorts[p]; !ok {
			t.Errorf("port %s not exposed: %v", p, c.ExposedPorts)
		}
	}
	if _, ok := c.Volumes["/var/lib/spool"]; !ok {
		t.Errorf("no VOLUME /var/lib/spool: %v", c.Volumes)
	}
	if !slices.Contains(c.Env, "SPOOL_DATA_DIR=/var/lib/spool") {
		t.Errorf("SPOOL_DATA_DIR not set: %v", c.Env)
	}
	for _, l := range []string{"title", "source", "version", "revision", "description"} {
		if c.Labels["org.opencontainers.image."+l] == "" {
			t.Errorf("label org.opencontainers.image.%s missing: %v", l, c.Labels)
		}
	}
	if v := c.Labels["org.opencontainers.image.version"]; v != "test-"+x.runID {
		t.Errorf("version label %q, want the VERSION build arg", v)
	}
	if out := x.dockerOut(t, ctx, "run", "--rm", x.spoolImage, "version"); !strings.Contains(out, "test-"+x.runID) {
		t.Errorf("spool version = %q: -ldflags did not set the version", out)
	}

	// No shell, so a container reports its user only from the host's view.
	name := "spool-test-image-" + x.runID
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = run(ctx, nil, nil, x.docker, "rm", "-f", "-v", name)
	})
	x.dockerOut(t, ctx, "run", "-d", "--name", name,
		"--read-only", "-p", "127.0.0.1::8000",
		"-e", "SPOOL_API_KEYS=image-test-key",
		// Without a signing key serve refuses the container's :8000 (a test
		// key: 24 bytes of "x").
		"-e", "SPOOL_SIGNING_KEYS=whsec_eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4",
		// The image's 10s interval, shortened so the test need not wait it out.
		"--health-interval", "1s", "--health-start-period", "0s",
		x.spoolImage)
	addr := x.dockerOut(t, ctx, "port", name, "8000/tcp")
	addr, _, _ = strings.Cut(addr, "\n")
	api := newAPI(addr, "image-test-key")

	eventually(t, 30*time.Second, func() bool {
		code, _ := api.call(http.MethodGet, "/readyz", nil, nil)
		return code == http.StatusOK
	}, func() string {
		out, _ := run(ctx, nil, nil, x.docker, "logs", "--tail", "20", name)
		return "GET /readyz never answered 200; logs:\n" + out
	})
	// The SQLite file lives on the volume: a write proves the read-only
	// root filesystem is no obstacle.
	var q apiQueue
	api.must(t, http.MethodPatch, "/v1/queues/img", map[string]any{"concurrency": 3, "paused": true}, &q)
	api.must(t, http.MethodGet, "/v1/queues/img", nil, &q)
	if q.Concurrency != 3 || !q.Paused {
		t.Errorf("queue settings not stored: %+v", q)
	}

	top := x.dockerOut(t, ctx, "top", name, "-eo", "pid,uid,gid,args")
	if !strings.Contains(top, "65532") || !strings.Contains(top, "/spool serve") {
		t.Errorf("process not running as 65532:\n%s", top)
	}
	for _, line := range strings.Split(top, "\n")[1:] {
		if f := strings.Fields(line); len(f) >= 3 && (f[1] != "65532" || f[2] != "65532") {
			t.Errorf("a process runs as uid %s gid %s: %s", f[1], f[2], line)
		}
	}

	var health string
	eventually(t, 30*time.Second, func() bool {
		health, _ = run(ctx, nil, nil, x.docker, "inspect", "--format", "{{.State.Health.Status}}", name)
		return strings.TrimSpace(health) == "healthy"
	}, func() string {
		out, _ := run(ctx, nil, nil, x.docker, "inspect", "--format", "{{json .State.Health}}", name)
		return "HEALTHCHECK never healthy: " + out
	})
}

// TestFastAPIImage: examples/fastapi's image, built on the Python
// stand-in, runs as 65532 and carries no configuration of its own: without
// DATABASE_URL it refuses to start, naming the variable (no URL, key or
// password was baked in). Compose runs it for real (TestCompose).
func TestFastAPIImage(t *testing.T) {
	x := need(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var img struct {
		Config struct {
			User        string
			Cmd         []string
			Env         []string
			Healthcheck struct{ Test []string }
		}
	}
	if err := json.Unmarshal([]byte(x.dockerOut(t, ctx, "image", "inspect", "--format", "{{json .}}", x.fastapiImage)), &img); err != nil {
		t.Fatal(err)
	}
	c := img.Config
	if c.User != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532", c.User)
	}
	if len(c.Cmd) < 3 || strings.Join(c.Cmd[:3], " ") != "python -m uvicorn" {
		t.Errorf("CMD %q, want the exec form of python -m uvicorn", c.Cmd)
	}
	if len(c.Healthcheck.Test) == 0 || c.Healthcheck.Test[0] != "CMD" {
		t.Errorf("HEALTHCHECK %q, want an exec-form check", c.Healthcheck.Test)
	}
	for _, e := range c.Env {
		name, _, _ := strings.Cut(e, "=")
		if strings.Contains(name, "DATABASE") || strings.Contains(name, "KEY") || strings.Contains(name, "PASSWORD") || strings.Contains(name, "SECRET") {
			t.Errorf("the image sets %s", name)
		}
	}
	if uid := x.dockerOut(t, ctx, "run", "--rm", "--read-only", x.fastapiImage, "python", "-c", "import os; print(os.getuid(), os.getgid())"); uid != "65532 65532" {
		t.Errorf("the app's user is %q, want 65532 65532", uid)
	}
	out, err := run(ctx, nil, nil, x.docker, "run", "--rm", "--read-only", x.fastapiImage)
	if err == nil || !strings.Contains(out, "DATABASE_URL") {
		t.Errorf("started without DATABASE_URL (err %v):\n%s", err, tail(out, 2000))
	}
}
