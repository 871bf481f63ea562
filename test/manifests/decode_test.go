package manifests

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// newScheme knows every kind Spool's manifests may contain: the built-in
// APIs and the three operators' CRDs, each from its project's own Go types.
func newScheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for name, add := range map[string]func(*runtime.Scheme) error{
		"kubernetes":          clientgoscheme.AddToScheme,
		"keda":                kedav1alpha1.AddToScheme,
		"prometheus-operator": monitoringv1.AddToScheme,
		"cloudnative-pg":      cnpgv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			t.Fatalf("scheme %s: %v", name, err)
		}
	}
	return s
}

// decodeStrict decodes one object into its Go type and fails on any field
// that type does not have, or any field given twice, as the API server's
// strict field validation would.
func decodeStrict(s *runtime.Scheme, o *unstructured.Unstructured) (runtime.Object, error) {
	data, err := json.Marshal(o.Object)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id(o), err)
	}
	ser := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Strict: true})
	obj, gvk, err := ser.Decode(data, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", id(o), o.GetAPIVersion(), err)
	}
	if gvk.Kind != o.GetKind() {
		return nil, fmt.Errorf("%s decoded as %s", id(o), gvk.Kind)
	}
	return obj, nil
}

// typed decodes every object of a rendering, failing the test on any error.
func typed(t *testing.T, s *runtime.Scheme, objs []*unstructured.Unstructured) []runtime.Object {
	t.Helper()
	out := make([]runtime.Object, 0, len(objs))
	for _, o := range objs {
		obj, err := decodeStrict(s, o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, obj)
	}
	return out
}

// TestStrictDecode: every object of every rendering decodes into its Go
// API type without an unknown or duplicate field.
func TestStrictDecode(t *testing.T) {
	t.Parallel()
	s := newScheme(t)
	for name, objs := range renderings(t) {
		if len(objs) == 0 {
			t.Errorf("%s rendered nothing", name)
		}
		for _, o := range objs {
			if _, err := decodeStrict(s, o); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
}

// TestStrictDecodeRejectsUnknownFields proves the decoding above is
// strict for each API family, built-in and CRD alike: a misspelt field in
// a real rendered object fails.
func TestStrictDecodeRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	s := newScheme(t)
	prod := overlay(t, "overlays/production")
	for _, c := range []struct{ kind, name string }{
		{"Deployment", "spool-api"},
		{"HorizontalPodAutoscaler", "spool"},
		{"NetworkPolicy", "spool-allow-dns"},
		{"ScaledObject", "spool-worker"},
		{"ServiceMonitor", "spool"},
		{"PrometheusRule", "spool"},
		{"Cluster", "spool-db"},
	} {
		o := find(prod, c.kind, c.name)
		if o == nil {
			t.Fatalf("production has no %s/%s", c.kind, c.name)
		}
		if _, err := decodeStrict(s, o); err != nil {
			t.Fatalf("the untouched object must decode: %v", err)
		}
		bad := o.DeepCopy()
		spec, _ := bad.Object["spec"].(map[string]any)
		spec["minReplicaz"] = 2 // a typo at the top of spec
		if _, err := decodeStrict(s, bad); err == nil || !strings.Contains(err.Error(), "minReplicaz") {
			t.Errorf("%s with spec.minReplicaz: want a strict decoding error naming it, got %v", id(o), err)
		}
	}
}
