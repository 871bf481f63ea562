// Package testpg starts a real, throwaway PostgreSQL cluster for tests: no
// system service, no Docker, no mocks. It runs initdb into a temporary
// directory and then the postgres server on a free 127.0.0.1 port, tuned for
// speed (fsync, full_page_writes and synchronous_commit off), and hands out
// one fresh database per test.
//
// Binaries are found through `pg_config --bindir`, then
// /usr/lib/postgresql/<newest>/bin (Debian's layout), then PATH. Debian's
// `postgresql` package provides all of them.
//
// Running as root: initdb refuses to run as root, so when the effective uid
// is 0 the binaries run as the `postgres` user (or `nobody` if there is no
// `postgres` user) through SysProcAttr.Credential, and the temporary
// directory is chowned to that user. Root is what containers and CI jobs
// usually are, so this keeps `go test ./...` working there without sudo.
//
// The server is started directly (`postgres -D …`) rather than through
// `pg_ctl start`: pg_ctl daemonizes the postmaster, so a test binary killed
// by `go test -timeout` would leave it running forever. A direct child gets a
// parent-death signal (SIGQUIT, immediate shutdown) instead, and Stop can
// wait for it to exit.
//
// Typical use, with one cluster per test binary:
//
//	func TestMain(m *testing.M) { testpg.Main(m) }
//
//	func TestX(t *testing.T) {
//		dsn := testpg.Shared(t).CreateDB(t)
//		…
//	}
//
// Set SPOOL_TEST_REQUIRE_PG=1 (CI does) to turn the "binaries missing" skip
// into a failure, so a misconfigured runner cannot pass by skipping.
package testpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv names the environment variable that makes a missing PostgreSQL
// a test failure instead of a skip.
const RequireEnv = "SPOOL_TEST_REQUIRE_PG"

// startTimeout bounds how long the server may take to accept connections.
const startTimeout = 60 * time.Second

// ErrNoBinaries reports that initdb or postgres could not be found.
var ErrNoBinaries = errors.New("testpg: PostgreSQL binaries not found")

// Server is one throwaway PostgreSQL cluster. Its methods are safe for
// concurrent use.
type Server struct {
	dir     string // temp root; removed by Close
	dataDir string
	sockDir string
	logPath string
	port    int
	bindir  string
	cred    *syscall.Credential // nil unless running as root

	mu     sync.Mutex
	cmd    *exec.Cmd     // the running postmaster, nil when stopped
	exited chan struct{} // closed when cmd has been waited for
	closed bool

	dbSeq   atomic.Int64
	version int // server_version_num, read at first start
}

// Start creates a new cluster in a temporary directory and starts it. Call
// Close when done (Stop keeps the data for Restart).
func Start() (*Server, error) {
	bindir, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bindir: bindir}
	sweepStale()
	if os.Geteuid() == 0 {
		cred, err := unprivilegedCredential()
		if err != nil {
			return nil, err
		}
		s.cred = cred
	}
	if err := s.init(); err != nil {
		_ = os.RemoveAll(s.dir)
		return nil, err
	}
	// Another process may grab the port between probing and binding; a
	// few attempts with fresh ports make that race harmless.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			_ = os.RemoveAll(s.dir)
			return nil, err
		}
		s.port = port
		err = s.start()
		if err == nil {
			return s, nil
		}
		if attempt == 2 {
			_ = os.RemoveAll(s.dir)
			return nil, err
		}
	}
}

// FindBinDir returns the directory holding initdb and postgres, or an error
// wrapping ErrNoBinaries that names what is missing.
func FindBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" && has(dir) {
			return dir, nil
		}
	}
	// Debian installs each major version side by side; prefer the newest.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		return "", fmt.Errorf("%w: no initdb via pg_config --bindir, /usr/lib/postgresql/*/bin or PATH (install Debian's postgresql package)", ErrNoBinaries)
	}
	// initdb is often a symlink into the real bindir, where postgres lives.
	if real, err := filepath.EvalSymlinks(initdb); err == nil && has(filepath.Dir(real)) {
		return filepath.Dir(real), nil
	}
	if has(filepath.Dir(initdb)) {
		return filepath.Dir(initdb), nil
	}
	return "", fmt.Errorf("%w: found %s but no postgres binary beside it", ErrNoBinaries, initdb)
}

