package schedfile

import (
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spoolhq/spool/internal/dispatch"
	"github.com/spoolhq/spool/internal/schedule"
)

// TestExampleFiles: the schedules files shipped with the Compose demo and
// the Kubernetes dev overlay, and the example in the Helm chart's
// values.yaml, are accepted by Parse (as serve reads SPOOL_SCHEDULES_FILE)
// with the SSRF guard of the deployment they run in, and hold the
// nightly report and the five-minute sync the docs describe.
func TestExampleFiles(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	read := func(path string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, c := range []struct {
		path    string
		data    []byte
		allowed string // SPOOL_ALLOWED_TARGET_CIDRS of that deployment
		host    string // where the tasks go
	}{
		{"deploy/compose/schedules/schedules.yaml", read("deploy/compose/schedules/schedules.yaml"), "10.212.0.0/24", "sink:8080"},
		{"deploy/kubernetes/overlays/dev/schedules.yaml", read("deploy/kubernetes/overlays/dev/schedules.yaml"), "10.0.0.0/8", "spool-sink:8080"},
		{"deploy/helm/spool/values.yaml (the schedules example)", valuesExample(t, read("deploy/helm/spool/values.yaml")), "", ""},
	} {
		guard := dispatch.Guard{}
		if c.allowed != "" {
			guard.Allowed = []netip.Prefix{netip.MustParsePrefix(c.allowed)}
		}
		scs, err := Parse(c.data, guard.CheckURL)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		byName := map[string]schedule.Schedule{}
		for _, sc := range scs {
			byName[sc.Name] = sc
			if sc.Source != schedule.SourceFile {
				t.Errorf("%s: %s has source %q", c.path, sc.Name, sc.Source)
			}
			if u, err := url.Parse(sc.Task.Target.URL); c.host != "" && (err != nil || u.Host != c.host) {
				t.Errorf("%s: %s delivers to %s, want the sink at %s", c.path, sc.Name, sc.Task.Target.URL, c.host)
			}
		}
		nightly, sync := byName["nightly-report"], byName["sync"]
		if len(scs) != 2 || nightly.Name == "" || sync.Name == "" {
			t.Errorf("%s: schedules %v, want nightly-report and sync", c.path, scs)
			continue
		}
		// The nightly report runs at 03:00 in its zone, whatever the season.
		clock, err := schedule.Compile(nightly.Spec)
		if err != nil {
			t.Fatalf("%s: nightly-report: %v", c.path, err)
		}
		for _, after := range []time.Time{time.Date(2025, 1, 15, 12, 0, 0, 0, time.UTC), time.Date(2025, 7, 15, 12, 0, 0, 0, time.UTC)} {
			next := clock.Next(after).In(clock.Location())
			if nightly.Spec.Timezone == "" || next.Hour() != 3 || next.Minute() != 0 {
				t.Errorf("%s: nightly-report after %s runs at %s (zone %q), want 03:00 in a named zone", c.path, after, next, nightly.Spec.Timezone)
			}
		}
		if sync.Spec.Every != 5*time.Minute {
			t.Errorf("%s: sync every %s, want 5m", c.path, sync.Spec.Every)
		}
	}
}

// valuesExample is the commented example under the chart's `schedules`
// value: the "#   " lines that follow "For example:", uncommented.
func valuesExample(t *testing.T, values []byte) []byte {
	t.Helper()
	var out []string
	in := false
	for _, line := range strings.Split(string(values), "\n") {
		switch {
		case strings.Contains(line, "For example:") && strings.Contains(line, "#"):
			in = true
		case in && strings.HasPrefix(line, "#   "):
			out = append(out, strings.TrimPrefix(line, "#   "))
		case in:
			if len(out) == 0 {
				t.Fatal("values.yaml: no example under schedules")
			}
			return []byte(strings.Join(out, "\n") + "\n")
		}
	}
	t.Fatal("values.yaml: no schedules example (a comment line with \"For example:\")")
	return nil
}
