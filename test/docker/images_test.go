//go:build docker

package docker_test

// Stand-ins for the official base images, built here because no registry
// can be reached. Each is tagged by a hash of its inputs and built only when
// that tag is missing, so a machine builds them once.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// The Debian release of the official golang:1.26-bookworm image.
const debianSuite = "bookworm"

// debianPackages go into the one rootfs the builder, PostgreSQL and Python
// stand-ins share (one debootstrap for all three): the Python stand-in needs
// pip and the FastAPI example's dependencies from Debian, since no test can
// reach PyPI.
var debianPackages = []string{"ca-certificates", "postgresql",
	"python3-pip", "python3-fastapi", "python3-uvicorn", "python3-httpx", "python3-asyncpg"}

// rootfsRecipe changes whenever trimRootfs or the import changes, so the
// base image is rebuilt.
const rootfsRecipe = "1"

//go:embed testdata/postgres/docker-entrypoint.sh
var postgresEntrypoint []byte

// standIns makes sure the three stand-in images exist, under a lock so two
// test runs on one machine never debootstrap at once.
func (x *harness) standIns(ctx context.Context) error {
	unlock, err := lockFile(ctx, filepath.Join(x.cacheDir, "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	base, err := x.baseImage(ctx)
	if err != nil {
		return fmt.Errorf("debian base image: %w", err)
	}
	if x.goImage, err = x.golangImage(ctx, base); err != nil {
		return fmt.Errorf("golang stand-in: %w", err)
	}
	// The Dockerfile's default runtime, scratch, is no image to pull: the
	// image tested is the one users build.
	x.runtimeImage = "scratch"
	if x.postgresImage, err = x.pgImage(ctx, base); err != nil {
		return fmt.Errorf("postgres stand-in: %w", err)
	}
	if x.pythonImage, err = x.pyImage(ctx, base); err != nil {
		return fmt.Errorf("python stand-in: %w", err)
	}
	logf("stand-ins: GO_IMAGE=%s RUNTIME_IMAGE=%s POSTGRES_IMAGE=%s PYTHON_IMAGE=%s", x.goImage, x.runtimeImage, x.postgresImage, x.pythonImage)
	return nil
}

func (x *harness) imageExists(ctx context.Context, tag string) bool {
	_, err := run(ctx, nil, nil, x.docker, "image", "inspect", "--format", "{{.Id}}", tag)
	return err == nil
}

// baseImage: `debootstrap --variant=minbase` of bookworm with the packages
// above, from the Debian mirror this machine's apt uses, imported as one layer.
func (x *harness) baseImage(ctx context.Context) (string, error) {
	tag := "spool-test/debian:" + debianSuite + "-" + shortHash("debootstrap", "--variant=minbase", debianSuite, strings.Join(debianPackages, ","), rootfsRecipe)
	if x.imageExists(ctx, tag) {
		return tag, nil
	}
	if os.Geteuid() != 0 {
		return "", missingTool{"the stand-in base image " + tag + " is missing and building it needs root (debootstrap)"}
	}
	mirror, err := debianMirror(debianSuite)
	if err != nil {
		return "", err
	}
	debootstrap, err := ensureDebootstrap(ctx)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(x.cacheDir, "rootfs-")
	if err != nil {
		return "", err
	}
	defer func() {
		unmountUnder(dir)
		os.RemoveAll(dir)
	}()
	logf("debootstrap %s into %s (first run on this machine: a few minutes)", debianSuite, dir)
	start := time.Now()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if _, err := run(ctx, env, nil, debootstrap, "--variant=minbase", "--include="+strings.Join(debianPackages, ","), debianSuite, dir, mirror); err != nil {
		return "", err
	}
	if err := trimRootfs(dir); err != nil {
		return "", err
	}
	tarCmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "-C", dir, "-c", ".")
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	tarCmd.Stderr = os.Stderr
	if err := tarCmd.Start(); err != nil {
		return "", fmt.Errorf("tar rootfs: %w", err)
	}
	_, importErr := run(ctx, nil, pipe, x.docker, "import",
		"--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"--change", `CMD ["bash"]`, "-", tag)
	if err := tarCmd.Wait(); err != nil && importErr == nil {
		importErr = fmt.Errorf("tar rootfs: %w", err)
	}
	if importErr != nil {
		return "", importErr
	}
	logf("built %s in %s", tag, time.Since(start).Round(time.Second))
	return tag, nil
}

// trimRootfs drops what no image needs: the package caches and lists, docs,
// and the cluster Debian's postinst creates (the stand-in makes its own in
// PGDATA, as the official image does).
func trimRootfs(dir string) error {
	for _, pattern := range []string{
		"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
		"usr/share/doc/*", "usr/share/man/*", "usr/share/info/*",
		"var/lib/postgresql/*/main", "etc/postgresql/*/main",
		"var/log/*.log", "var/log/apt/*",
	} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return fmt.Errorf("trim rootfs: %w", err)
			}
		}
	}
	return nil
}