func versionOf(bindir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return v
}

// unprivilegedCredential picks the user to run PostgreSQL as when we are root.
func unprivilegedCredential() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("testpg: running as root, and initdb refuses root, but there is neither a 'postgres' nor a 'nobody' user to run it as; create one (useradd -r postgres) or run the tests as a normal user")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testpg: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// init creates the temp dir and runs initdb.
func (s *Server) init() error {
	base := os.TempDir()
	if s.cred != nil && !worldSearchable(base) {
		// The unprivileged user must be able to reach its data directory.
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "spool-testpg-")
	if err != nil {
		return fmt.Errorf("testpg: temp dir: %w", err)
	}
	s.dir = dir
	s.dataDir = filepath.Join(dir, "data")
	s.sockDir = filepath.Join(dir, "sock")
	s.logPath = filepath.Join(dir, "postgres.log")
	if err := os.Mkdir(s.sockDir, 0o700); err != nil {
		return fmt.Errorf("testpg: socket dir: %w", err)
	}
	if s.cred != nil {
		for _, p := range []string{dir, s.sockDir} {
			if err := os.Chown(p, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return fmt.Errorf("testpg: chown %s: %w", p, err)
			}
		}
	}
	cmd := exec.Command(filepath.Join(s.bindir, "initdb"),
		"-D", s.dataDir, "-U", "postgres", "--auth=trust", "--no-sync",
		"--encoding=UTF8", "--locale=C")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testpg: initdb: %w\n%s", err, tail(out, 4000))
	}
	// Settings go in postgresql.conf (last one wins) so Restart reuses them.
	conf := strings.Join([]string{
		"",
		"# testpg: a throwaway cluster tuned for speed, not durability",
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + s.sockDir + "'",
		"fsync = off",
		"full_page_writes = off",
		"synchronous_commit = off",
		"max_connections = 300",
		"shared_buffers = 64MB",
		"max_wal_size = 1GB",
		"checkpoint_timeout = 30min",
		"log_min_messages = warning",
		"log_min_error_statement = panic",
		"timezone = 'UTC'",
		"",
	}, "\n")
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("testpg: open postgresql.conf: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("testpg: write postgresql.conf: %w", err)
	}
	return nil
}

// sweepStale removes clusters left behind by test binaries that were killed
// (their postmaster died with them, but Close never ran): directories older
// than an hour whose postmaster is not running.
func sweepStale() {
	for _, base := range []string{os.TempDir(), "/tmp"} {
		dirs, _ := filepath.Glob(filepath.Join(base, "spool-testpg-*"))
		for _, dir := range dirs {
			fi, err := os.Stat(dir)
			if err != nil || time.Since(fi.ModTime()) < time.Hour {
				continue
			}
			if pidAlive(filepath.Join(dir, "data", "postmaster.pid")) {
				continue
			}
			_ = os.RemoveAll(dir)
		}
	}
}

func pidAlive(pidfile string) bool {
	b, err := os.ReadFile(pidfile)
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

func worldSearchable(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.Mode().Perm()&0o001 != 0
}

// start launches the postmaster on s.port and waits until it accepts
// connections. The caller holds no lock; start takes s.mu.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("testpg: server closed")
	}
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("testpg: log file: %w", err)
	}
	cmd := exec.Command(filepath.Join(s.bindir, "postgres"),
		"-D", s.dataDir, "-p", strconv.Itoa(s.port))
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: s.cred,
		// If the test binary dies (timeout panic, kill), take the server down
		// with it instead of leaving an orphan postmaster.
		Pdeathsig: syscall.SIGQUIT,
		// Own process group: a Ctrl-C aimed at `go test` reaches us, and we
		// stop the server in order, rather than racing it.
		Setpgid: true,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("testpg: start postgres: %w", err)
	}
	logf.Close() // the child holds its own copy
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		connCtx, connCancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(connCtx, s.DSN("postgres"))
		connCancel()
		if err == nil {
			if s.version == 0 {
				_ = conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&s.version)
			}
			_ = conn.Close(ctx)
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testpg: postgres exited during start (%v)\n%s", cmd.ProcessState, s.logTail())
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			<-exited
			return fmt.Errorf("testpg: postgres did not accept connections within %v: %w\n%s", startTimeout, err, s.logTail())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Port is the TCP port the server listens on (stable across Restart).
