package logging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/testpg"
)

// spoolBin is the real binary, built once for the package.
var spoolBin string

func TestMain(m *testing.M) {
	dir := filepath.Join(os.TempDir(), "spool-logging-bin")
	_ = os.MkdirAll(dir, 0o755)
	// Binaries of killed runs are swept after an hour.
	if old, _ := filepath.Glob(filepath.Join(dir, "spool-*")); len(old) > 0 {
		for _, f := range old {
			if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.Remove(f)
			}
		}
	}
	spoolBin = filepath.Join(dir, fmt.Sprintf("spool-%d", os.Getpid()))
	build := exec.Command("go", "build", "-o", spoolBin, "../../cmd/spool")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build spool: %v\n%s", err, out)
		os.Exit(1)
	}
	testpg.Main(m) // exits; the binary is swept above next time
}
