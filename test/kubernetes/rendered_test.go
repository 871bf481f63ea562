package kubernetes_test

import (
	"path/filepath"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spoolhq/spool/test/manifests/render"
)

// deployDir is the repository's deploy/ directory, relative to this
// package.
var deployDir = filepath.Join("..", "..", "deploy")

// renderedRelease is one of Spool's own manifest sets, rendered from
// deploy/ with the same package the no-cluster manifest tests use.
type renderedRelease struct {
	name   string
	render func() ([]*unstructured.Unstructured, error)
}

// renderedReleases are the production Kustomize overlay and the Helm chart
// under its defaults (with the secret values a first install must give) and
// under production-like values (workers scaled by KEDA, CloudNativePG,
// monitoring objects, a LoadBalancer Service). The dev overlay is left
// out: its single replica and in-cluster PostgreSQL StatefulSet are for
// kind/minikube, not for zone spread or disruption budgets.
func renderedReleases() []renderedRelease {
	chart := filepath.Join(deployDir, "helm", "spool")
	// Test values only: nothing here reaches a real system.
	secret := map[string]any{
		"apiKeys":     []any{"e2e-api-key"},
		"signingKeys": []any{"whsec_ZTJlLXNpZ25pbmcta2V5LWUyZS1zaWduaW5nLWtleQ=="},
		"databaseURL": "postgres://spool:e2e@postgres.invalid:5432/spool",
	}
	return []renderedRelease{
		{"kustomize-production", func() ([]*unstructured.Unstructured, error) {
			return render.RenderKustomizeWithExampleSecrets(filepath.Join(deployDir, "kubernetes"), "overlays/production")
		}},
		{"helm-defaults", func() ([]*unstructured.Unstructured, error) {
			return render.RenderChart(chart, map[string]any{"secret": secret})
		}},
		{"helm-production", func() ([]*unstructured.Unstructured, error) {
			return render.RenderChart(chart, map[string]any{
				"secret":           map[string]any{"apiKeys": secret["apiKeys"], "signingKeys": secret["signingKeys"]},
				"service":          map[string]any{"type": "LoadBalancer"},
				"worker":           map[string]any{"enabled": true},
				"database":         map[string]any{"cloudnativepg": map[string]any{"enabled": true}},
				"serviceMonitor":   map[string]any{"enabled": true},
				"prometheusRule":   map[string]any{"enabled": true},
				"grafanaDashboard": map[string]any{"enabled": true},
			})
		}},
	}
}
