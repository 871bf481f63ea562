package monitoring

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestPromtoolCheckRules(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	out, err := exec.Command(promtool, "check", "rules", filepath.Join(repoRoot(t), rulesFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// The unit tests in spool.rules.test.yml drive every alert with synthetic
// series and assert exactly which alerts fire, with which labels and
// annotations, at each evaluation time.
func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool")
	out, err := exec.Command(promtool, "test", "rules", filepath.Join(repoRoot(t), rulesTestFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// promtool passes an `exp_alerts: []` case for an alert name that does not
// exist, so a typo would silently test nothing: check every case names a
// real alert, and every alert has at least one case where it fires and one
// where it must stay silent.
func TestRuleUnitTestsCoverEveryAlert(t *testing.T) {
	t.Parallel()
	names := alertNames(t)
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	firing, silent := map[string]int{}, map[string]int{}
	caseLine := regexp.MustCompile(`^\s*alertname:\s*(\S+)\s*$`)
	lines := strings.Split(string(readFile(t, rulesTestFile)), "\n")
	for i, l := range lines {
		m := caseLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		name := m[1]
		if !known[name] {
			t.Errorf("%s:%d: alertname %s is not an alert of %s", rulesTestFile, i+1, name, rulesFile)
		}
		next := ""
		for _, n := range lines[i+1:] {
			if strings.TrimSpace(n) != "" {
				next = strings.TrimSpace(n)
				break
			}
		}
		switch {
		case next == "exp_alerts: []":
			silent[name]++
		case next == "exp_alerts:":
			firing[name]++
		default:
			t.Errorf("%s:%d: alertname %s not followed by exp_alerts (got %q)", rulesTestFile, i+1, name, next)
		}
	}
	for _, n := range names {
		if firing[n] == 0 || silent[n] == 0 {
			t.Errorf("alert %s: %d firing and %d silent unit test cases; want at least one of each", n, firing[n], silent[n])
		}
	}
}

// Every alert carries for, a severity, summary, description and a
// runbook_url pointing at its own section of docs/operations.md, which
// exists.
func TestAlertsHaveRunbooks(t *testing.T) {
	t.Parallel()
	rules := strings.Split(string(readFile(t, rulesFile)), "\n")
	doc := string(readFile(t, operationsDoc))
	type block struct {
		name  string
		lines []string
	}
	var blocks []block
	for _, l := range rules {
		if m := alertLine.FindStringSubmatch(l); m != nil {
			blocks = append(blocks, block{name: m[1]})
			continue
		}
		if len(blocks) > 0 {
			blocks[len(blocks)-1].lines = append(blocks[len(blocks)-1].lines, l)
		}
	}
	if len(blocks) == 0 {
		t.Fatal("no alerts found")
	}
	required := map[string]*regexp.Regexp{
		"for":         regexp.MustCompile(`^\s*for:\s*\d+[smh]\s*$`),
		"severity":    regexp.MustCompile(`^\s*severity:\s*(warning|critical)\s*$`),
		"summary":     regexp.MustCompile(`^\s*summary:\s*\S`),
		"description": regexp.MustCompile(`^\s*description:\s*\S`),
		"runbook_url": runbookLine,
	}
	seen := map[string]bool{}
	for _, b := range blocks {
		if seen[b.name] {
			t.Errorf("alert %s defined twice", b.name)
		}
		seen[b.name] = true
		for field, re := range required {
			n := 0
			for _, l := range b.lines {
				if re.MatchString(l) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("alert %s: %d %s lines, want exactly 1", b.name, n, field)
			}
		}
		for _, l := range b.lines {
			if m := runbookLine.FindStringSubmatch(l); m != nil {
				want := runbookBase + strings.ToLower(b.name)
				if m[1] != want {
					t.Errorf("alert %s: runbook_url %s, want %s", b.name, m[1], want)
				}
			}
		}
		// GitHub's anchor for "### SpoolQueueStalled" is #spoolqueuestalled.
		if !regexp.MustCompile(`(?m)^### ` + regexp.QuoteMeta(b.name) + `\s*$`).MatchString(doc) {
			t.Errorf("alert %s: %s has no `### %s` runbook section", b.name, operationsDoc, b.name)
		}
	}
	// And no runbook for an alert that does not exist.
	alerts := section(doc, "## Alerts")
	for _, m := range regexp.MustCompile(`(?m)^### (\S+)\s*$`).FindAllStringSubmatch(alerts, -1) {
		if !seen[m[1]] {
			t.Errorf("%s has a runbook section for %s, which is not an alert in %s", operationsDoc, m[1], rulesFile)
		}
	}
}

// section returns the text under the level-2 heading h up to the next one.
func section(doc, h string) string {
	i := strings.Index(doc, "\n"+h+"\n")
	if i < 0 {
		return ""
	}
	rest := doc[i+len(h)+2:]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}
