package kubernetes_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/spoolhq/spool/test/kubernetes/controlplane"
)

// TestEndToEnd starts one control plane (etcd, kube-apiserver,
// kube-scheduler, kube-controller-manager, six kwok nodes over three zones)
// and installs each release into its own restricted namespace, one after
// another: the eviction check cordons every node, so releases must not
// overlap.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes control plane")
	}
	start := time.Now()
	cp := controlplane.Start(t, controlplane.Options{})
	t.Logf("control plane with %d nodes in zones %v up in %s", len(cp.Nodes), cp.Zones, time.Since(start).Round(time.Millisecond))

	t.Run("harness", func(t *testing.T) {
		objs, err := decodeManifests(harnessManifests)
		if err != nil {
			t.Fatal(err)
		}
		checkRelease(t, cp, release{name: "harness", objs: objs})
	})
	t.Run("checks-can-fail", func(t *testing.T) { checksCanFail(t, cp) })
	for _, r := range renderedReleases() {
		t.Run(r.name, func(t *testing.T) {
			objs, err := r.render()
			if err != nil {
				t.Fatal(err)
			}
			checkRelease(t, cp, release{name: r.name, objs: objs})
		})
	}
}

// checksCanFail shows that each end-to-end check notices the failure it
// exists for, on the same control plane.
func checksCanFail(t *testing.T, cp *controlplane.ControlPlane) {
	ctx := t.Context()
	const ns = "spool-negative"
	if err := cp.RestrictedNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	objs, err := decodeManifests(harnessManifests)
	if err != nil {
		t.Fatal(err)
	}
	var api *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GetName() == "spool-api" {
			api = o
		}
		if o.GetKind() == "ServiceAccount" || o.GetKind() == "ConfigMap" {
			if _, err := cp.Apply(ctx, o, ns, fieldManager); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("strict-field-validation", func(t *testing.T) {
		bad := api.DeepCopy()
		bad.SetName("typo")
		if err := unstructured.SetNestedField(bad.Object, int64(2), "spec", "replica"); err != nil {
			t.Fatal(err)
		}
		_, err := cp.Apply(ctx, bad, ns, fieldManager)
		// Server-side apply reports an undeclared field while building the
		// typed patch; strict validation makes it fatal.
		if err == nil || !strings.Contains(err.Error(), ".spec.replica: field not declared in schema") {
			t.Fatalf("apply with an unknown field: got %v, want a strict validation error", err)
		}
	})

	t.Run("pod-security-restricted", func(t *testing.T) {
		bad := api.DeepCopy()
		bad.SetName("privileged")
		unstructured.RemoveNestedField(bad.Object, "spec", "template", "spec", "securityContext")
		res, err := cp.Apply(ctx, bad, ns, fieldManager)
		if err != nil {
			t.Fatal(err)
		}
		if !anyContains(res.Warnings, "would violate PodSecurity") {
			t.Errorf("a Deployment whose pods run as root applied without a Pod Security warning: %v", res.Warnings)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c:1"}}},
		}
		_, err = cp.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("a pod violating restricted was not refused: %v", err)
		}
	})

	t.Run("unsafe-rollout-is-seen", func(t *testing.T) {
		// maxUnavailable 1 and no surge: the controller takes a pod down
		// before its replacement is up, which the rollout watch must see.
		u := api.DeepCopy()
		u.SetName("unsafe")
		labels := map[string]any{"app.kubernetes.io/name": "unsafe"}
		for _, path := range [][]string{{"spec", "selector", "matchLabels"}, {"spec", "template", "metadata", "labels"}} {
			if err := unstructured.SetNestedMap(u.Object, labels, path...); err != nil {
				t.Fatal(err)
			}
		}
		unstructured.RemoveNestedField(u.Object, "spec", "template", "spec", "topologySpreadConstraints")
		if err := unstructured.SetNestedField(u.Object, int64(3), "spec", "replicas"); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(u.Object, map[string]any{"maxUnavailable": int64(1), "maxSurge": int64(0)}, "spec", "strategy", "rollingUpdate"); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Apply(ctx, u, ns, fieldManager); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cp.WaitDeploymentAvailable(ctx, ns, "unsafe", 3, waitTimeout); err != nil {
			t.Fatal(err)
		}
		r, err := observeRollout(ctx, cp, ns, u, 3)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("unsafe rollout: minimum available %d (status), %d (pods)", r.minStatus, r.minPods)
		if r.minStatus >= 3 || r.minPods >= 3 {
			t.Errorf("a maxUnavailable=1 rollout never dropped below 3 available (status %d, pods %d): the watch cannot see a dip", r.minStatus, r.minPods)
		}
	})

	t.Run("zone-skew-is-seen", func(t *testing.T) {
		// Three replicas pinned to one zone: skew 3.
		u := api.DeepCopy()
		u.SetName("pinned")
		labels := map[string]any{"app.kubernetes.io/name": "pinned"}
		for _, path := range [][]string{{"spec", "selector", "matchLabels"}, {"spec", "template", "metadata", "labels"}} {
			if err := unstructured.SetNestedMap(u.Object, labels, path...); err != nil {
				t.Fatal(err)
			}
		}
		unstructured.RemoveNestedField(u.Object, "spec", "template", "spec", "topologySpreadConstraints")
		if err := unstructured.SetNestedStringMap(u.Object, map[string]string{controlplane.LabelZone: cp.Zones[0]}, "spec", "template", "spec", "nodeSelector"); err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(u.Object, int64(3), "spec", "replicas"); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.Apply(ctx, u, ns, fieldManager); err != nil {
			t.Fatal(err)
		}
		_, pods, err := cp.WaitDeploymentAvailable(ctx, ns, "pinned", 3, waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		zones, _ := cp.Spread(pods)
		if s := controlplane.Skew(zones); s != 3 {
			t.Errorf("three pods pinned to %s: zone skew %d, want 3 (%v)", cp.Zones[0], s, zones)
		}
	})
}

func anyContains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
