// Package spooltest builds the real spool binary and runs it for tests that
// drive it from outside (end-to-end, browser): one build per test binary,
// processes that are killed when their test ends and whose output is shown
// when it fails. It imports nothing of Spool's.
package spooltest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// Build compiles github.com/spoolhq/spool/cmd/spool into dir and returns
// the binary's path. Call it from TestMain.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "spool")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/spoolhq/spool/cmd/spool")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if _, file, _, ok := runtime.Caller(0); ok {
		cmd.Dir = filepath.Dir(file) // inside the module, wherever the test runs
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build spool: %v\n%s", err, out)
	}
	return bin, nil
}

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is a started process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *buffer
	done chan struct{}
	err  error
}

// Start runs bin with args and env (added to the test's environment). The
// process is killed when t ends; its output is logged if t failed.
func Start(t testing.TB, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &Proc{Name: name, cmd: cmd, out: &buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s output (tail) ---\n%s", name, p.Tail(4000))
		}
	})
	return p
}

// Tail is the last n bytes of the process's output.
func (p *Proc) Tail(n int) string {
	s := p.out.String()
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// WaitHTTP waits until url answers 200, failing t if p exits first or the
// timeout passes.
func (p *Proc) WaitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited before %s answered: %v\n%s", p.Name, url, p.err, p.Tail(4000))
		default:
		}
		if r, err := http.Get(url); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %s did not answer 200 within %s\n%s", p.Name, url, timeout, p.Tail(4000))
}

type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
