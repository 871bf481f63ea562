package manifests

import (
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spoolhq/spool/test/manifests/render"
)

var update = flag.Bool("update", false, "rewrite the copies of deploy/monitoring's files instead of comparing them")

// repo is the repository root, found from this file so the tests run from
// any directory.
func repo(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func kustomizeRoot(t testing.TB) string { return filepath.Join(repo(t), "deploy", "kubernetes") }
func chartDir(t testing.TB) string      { return filepath.Join(repo(t), "deploy", "helm", "spool") }

// overlays are the Kustomize trees that are deployed, each rendered whole.
var overlays = []string{"base", "overlays/dev", "overlays/production"}

// required are the values the chart cannot default: an API key and a
// database (nothing secret is committed, so there is no default).
func required() map[string]any {
	return map[string]any{
		"secret": map[string]any{
			"apiKeys":     []any{"test-api-key"},
			"signingKeys": []any{"whsec_Y2hhbmdlLW1lLWNoYW5nZS1tZS1jaGFuZ2UtbWUtMzI="},
			"databaseURL": "postgres://spool:pw@postgres:5432/spool",
		},
	}
}

// valueSets are the chart configurations under test, by name.
var valueSets = map[string]func() map[string]any{
	// The chart's own defaults plus the two values nothing can default.
	"defaults": required,
	// As overlays/production: API and workers apart, KEDA, CloudNativePG,
	// a LoadBalancer, monitoring objects.
	"production": func() map[string]any {
		return merge(required(), map[string]any{
			"secret":           map[string]any{"databaseURL": ""},
			"database":         map[string]any{"cloudnativepg": map[string]any{"enabled": true, "storageClass": "fast"}},
			"worker":           map[string]any{"enabled": true},
			"service":          map[string]any{"type": "LoadBalancer"},
			"image":            map[string]any{"digest": "sha256:" + strings.Repeat("ab", 32)},
			"serviceMonitor":   map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
			"prometheusRule":   map[string]any{"enabled": true},
			"grafanaDashboard": map[string]any{"enabled": true},
		})
	},
	// The dev overlay's example schedules, API and workers apart.
	"schedules": func() map[string]any {
		return merge(required(), map[string]any{
			"schedules": devSchedules(),
			"worker":    map[string]any{"enabled": true},
		})
	},
	// Fixed replica counts: no HPA, no KEDA, workers apart.
	"no-autoscaling": func() map[string]any {
		return merge(required(), map[string]any{
			"server": map[string]any{"autoscaling": map[string]any{"enabled": false}, "replicas": 3},
			"worker": map[string]any{"enabled": true, "replicas": 2, "keda": map[string]any{"enabled": false}},
		})
	},
	// Everything optional off, a release name without "spool", one node.
	"minimal": func() map[string]any {
		return merge(required(), map[string]any{
			"networkPolicy":  map[string]any{"enabled": false},
			"server":         map[string]any{"pdb": map[string]any{"enabled": false}},
			"migrate":        map[string]any{"enabled": false},
			"topologySpread": map[string]any{"zone": false, "hostname": false},
			"serviceAccount": map[string]any{"create": false},
			"tests":          map[string]any{"enabled": false},
			"config":         map[string]any{"allowedTargetCIDRs": "10.0.0.0/8", "extraEnv": map[string]any{"SPOOL_RETENTION": "72h"}},
		})
	},
}

// releaseFor gives each value set its release name ("minimal" also checks
// the "<release>-spool" naming).
func releaseFor(set string) string {
	if set == "minimal" {
		return "tiny"
	}
	return "spool"
}

// merge overlays b onto a, recursively for maps.
func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = merge(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// rendered caches each rendering for the whole test binary: several tests
// look at the same objects, and a rendering is not free.
type rendered struct {
	once map[string]*sync.Once
	objs map[string][]*unstructured.Unstructured
	errs map[string]error
	mu   sync.Mutex
}

var cache = &rendered{once: map[string]*sync.Once{}, objs: map[string][]*unstructured.Unstructured{}, errs: map[string]error{}}

func (c *rendered) get(key string, f func() ([]*unstructured.Unstructured, error)) ([]*unstructured.Unstructured, error) {
	c.mu.Lock()
	o, ok := c.once[key]
	if !ok {
		o = new(sync.Once)
		c.once[key] = o
	}
	c.mu.Unlock()
	o.Do(func() {
		objs, err := f()
		c.mu.Lock()
		c.objs[key], c.errs[key] = objs, err
		c.mu.Unlock()
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.objs[key], c.errs[key]
}

// overlay renders one Kustomize tree with the example secrets in place.
func overlay(t testing.TB, name string) []*unstructured.Unstructured {
	t.Helper()
	root := kustomizeRoot(t)
	objs, err := cache.get("kustomize:"+name, func() ([]*unstructured.Unstructured, error) {
		return render.RenderKustomizeWithExampleSecrets(root, name)
	})
	if err != nil {
		t.Fatalf("render %s: %v", name, err)
	}
	return objs
}

// chart renders the chart under one named value set, test hooks included.
func chart(t testing.TB, set string) []*unstructured.Unstructured {
	t.Helper()
	dir := chartDir(t)
	objs, err := cache.get("chart:"+set, func() ([]*unstructured.Unstructured, error) {
		return render.RenderChartWithOptions(dir, render.ChartOptions{
			ReleaseName: releaseFor(set), Namespace: "spool", Values: valueSets[set](), IncludeTests: true,
		})
	})
	if err != nil {
		t.Fatalf("render chart (%s): %v", set, err)
	}
	return objs
}

// renderings is every rendering under test, by a name for messages.
func renderings(t *testing.T) map[string][]*unstructured.Unstructured {
	t.Helper()
	out := map[string][]*unstructured.Unstructured{}
	for _, o := range overlays {
		out["kustomize "+o] = overlay(t, o)
	}
	for _, s := range sortedKeys(valueSets) {
		out["chart "+s] = chart(t, s)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func id(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s/%s", o.GetKind(), o.GetName())
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func ofKind(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		for _, k := range kinds {
			if o.GetKind() == k {
				out = append(out, o)
			}
		}
	}
	return out
}
