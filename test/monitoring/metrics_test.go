package monitoring

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const telemetryDir = "internal/telemetry"

// declaredRE finds the metric names Spool declares: collectors' Opts
// (Name: "spool_…") and the pool collector's descriptors (NewDesc("spool_…").
var declaredRE = regexp.MustCompile(`(?:\bName:\s*|\bNewDesc\()"(spool_[a-z0-9_]+)"`)

// exportedMetrics reads the spool_* names declared in internal/telemetry,
// without building or running anything (the live test checks the scrape).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), telemetryDir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range declaredRE.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatalf("no spool_* metric declared in %s: has the declaration changed shape?", telemetryDir)
	}
	return names
}

// exported reports whether a name in a query is a declared metric or one
// of a histogram's series.
func exported(declared map[string]bool, name string) bool {
	if declared[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && declared[base] {
			return true
		}
	}
	return false
}

// spoolNames lists the spool_* names in text, skipping matcher values.
func spoolNames(text string) []string {
	var out []string
	for _, m := range metricRE.FindAllString(stringRE.ReplaceAllString(text, `""`), -1) {
		if strings.HasPrefix(m, "spool_") && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// Every spool_* metric the dashboard's queries and variables and the
// alerting rules name is one Spool declares: a query on a misspelt or
// removed metric returns nothing rather than failing. This holds without
// a build; the live test checks the same against a real scrape.
func TestQueriesNameExportedMetrics(t *testing.T) {
	t.Parallel()
	declared := exportedMetrics(t)
	d := loadDashboard(t)
	for _, p := range queryPanels(d) {
		for _, tg := range p.Targets {
			for _, m := range spoolNames(tg.Expr) {
				if !exported(declared, m) {
					t.Errorf("panel %q target %s: metric %s is not declared in %s", p.Title, tg.RefID, m, telemetryDir)
				}
			}
		}
	}
	for _, v := range d.Templating.List {
		// label_values({__name__=~"a|b"}, label) names metrics inside a
		// matcher value: read those too.
		for _, m := range regexp.MustCompile(`spool_[a-z0-9_]+`).FindAllString(v.Definition, -1) {
			if !exported(declared, m) {
				t.Errorf("variable $%s: metric %s is not declared in %s", v.Name, m, telemetryDir)
			}
		}
	}
	var rules strings.Builder
	for _, l := range strings.Split(string(readFile(t, rulesFile)), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			rules.WriteString(l + "\n")
		}
	}
	for _, m := range spoolNames(rules.String()) {
		if !exported(declared, m) {
			t.Errorf("%s: metric %s is not declared in %s", rulesFile, m, telemetryDir)
		}
	}
}

// Every declared spool_* metric has a row in docs/operations.md's metric
// tables.
func TestMetricsDocumented(t *testing.T) {
	t.Parallel()
	doc := section(string(readFile(t, operationsDoc)), "## Metrics")
	for m := range exportedMetrics(t) {
		if !strings.Contains(doc, "| `"+m+"` |") {
			t.Errorf("metric %s has no row in the tables of %s, section Metrics", m, operationsDoc)
		}
	}
}

// The Destinations row shows every spool_destination_* metric, and each of
// its queries follows $destination.
func TestDashboardDestinationsRow(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	row := rowPanels(d, "Destinations")
	if len(row) == 0 {
		t.Fatal(`no panels under a row titled "Destinations"`)
	}
	shown := map[string]bool{}
	for _, p := range row {
		for _, tg := range p.Targets {
			for _, m := range spoolNames(tg.Expr) {
				shown[m] = true
			}
			if !strings.Contains(tg.Expr, `destination=~"$destination"`) {
				t.Errorf("panel %q target %s does not filter by $destination: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	for m := range exportedMetrics(t) {
		if strings.HasPrefix(m, "spool_destination_") && !shown[m] {
			t.Errorf("metric %s is on no panel of the Destinations row", m)
		}
	}
}

// rowPanels returns the panels under the row titled title: its nested
// panels when collapsed, else the panels that follow it up to the next row.
func rowPanels(d dashboardModel, title string) []panel {
	for i, p := range d.Panels {
		if p.Type != "row" || p.Title != title {
			continue
		}
		if len(p.Panels) > 0 {
			return p.Panels
		}
		var out []panel
		for _, q := range d.Panels[i+1:] {
			if q.Type == "row" {
				break
			}
			out = append(out, q)
		}
		return out
	}
	return nil
}
