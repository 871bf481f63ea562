package manifests

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spoolhq/spool/test/manifests/render"
)

// TestKustomizeObjects: each overlay holds the objects the issue asks of
// it, and nothing that belongs to another.
func TestKustomizeObjects(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"base": {"ServiceAccount/spool", "Deployment/spool", "Service/spool", "HorizontalPodAutoscaler/spool",
			"PodDisruptionBudget/spool", "NetworkPolicy/spool-default-deny", "NetworkPolicy/spool-allow-api",
			"NetworkPolicy/spool-allow-metrics", "NetworkPolicy/spool-allow-dns", "NetworkPolicy/spool-allow-postgres",
			"NetworkPolicy/spool-allow-delivery"},
		"overlays/dev": {"Namespace/spool-dev", "Deployment/spool", "StatefulSet/postgres", "Service/postgres",
			"Deployment/spool-sink", "Service/spool-sink", "Deployment/orders", "Service/orders", "ConfigMap/spool-schedules"},
		"overlays/production": {"Namespace/spool", "Deployment/spool-api", "Deployment/spool-worker",
			"HorizontalPodAutoscaler/spool", "ScaledObject/spool-worker", "PodDisruptionBudget/spool-worker",
			"Service/spool-metrics", "ServiceMonitor/spool", "PrometheusRule/spool", "Cluster/spool-db",
			"ConfigMap/spool-grafana-dashboard"},
	}
	absent := map[string][]string{
		"base":                {"Namespace/spool"},
		"overlays/dev":        {"HorizontalPodAutoscaler/spool"},
		"overlays/production": {"Deployment/spool", "StatefulSet/postgres"},
	}
	for _, name := range overlays {
		objs := overlay(t, name)
		var ids []string
		kinds := map[string]bool{}
		for _, o := range objs {
			ids = append(ids, id(o))
			kinds[o.GetKind()] = true
		}
		for _, w := range want[name] {
			if !slices.Contains(ids, w) {
				t.Errorf("%s: no %s in %v", name, w, ids)
			}
		}
		for _, a := range absent[name] {
			if slices.Contains(ids, a) {
				t.Errorf("%s: %s must not be there", name, a)
			}
		}
		// The ConfigMap and Secret come from generators (hashed names).
		if !kinds["ConfigMap"] || !kinds["Secret"] {
			t.Errorf("%s: no generated ConfigMap or Secret", name)
		}
		if name != "base" {
			for _, o := range objs {
				if o.GetKind() != "Namespace" && o.GetNamespace() == "" {
					t.Errorf("%s: %s has no namespace", name, id(o))
				}
			}
		}
	}
	// The production Service is the guide's LoadBalancer 80 → 8000, and
	// the admin port is not on it.
	svc := find(overlay(t, "overlays/production"), "Service", "spool")
	typ, _, _ := unstructuredString(svc.Object, "spec", "type")
	ports, _ := svc.Object["spec"].(map[string]any)["ports"].([]any)
	if typ != "LoadBalancer" || len(ports) != 1 {
		t.Errorf("production Service: type %q with %d ports, want LoadBalancer with the API port only", typ, len(ports))
	} else if p := ports[0].(map[string]any); p["port"] != int64(80) && p["port"] != float64(80) {
		t.Errorf("production Service port %v, want 80", p["port"])
	}
}

// TestKustomizeNeedsItsSecretFiles: a tree without the git-ignored secret
// file does not build (so nothing falls back to a committed secret), and
// the example fills it in.
func TestKustomizeNeedsItsSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := render.CopyWithExampleSecrets(kustomizeRoot(t), dir); err != nil {
		t.Fatal(err)
	}
	if _, err := render.RenderKustomize(filepath.Join(dir, "base")); err != nil {
		t.Fatalf("with the examples in place: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "base", "secrets", "spool.env")); err != nil {
		t.Fatal(err)
	}
	if _, err := render.RenderKustomize(filepath.Join(dir, "base")); err == nil || !strings.Contains(err.Error(), "spool.env") {
		t.Fatalf("without secrets/spool.env: want an error naming it, got %v", err)
	}
}

