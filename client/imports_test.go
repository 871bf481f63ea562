package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The SDK's promise: the public packages import only the standard library
// and each other, never anything under internal/ (which other modules
// cannot import) nor a third-party module.
func TestSDKImportsOnlyTheStandardLibrary(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}",
		"github.com/spoolhq/spool/client", "github.com/spoolhq/spool/client/clienttest", "github.com/spoolhq/spool/webhook").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/spoolhq/spool/client":            true,
		"github.com/spoolhq/spool/client/clienttest": true,
		"github.com/spoolhq/spool/webhook":           true,
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list named no package")
	}
	for _, p := range deps {
		if !allowed[p] {
			t.Errorf("the SDK imports %s", p)
		}
	}
}