// debianMirror reads the mirror serving suite from this machine's apt
// sources (deb822 .sources files and one-line .list files), so no host name
// is written into the project. SPOOL_TEST_DEBIAN_MIRROR overrides.
func debianMirror(suite string) (string, error) {
	if v := os.Getenv("SPOOL_TEST_DEBIAN_MIRROR"); v != "" {
		return v, nil
	}
	var files []string
	deb822, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	lists, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	files = append(append(append(files, deb822...), "/etc/apt/sources.list"), lists...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uri string
		if strings.HasSuffix(f, ".sources") {
			uri = mirrorFromDeb822(string(b), suite)
		} else {
			uri = mirrorFromList(string(b), suite)
		}
		if uri != "" {
			return uri, nil
		}
	}
	return "", missingTool{fmt.Sprintf("no apt source for Debian %s main in /etc/apt (set SPOOL_TEST_DEBIAN_MIRROR)", suite)}
}

func mirrorFromDeb822(text, suite string) string {
	for _, para := range strings.Split(text, "\n\n") {
		fields := map[string][]string{}
		for _, line := range strings.Split(para, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			fields[strings.ToLower(strings.TrimSpace(k))] = strings.Fields(v)
		}
		if slices.Contains(fields["types"], "deb") && slices.Contains(fields["suites"], suite) &&
			slices.Contains(fields["components"], "main") && len(fields["uris"]) > 0 {
			return fields["uris"][0]
		}
	}
	return ""
}

func mirrorFromList(text, suite string) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		// deb [options] uri suite component...
		if i, j := strings.Index(line, "["), strings.Index(line, "]"); i >= 0 && j > i {
			line = line[:i] + line[j+1:]
		}
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "deb" && f[2] == suite && slices.Contains(f[3:], "main") {
			return f[1]
		}
	}
	return ""
}

// ensureDebootstrap finds debootstrap, installing Debian's package when
// running as root on a machine that lacks it.
func ensureDebootstrap(ctx context.Context) (string, error) {
	if p, err := exec.LookPath("debootstrap"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/debootstrap", "/sbin/debootstrap"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if os.Geteuid() != 0 {
		return "", missingTool{"debootstrap is not installed and the tests do not run as root to install it (apt-get install debootstrap)"}
	}
	logf("installing debootstrap with apt-get")
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install := []string{"install", "-y", "-q", "--no-install-recommends", "debootstrap"}
	if _, err := run(ctx, env, nil, "apt-get", install...); err != nil {
		if _, err := run(ctx, env, nil, "apt-get", "update", "-q"); err != nil {
			return "", err
		}
		if _, err := run(ctx, env, nil, "apt-get", install...); err != nil {
			return "", err
		}
	}
	return "/usr/sbin/debootstrap", nil
}

// unmountUnder lazily unmounts anything a failed debootstrap left mounted
// inside dir (proc, sys), so removing dir never reaches the host's.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	slices.Sort(points)
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

var golangDockerfile = template.Must(template.New("").Parse(`FROM {{.Base}}
COPY go /usr/local/go
# The official image trusts Debian's CA bundle; this one trusts this
# machine's, so the build reaches the Go module proxy the way the host does.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV GOLANG_VERSION={{.Version}} GOTOOLCHAIN=local GOPATH=/go \
    PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /go/src /go/bin && chmod -R 1777 /go
WORKDIR /go
`))

// golangImage: the base rootfs plus this machine's Go toolchain, laid out
// like the official golang image (GOROOT /usr/local/go, GOPATH /go).
func (x *harness) golangImage(ctx context.Context, base string) (string, error) {
	out, err := run(ctx, nil, nil, "go", "env", "GOROOT")
	if err != nil {
		return "", err
	}
	goroot := strings.TrimSpace(out)
	verb, err := os.ReadFile(filepath.Join(goroot, "VERSION"))
	if err != nil {
		return "", err
	}
	version, _, _ := strings.Cut(string(verb), "\n")
	version = strings.TrimPrefix(strings.TrimSpace(version), "go")
	ca, err := hostCABundle()
	if err != nil {
		return "", err
	}
	var df bytes.Buffer
	if err := golangDockerfile.Execute(&df, map[string]string{"Base": base, "Version": version}); err != nil {
		return "", err
	}
	tag := "spool-test/golang:" + version + "-" + shortHash(df.String(), string(verb), string(ca))
	if x.imageExists(ctx, tag) {
		return tag, nil
	}
	logf("building %s from %s", tag, goroot)
	start := time.Now()
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeContext(pw, map[string][]byte{
			"Dockerfile":          df.Bytes(),
			"ca-certificates.crt": ca,
		}, goroot, "go"))
	}()
	if err := x.buildFromTar(ctx, tag, pr); err != nil {
		pr.CloseWithError(err)
		return "", err
	}
	logf("built %s in %s", tag, time.Since(start).Round(time.Second))
	return tag, nil
}