// TestChartObjects: each value set yields the objects it should.
func TestChartObjects(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"defaults": {"ServiceAccount/spool", "ConfigMap/spool", "Secret/spool", "Deployment/spool", "Service/spool",
			"HorizontalPodAutoscaler/spool", "PodDisruptionBudget/spool", "NetworkPolicy/spool-default-deny",
			"Service/spool-test-sink", "Pod/spool-test-delivery"},
		"production": {"Deployment/spool-api", "Deployment/spool-worker", "ScaledObject/spool-worker",
			"PodDisruptionBudget/spool-worker", "Cluster/spool-db", "ServiceMonitor/spool", "Service/spool-metrics",
			"PrometheusRule/spool", "ConfigMap/spool-grafana-dashboard", "HorizontalPodAutoscaler/spool"},
		"no-autoscaling": {"Deployment/spool-api", "Deployment/spool-worker"},
		"minimal":        {"Deployment/tiny-spool", "Secret/tiny-spool", "ConfigMap/tiny-spool"},
		"schedules":      {"ConfigMap/spool-schedules", "Deployment/spool-api", "Deployment/spool-worker"},
	}
	absent := map[string][]string{
		"defaults":       {"Deployment/spool-worker", "ScaledObject/spool-worker", "Cluster/spool-db", "ServiceMonitor/spool", "ConfigMap/spool-schedules"},
		"no-autoscaling": {"HorizontalPodAutoscaler/spool", "ScaledObject/spool-worker"},
		"minimal": {"NetworkPolicy/tiny-spool-default-deny", "PodDisruptionBudget/tiny-spool", "ServiceAccount/tiny-spool",
			"Pod/tiny-spool-test-delivery"},
	}
	for _, set := range sortedKeys(valueSets) {
		var ids []string
		for _, o := range chart(t, set) {
			ids = append(ids, id(o))
			if o.GetNamespace() != "spool" {
				t.Errorf("chart %s: %s in namespace %q, want the release's", set, id(o), o.GetNamespace())
			}
		}
		for _, w := range want[set] {
			if !slices.Contains(ids, w) {
				t.Errorf("chart %s: no %s in %v", set, w, ids)
			}
		}
		for _, a := range absent[set] {
			if slices.Contains(ids, a) {
				t.Errorf("chart %s: %s must not be there", set, a)
			}
		}
	}
	// The production Service is a LoadBalancer without the admin port.
	svc := find(chart(t, "production"), "Service", "spool")
	ports, _ := svc.Object["spec"].(map[string]any)["ports"].([]any)
	if len(ports) != 1 {
		t.Errorf("LoadBalancer Service has %d ports, want the API port only", len(ports))
	}
}

// TestChartSchemaRejectsTypos: values.schema.json refuses unknown keys at
// every level and values of the wrong shape, before anything renders.
func TestChartSchemaRejectsTypos(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		values map[string]any
		want   string
	}{
		"unknown top-level key": {map[string]any{"replicaCount": 3}, "replicaCount"},
		"typo one level down":   {map[string]any{"server": map[string]any{"replica": 3}}, "replica"},
		"typo two levels down":  {map[string]any{"server": map[string]any{"autoscaling": map[string]any{"maxReplica": 3}}}, "maxReplica"},
		"typo in resources":     {map[string]any{"server": map[string]any{"resources": map[string]any{"limit": map[string]any{}}}}, "limit"},
		"bad enum":              {map[string]any{"config": map[string]any{"logLevel": "verbose"}}, "logLevel"},
		"bad type":              {map[string]any{"config": map[string]any{"workers": "many"}}, "workers"},
		"latest tag":            {map[string]any{"image": map[string]any{"tag": "latest"}}, "tag"},
		"bad duration":          {map[string]any{"config": map[string]any{"drainDelay": "5 seconds"}}, "drainDelay"},
		"non-SPOOL extra env":   {map[string]any{"config": map[string]any{"extraEnv": map[string]any{"PATH": "/"}}}, "PATH"},
		"unsigned signing key":  {map[string]any{"secret": map[string]any{"signingKeys": []any{"abc"}}}, "signingKeys"},
		"typo in a schedule": {map[string]any{"schedules": []any{map[string]any{"name": "s", "cron": "@daily", "queue": "q",
			"task": map[string]any{}, "timezon": "UTC"}}}, "timezon"},
		"schedule without a time": {map[string]any{"schedules": []any{map[string]any{"name": "s", "queue": "q", "task": map[string]any{}}}}, "schedules"},
	} {
		_, err := render.RenderChart(chartDir(t), merge(required(), c.values))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want a schema error naming %q, got %v", name, c.want, err)
		}
	}
}

