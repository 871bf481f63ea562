package manifests

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestMonitoringCopiesInSync: the PrometheusRule and the dashboard
// ConfigMap that the production overlay (components/monitoring) and the
// chart (files/) ship are byte-for-byte deploy/monitoring's. Kustomize's
// default load restrictor and Helm's chart packaging both refuse files
// outside their roots, so each keeps a copy; -update refreshes them.
func TestMonitoringCopiesInSync(t *testing.T) {
	root := repo(t)
	for src, copies := range map[string][]string{
		"deploy/monitoring/prometheus/prometheusrule.yaml": {
			"deploy/kubernetes/components/monitoring/prometheusrule.yaml",
			"deploy/helm/spool/files/prometheusrule.yaml",
		},
		"deploy/monitoring/grafana/dashboard-configmap.yaml": {
			"deploy/kubernetes/components/monitoring/dashboard-configmap.yaml",
			"deploy/helm/spool/files/dashboard-configmap.yaml",
		},
	} {
		want, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range copies {
			path := filepath.Join(root, c)
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s; run: cd test/manifests && go test -run TestMonitoringCopiesInSync -update", c, src)
			}
		}
	}
}
