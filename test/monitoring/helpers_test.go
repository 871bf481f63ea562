package monitoring

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// requireEnv makes a missing Prometheus a failure instead of a skip (CI sets it).
const requireEnv = "SPOOL_TEST_REQUIRE_PROMETHEUS"

// Paths inside the repository.
const (
	rulesFile      = "deploy/monitoring/prometheus/rules/spool.rules.yml"
	rulesTestFile  = "deploy/monitoring/prometheus/rules/spool.rules.test.yml"
	promRuleFile   = "deploy/monitoring/prometheus/prometheusrule.yaml"
	promConfigFile = "deploy/monitoring/prometheus/prometheus.yml"
	dashboardFile  = "deploy/monitoring/grafana/spool.json"
	configMapFile  = "deploy/monitoring/grafana/dashboard-configmap.yaml"
	operationsDoc  = "docs/operations.md"
	runbookBase    = "https://github.com/spoolhq/spool/blob/main/docs/operations.md#"
)

// repoRoot is the module root: go test runs in the package directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tool finds a Prometheus binary (prometheus, promtool) from Debian's
// prometheus package: skipped when absent, unless CI requires it.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s not found in PATH and %s=1: install Debian's prometheus package (apt-get install prometheus)", name, requireEnv)
	}
	t.Skipf("%s not found in PATH: install Debian's prometheus package to run this test (set %s=1 to fail instead)", name, requireEnv)
	return ""
}

// alertLine and runbookLine read the rules file's alerts without a YAML
// library (the module has none, and one is not worth a dependency): the file
// keeps one `- alert:` line and one `runbook_url:` line per alert, and the
// live test cross-checks this reading against what Prometheus itself loaded.
var (
	alertLine   = regexp.MustCompile(`^\s*- alert:\s*(\S+)\s*$`)
	runbookLine = regexp.MustCompile(`^\s*runbook_url:\s*"?([^"\s]+)"?\s*$`)
)

// alertNames returns the alert names in the rules file, in order.
func alertNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, l := range strings.Split(string(readFile(t, rulesFile)), "\n") {
		if m := alertLine.FindStringSubmatch(l); m != nil {
			names = append(names, m[1])
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: no `- alert:` lines", rulesFile)
	}
	return names
}