func hostCABundle() ([]byte, error) {
	for _, p := range []string{os.Getenv("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"} {
		if p == "" {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("no CA bundle at /etc/ssl/certs/ca-certificates.crt (install ca-certificates)")
}

var postgresDockerfile = template.Must(template.New("").Parse(`FROM {{.Base}}
# Debian's server binaries first on PATH (initdb, pg_ctl, postgres, pg_isready).
RUN set -eu; for f in /usr/lib/postgresql/*/bin/*; do ln -s "$f" /usr/local/bin/; done; \
    mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; \
    chmod 0700 /var/lib/postgresql/data; chmod 3777 /var/run/postgresql
ENV PGDATA=/var/lib/postgresql/data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
`))

// pgImage: Debian's PostgreSQL with an entry point keeping the official
// image's contract (testdata/postgres/docker-entrypoint.sh).
func (x *harness) pgImage(ctx context.Context, base string) (string, error) {
	var df bytes.Buffer
	if err := postgresDockerfile.Execute(&df, map[string]string{"Base": base}); err != nil {
		return "", err
	}
	tag := "spool-test/postgres:" + shortHash(df.String(), string(postgresEntrypoint))
	if x.imageExists(ctx, tag) {
		return tag, nil
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeContext(pw, map[string][]byte{
			"Dockerfile":           df.Bytes(),
			"docker-entrypoint.sh": postgresEntrypoint,
		}, "", ""))
	}()
	if err := x.buildFromTar(ctx, tag, pr); err != nil {
		pr.CloseWithError(err)
		return "", err
	}
	logf("built %s", tag)
	return tag, nil
}

var pythonDockerfile = template.Must(template.New("").Parse(`FROM {{.Base}}
# python:3.11-slim-bookworm has python on PATH and a pip free to install
# into it; Debian's Python is python3, and its pip refuses to touch the
# system's packages (PEP 668) unless that marker is gone.
RUN ln -s /usr/bin/python3 /usr/local/bin/python && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
# The FastAPI example's requirements are already installed from Debian, so
# its "pip install -r requirements.txt" finds each one satisfied. apt
# resolved their dependencies (Debian's FastAPI 0.92 runs on its patched
# Starlette 0.26, outside the range FastAPI's metadata names); pip must not
# resolve them again against an index no test can reach.
ENV PIP_NO_INDEX=1 PIP_NO_DEPS=1
CMD ["python3"]
`))

// pyImage: stand-in for python:3.11-slim-bookworm, with the example app's
// dependencies preinstalled from Debian (Python 3.11 is bookworm's too).
func (x *harness) pyImage(ctx context.Context, base string) (string, error) {
	var df bytes.Buffer
	if err := pythonDockerfile.Execute(&df, map[string]string{"Base": base}); err != nil {
		return "", err
	}
	tag := "spool-test/python:3.11-" + shortHash(df.String())
	if x.imageExists(ctx, tag) {
		return tag, nil
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeContext(pw, map[string][]byte{"Dockerfile": df.Bytes()}, "", ""))
	}()
	if err := x.buildFromTar(ctx, tag, pr); err != nil {
		pr.CloseWithError(err)
		return "", err
	}
	logf("built %s", tag)
	return tag, nil
}

// buildFromTar builds a context streamed as a tar on stdin.
func (x *harness) buildFromTar(ctx context.Context, tag string, context io.Reader) error {
	args := append(append([]string{}, x.build[1:]...), "-t", tag, "-")
	_, err := run(ctx, append(os.Environ(), x.buildEnv...), context, x.build[0], args...)
	return err
}

// writeContext writes a build context: the files given (Dockerfile first),
// then the tree at dir under the name prefix (when dir is not empty).
// Scripts (a #! first line) are executable.
func writeContext(w io.Writer, files map[string][]byte, dir, prefix string) error {
	tw := tar.NewWriter(w)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		mode := int64(0o644)
		if bytes.HasPrefix(files[n], []byte("#!")) {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: mode, Size: int64(len(files[n])), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := tw.Write(files[n]); err != nil {
			return err
		}
	}
	if dir != "" {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			name := filepath.ToSlash(filepath.Join(prefix, rel))
			fi, err := d.Info()
			if err != nil {
				return err
			}
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(path); err != nil {
					return err
				}
			}
			hdr, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return err
			}
			hdr.Name = name
			if fi.IsDir() {
				hdr.Name += "/"
			}
			hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				_, err = io.Copy(tw, f)
				f.Close()
				return err
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func shortHash(parts ...string) string {
	s := sha256.New()
	for _, p := range parts {
		s.Write([]byte(p))
		s.Write([]byte{0})
	}
	return hex.EncodeToString(s.Sum(nil))[:12]
}

// lockFile takes an exclusive flock on path, polling so ctx can end the wait.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	waited := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !waited {
			logf("waiting for another run building the stand-in images (%s)", path)
			waited = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