func (s *Server) Port() int { return s.port }

// Dir is the temporary directory holding the data directory and the log.
func (s *Server) Dir() string { return s.dir }

// LogPath is the file the server's output goes to.
func (s *Server) LogPath() string { return s.logPath }

// DSN returns a connection URL for database dbname over TCP.
func (s *Server) DSN(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, dbname)
}

// CreateDB creates a fresh, uniquely named database, returns its DSN and
// drops it (forcibly, disconnecting stragglers) when tb finishes.
func (s *Server) CreateDB(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t_%d_%d", os.Getpid(), s.dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create := "CREATE DATABASE " + name
	if s.version >= 150000 {
		// FILE_COPY clones template1 several times faster than the default
		// WAL_LOG on a cluster without fsync (~30ms vs ~55ms in parallel).
		create += " STRATEGY FILE_COPY"
	}
	if err := s.exec(ctx, create); err != nil {
		tb.Fatalf("testpg: create database: %v\n%s", err, s.logTail())
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.mu.Lock()
		running := s.cmd != nil
		s.mu.Unlock()
		if !running {
			return // a fault test stopped the server; Close removes it all
		}
		if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("testpg: drop database %s: %v", name, err)
		}
	})
	return s.DSN(name)
}

func (s *Server) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Stop shuts the server down ("fast" mode: sessions are terminated with
// SQLSTATE 57P01) and keeps its data, so Restart can bring it back.
func (s *Server) Stop() error { return s.stop(syscall.SIGINT) }

// Kill stops the server the way a crash would ("immediate" mode: no
// shutdown checkpoint, crash recovery on Restart).
func (s *Server) Kill() error { return s.stop(syscall.SIGQUIT) }

func (s *Server) stop(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	cmd, exited := s.cmd, s.exited
	s.cmd, s.exited = nil, nil
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("testpg: signal postgres: %w", err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("testpg: postgres did not stop within 30s; killed\n%s", s.logTail())
	}
}

// Restart starts the server again on the same port and data directory
// (stopping it first if it runs). Data committed before survives.
func (s *Server) Restart() error {
	if err := s.Stop(); err != nil {
		return err
	}
	return s.start()
}

// Close stops the server and removes its directory. It is idempotent.
func (s *Server) Close() error {
	err := s.Stop()
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return err
	}
	if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
		err = fmt.Errorf("testpg: remove %s: %w", s.dir, rerr)
	}
	return err
}

// LogTail returns the last few kilobytes of the server's log, for error
// messages.
func (s *Server) LogTail() string { return s.logTail() }

func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no server log: " + err.Error() + ")"
	}
	return "--- postgres log (tail) ---\n" + tail(b, 4000)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// shared is the process-wide server behind Shared. It is the one piece of
// package state: a test binary wants exactly one cluster however many
// packages' tests ask for it, and Main stops it at exit.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Shared returns the process-wide server, starting it on first use. When
// the PostgreSQL binaries are missing it skips tb (or fails it when
// SPOOL_TEST_REQUIRE_PG is set); any other start failure fails tb. Use Main
// in TestMain so the server stops when the tests end.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() { shared.srv, shared.err = Start() })
	if err := shared.err; err != nil {
		if errors.Is(err, ErrNoBinaries) && os.Getenv(RequireEnv) == "" {
			tb.Skipf("skipping: %v (set %s=1 to fail instead)", err, RequireEnv)
		}
		tb.Fatalf("testpg: %v", err)
	}
	return shared.srv
}

// Main runs the tests and then closes the shared server, if one was
// started, before exiting with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	// A no-op Do orders this read after any start in the tests.
	shared.once.Do(func() {})
	if srv := shared.srv; srv != nil {
		if err := srv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}