// TestChartRequiresSecrets: without an API key or a database the chart
// refuses to render rather than install a Spool that cannot start.
func TestChartRequiresSecrets(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		values map[string]any
		want   string
	}{
		"no API key":               {map[string]any{"secret": map[string]any{"apiKeys": []any{}}}, "secret.apiKeys"},
		"no database":              {map[string]any{"secret": map[string]any{"databaseURL": ""}}, "secret.databaseURL"},
		"no existing secret named": {map[string]any{"secret": map[string]any{"create": false}}, "secret.existingSecret"},
		"no signing key":           {map[string]any{"secret": map[string]any{"signingKeys": []any{}}}, "secret.signingKeys"},
	} {
		_, err := render.RenderChart(chartDir(t), merge(required(), c.values))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an error naming %s, got %v", name, c.want, err)
		}
	}
	// Unsigned deliveries only when asked for, and then serve is told so.
	if v := renderedString(t, map[string]any{"secret": map[string]any{"signingKeys": []any{}}, "config": map[string]any{"insecureUnsigned": true}},
		"ConfigMap", "data", "SPOOL_INSECURE_UNSIGNED"); v != "true" {
		t.Errorf("config.insecureUnsigned: SPOOL_INSECURE_UNSIGNED = %q, want true", v)
	}
	// api-key is the first key without its role suffix: a bearer token.
	if v := renderedString(t, map[string]any{"secret": map[string]any{"apiKeys": []any{"k1:write", "k2:read"}}},
		"Secret", "stringData", "api-key"); v != "k1" {
		t.Errorf("api-key = %q, want k1 (no role suffix)", v)
	}
	// An existing Secret instead of values is enough.
	objs, err := render.RenderChart(chartDir(t), map[string]any{"secret": map[string]any{"create": false, "existingSecret": "mine"}})
	if err != nil {
		t.Fatalf("with secret.existingSecret: %v", err)
	}
	if find(objs, "Secret", "spool") != nil {
		t.Error("with secret.existingSecret the chart still creates its own Secret")
	}
}

// renderedString renders the chart with values over required() and returns
// the string at path in the object of kind named spool.
func renderedString(t *testing.T, values map[string]any, kind string, path ...string) string {
	t.Helper()
	objs, err := render.RenderChart(chartDir(t), merge(required(), values))
	if err != nil {
		t.Fatalf("render with %v: %v", values, err)
	}
	o := find(objs, kind, "spool")
	if o == nil {
		t.Fatalf("no %s spool", kind)
	}
	v, _, _ := unstructured.NestedString(o.Object, path...)
	return v
}

// TestHelmLint: `helm lint --strict` finds nothing, with the defaults and
// with each value set.
func TestHelmLint(t *testing.T) {
	t.Parallel()
	sets := map[string]map[string]any{"chart defaults": nil}
	for _, s := range sortedKeys(valueSets) {
		sets[s] = valueSets[s]()
	}
	for name, vals := range sets {
		res := lint.AllWithKubeVersion(chartDir(t), vals, "spool", nil)
		for _, m := range res.Messages {
			// --strict: warnings fail too; INFO (such as "icon is
			// recommended") does not.
			if m.Severity >= support.WarningSev {
				t.Errorf("helm lint (%s): %s", name, m)
			}
		}
	}
}

// TestNotes: NOTES.txt renders and tells how to reach the API and test it.
func TestNotes(t *testing.T) {
	t.Parallel()
	for _, set := range []string{"defaults", "production"} {
		notes, err := render.Notes(chartDir(t), render.ChartOptions{Values: valueSets[set]()})
		if err != nil {
			t.Fatalf("%s: %v", set, err)
		}
		for _, want := range []string{"helm test spool", "rollout status", "SPOOL_API_KEY"} {
			if !strings.Contains(notes, want) {
				t.Errorf("%s: NOTES.txt lacks %q:\n%s", set, want, notes)
			}
		}
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	cur := any(obj)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

// TestValuesDocumented: every key in values.yaml has a comment right above
// it, but the keys of free-form maps whose parent is documented as a whole
// (resources, label maps).
func TestValuesDocumented(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	freeForm := map[string]bool{"resources": true, "dnsPodLabels": true}
	key := regexp.MustCompile(`^( *)([A-Za-z][A-Za-z0-9_-]*):`)
	type frame struct {
		indent int
		name   string
	}
	var stack []frame
	prev := ""
	keys := 0
	for i, line := range strings.Split(string(data), "\n") {
		m := key.FindStringSubmatch(line)
		if m != nil {
			indent := len(m[1])
			for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
				stack = stack[:len(stack)-1]
			}
			free := false
			for _, f := range stack {
				free = free || freeForm[f.name]
			}
			if !free {
				keys++
				if !strings.HasPrefix(strings.TrimSpace(prev), "#") {
					t.Errorf("values.yaml:%d: %q has no comment above it", i+1, strings.TrimSpace(line))
				}
			}
			stack = append(stack, frame{indent, m[2]})
		}
		if !strings.HasPrefix(strings.TrimSpace(line), "- ") {
			prev = line
		}
	}
	if keys < 50 {
		t.Fatalf("found only %d keys in values.yaml; the parser is broken", keys)
	}
}
