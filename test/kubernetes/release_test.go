package kubernetes_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/spoolhq/spool/test/kubernetes/controlplane"
)

const (
	fieldManager = "spool-e2e"
	// scaleTo is the replica count of the manual scale-up check.
	scaleTo = 5
	// waitTimeout bounds every wait for the control plane to converge; the
	// controllers act in milliseconds, so minutes mean a real failure (or
	// a machine too loaded to run this at all).
	waitTimeout = 2 * time.Minute
)

// release is one rendered set of manifests to install.
type release struct {
	name string // namespace suffix and log label
	objs []*unstructured.Unstructured
}

// applied is what the checks need to know about an installed release.
type applied struct {
	ns          string
	deployments []*appsv1.Deployment // as applied, before controllers act
	// manifestReplicas says whether the manifest itself set replicas (an
	// autoscaler-owned Deployment must not).
	manifestReplicas map[string]bool
	hpas             []*autoscalingv2.HorizontalPodAutoscaler
	pdbs             []*policyv1.PodDisruptionBudget
	// scaledObjects are the KEDA ScaledObjects by target Deployment name.
	scaledObjects map[string]scaledObject
	// manifests are the Deployments as rendered, to re-apply changed.
	manifests map[string]*unstructured.Unstructured
}

// checkRelease installs r into a fresh restricted namespace and runs every
// end-to-end check on each of its Deployments.
func checkRelease(t *testing.T, cp *controlplane.ControlPlane, r release) {
	ctx := t.Context()
	a := installRelease(t, cp, r)
	if len(a.deployments) == 0 {
		t.Fatalf("%s: no Deployment in the rendered objects", r.name)
	}
	for _, d := range a.deployments {
		t.Run(d.Name, func(t *testing.T) {
			want := desiredReplicas(t, a, d)
			if _, pods, err := cp.WaitDeploymentAvailable(ctx, a.ns, d.Name, want, waitTimeout); err != nil {
				t.Fatal(err)
			} else {
				checkSpread(t, cp, d.Name, pods)
			}

			t.Run("rolling-update", func(t *testing.T) { checkRollingUpdate(t, cp, a, d, want) })
			t.Run("pdb-at-desired", func(t *testing.T) { checkBudgetAtDesired(t, cp, a, d, want) })
			t.Run("scale-to-5", func(t *testing.T) { checkScale(t, cp, a, d) })
			// Evictions at the scaled count: the budget over 5 pods.
			t.Run("pdb-eviction", func(t *testing.T) { checkEviction(t, cp, a, d, scaleTo) })
		})
	}
}

// installRelease creates the namespace, installs stand-in CRDs for
// operator kinds the control plane does not serve, and applies every object
// with server-side apply and strict field validation. Any error or
// apiserver warning fails the test.
func installRelease(t *testing.T, cp *controlplane.ControlPlane, r release) applied {
	t.Helper()
	ctx := t.Context()
	a := applied{
		ns:               "spool-" + r.name,
		manifestReplicas: map[string]bool{},
		scaledObjects:    map[string]scaledObject{},
		manifests:        map[string]*unstructured.Unstructured{},
	}
	if err := cp.RestrictedNamespace(ctx, a.ns); err != nil {
		t.Fatal(err)
	}

	objs := make([]*unstructured.Unstructured, 0, len(r.objs))
	for _, o := range r.objs {
		switch {
		case o.GetKind() == "Namespace":
			// The test's own restricted namespace replaces it.
			t.Logf("%s: not applying Namespace %s (the test namespace %s stands in for it)", r.name, o.GetName(), a.ns)
			continue
		case o.GetAnnotations()["helm.sh/hook"] != "":
			// `helm install` does not install hooks (helm test pods) either.
			t.Logf("%s: not applying Helm hook %s %s", r.name, o.GetKind(), o.GetName())
			continue
		}
		objs = append(objs, o)
	}
	// Definitions and namespace-wide objects first, as kubectl and Helm do,
	// so a Deployment never starts before its ServiceAccount, ConfigMap or
	// Secret exists.
	slices.SortStableFunc(objs, func(x, y *unstructured.Unstructured) int { return applyOrder(x) - applyOrder(y) })

	for _, o := range objs {
		gvk := o.GroupVersionKind()
		served, err := cp.Served(gvk)
		if err != nil {
			t.Fatalf("%s: discovery for %s: %v", r.name, gvk, err)
		}
		if !served {
			if !operatorGroups[gvk.Group] {
				t.Fatalf("%s: %s %s: kind not served by Kubernetes %s and not a known operator CRD", r.name, gvk, o.GetName(), "v1.36")
			}
			t.Logf("%s: installing a permissive stand-in CRD for %s (the operator's published CRD is not available offline; its spec is checked by the no-cluster tests' strict decode, not here)", r.name, gvk)
			if err := cp.InstallPermissiveCRD(ctx, gvk, true); err != nil {
				t.Fatal(err)
			}
		}
		res, err := cp.Apply(ctx, o, a.ns, fieldManager)
		if err != nil {
			t.Errorf("%s: %v", r.name, err)
			continue
		}
		if len(res.Warnings) > 0 {
			t.Errorf("%s: %s %s applied with warnings:\n  %s", r.name, gvk.Kind, o.GetName(), strings.Join(res.Warnings, "\n  "))
		}
		if err := a.record(o, res.Object); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%s: %d objects accepted into %s", r.name, len(objs), a.ns)
	for _, so := range a.scaledObjects {
		hpa, err := standInForKEDA(ctx, cp, a.ns, so)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		t.Logf("%s: no KEDA here: created HPA %s (%d–%d replicas of %s) as KEDA would for ScaledObject %s",
			r.name, hpa.Name, *hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas, so.target, so.name)
		a.hpas = append(a.hpas, hpa)
	}
	return a
}

// scaledObject is what the checks need from a KEDA ScaledObject.
type scaledObject struct {
	name, target, hpaName string
	minReplicas           int32 // KEDA's default is 0
	maxReplicas           int32 // KEDA's default is 100
}

func parseScaledObject(u *unstructured.Unstructured) (scaledObject, error) {
	so := scaledObject{name: u.GetName(), maxReplicas: 100}
	kind, _, _ := unstructured.NestedString(u.Object, "spec", "scaleTargetRef", "kind")
	if kind != "" && kind != "Deployment" {
		return so, nil
	}
	so.target, _, _ = unstructured.NestedString(u.Object, "spec", "scaleTargetRef", "name")
	so.hpaName, _, _ = unstructured.NestedString(u.Object, "spec", "advanced", "horizontalPodAutoscalerConfig", "name")
	if so.hpaName == "" {
		so.hpaName = "keda-hpa-" + so.name
	}
	if v, ok, err := unstructured.NestedInt64(u.Object, "spec", "minReplicaCount"); err != nil {
		return so, fmt.Errorf("ScaledObject %s minReplicaCount: %w", so.name, err)
	} else if ok {
		so.minReplicas = int32(v)
	}
	if v, ok, err := unstructured.NestedInt64(u.Object, "spec", "maxReplicaCount"); err != nil {
		return so, fmt.Errorf("ScaledObject %s maxReplicaCount: %w", so.name, err)
	} else if ok {
		so.maxReplicas = int32(v)
	}
	return so, nil
}

// standInForKEDA creates the HorizontalPodAutoscaler KEDA's operator would
// create for the ScaledObject (same name, target and bounds; a CPU metric
// in place of KEDA's external queue-depth metric), so the worker
// Deployment is held at its minimum by the real HPA controller as it would
// be in a cluster running KEDA. A minimum of 0 (scale to zero) is KEDA's
// own business; the stand-in keeps 1.
func standInForKEDA(ctx context.Context, cp *controlplane.ControlPlane, ns string, so scaledObject) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	minReplicas := max(so.minReplicas, 1)
	util := int32(70)
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: so.hpaName, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/managed-by": "keda-operator"}},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: so.target},
			MinReplicas:    &minReplicas,
			MaxReplicas:    so.maxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: &util},
				},
			}},
		},
	}
	out, err := cp.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, hpa, metav1.CreateOptions{FieldManager: "keda-stand-in"})
	if err != nil {
		return nil, fmt.Errorf("stand-in HPA for ScaledObject %s: %w", so.name, err)
	}
	return out, nil
}

// operatorGroups are the API groups of the operators Spool's production
// manifests use (KEDA, prometheus-operator, CloudNativePG).
var operatorGroups = map[string]bool{
	"keda.sh":               true,
	"monitoring.coreos.com": true,
	"postgresql.cnpg.io":    true,
}

func applyOrder(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "CustomResourceDefinition":
		return 0
	case "ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim":
		return 1
	case "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "NetworkPolicy", "Service":
		return 2
	case "Deployment", "StatefulSet", "Job", "DaemonSet":
		return 3
	default:
		return 4
	}
}

// record keeps the typed view of the objects the checks act on. The
// manifest (not the stored object, which has defaults) tells whether
// replicas was set.
func (a *applied) record(manifest, stored *unstructured.Unstructured) error {
	gk := manifest.GroupVersionKind().GroupKind()
	switch gk {
	case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(stored.Object, &d); err != nil {
			return fmt.Errorf("decode Deployment %s: %w", stored.GetName(), err)
		}
		_, set, _ := unstructured.NestedFieldNoCopy(manifest.Object, "spec", "replicas")
		a.manifestReplicas[d.Name] = set
		a.manifests[d.Name] = manifest.DeepCopy()
		a.deployments = append(a.deployments, &d)
	case schema.GroupKind{Group: "autoscaling", Kind: "HorizontalPodAutoscaler"}:
		var h autoscalingv2.HorizontalPodAutoscaler
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(stored.Object, &h); err != nil {
			return fmt.Errorf("decode HorizontalPodAutoscaler %s: %w", stored.GetName(), err)
		}
		a.hpas = append(a.hpas, &h)
	case schema.GroupKind{Group: "policy", Kind: "PodDisruptionBudget"}:
		var p policyv1.PodDisruptionBudget
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(stored.Object, &p); err != nil {
			return fmt.Errorf("decode PodDisruptionBudget %s: %w", stored.GetName(), err)
		}
		a.pdbs = append(a.pdbs, &p)
	case schema.GroupKind{Group: "keda.sh", Kind: "ScaledObject"}:
		so, err := parseScaledObject(stored)
		if err != nil {
			return err
		}
		if so.target != "" {
			a.scaledObjects[so.target] = so
		}
	}
	return nil
}

// hpaFor is the HorizontalPodAutoscaler that scales the Deployment, if any.
func (a *applied) hpaFor(d *appsv1.Deployment) *autoscalingv2.HorizontalPodAutoscaler {
	for _, h := range a.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind == "Deployment" && ref.Name == d.Name {
			return h
		}
	}
	return nil
}

// pdbFor is the PodDisruptionBudget that selects the Deployment's pods.
func (a *applied) pdbFor(t *testing.T, d *appsv1.Deployment) *policyv1.PodDisruptionBudget {
	var found *policyv1.PodDisruptionBudget
	podLabels := labels.Set(d.Spec.Template.Labels)
	for _, p := range a.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Fatalf("PDB %s selector: %v", p.Name, err)
		}
		if !sel.Empty() && sel.Matches(podLabels) {
			if found != nil {
				// The eviction API refuses pods covered by two budgets.
				t.Fatalf("Deployment %s is selected by two PDBs, %s and %s", d.Name, found.Name, p.Name)
			}
			found = p
		}
	}
	return found
}

// desiredReplicas is the count the Deployment must reach with nobody
// scaling it by hand: the HPA's minReplicas when an HPA owns it (the HPA
// controller scales up to it even without a metrics API; for a KEDA
// ScaledObject that is the stand-in HPA installRelease creates), the
// manifest's replicas otherwise.
func desiredReplicas(t *testing.T, a applied, d *appsv1.Deployment) int32 {
	hpa := a.hpaFor(d)
	_, keda := a.scaledObjects[d.Name]
	autoscaled := hpa != nil || keda
	if autoscaled && a.manifestReplicas[d.Name] {
		t.Errorf("Deployment %s sets replicas although an autoscaler owns it: every apply would fight the autoscaler", d.Name)
	}
	if hpa != nil {
		minReplicas := int32(1)
		if hpa.Spec.MinReplicas != nil {
			minReplicas = *hpa.Spec.MinReplicas
		}
		t.Logf("%s: owned by HPA %s, expecting its minReplicas %d", d.Name, hpa.Name, minReplicas)
		return minReplicas
	}
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// checkSpread asserts the pods spread over zones with skew at most 1 and
// over nodes: no node holds more pods than an even
// spread would put there. (The node constraint is ScheduleAnyway, a
// preference; on empty, equal nodes the scheduler's spread score decides.)
func checkSpread(t *testing.T, cp *controlplane.ControlPlane, name string, pods []corev1.Pod) {
	t.Helper()
	zones, nodes := cp.Spread(pods)
	t.Logf("%s: %d pods, per zone %v, per node %v", name, len(pods), zones, nodes)
	if s := controlplane.Skew(zones); s > 1 {
		t.Errorf("%s: zone skew %d > 1: %v", name, s, zones)
	}
	perNode := (len(pods) + len(cp.Nodes) - 1) / len(cp.Nodes)
	for n, c := range nodes {
		if c > perNode {
			t.Errorf("%s: node %s runs %d pods; an even spread of %d pods over %d nodes puts at most %d on one", name, n, c, len(pods), len(cp.Nodes), perNode)
		}
	}
}

// checkRollingUpdate rolls the Deployment to a new image on every
// container: neither its status's availableReplicas nor the number of
// Ready, non-terminating pods may drop below want at any point.
func checkRollingUpdate(t *testing.T, cp *controlplane.ControlPlane, a applied, d *appsv1.Deployment, want int32) {
	r, err := observeRollout(t.Context(), cp, a.ns, a.manifests[d.Name], want)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: rollout complete after %d status updates; minimum available %d (status) and %d (Ready pods), desired %d; final status %+v",
		d.Name, r.statusUpdates, r.minStatus, r.minPods, want, r.final)
	if r.minStatus < want {
		t.Errorf("during the rollout %s reported only %d available replicas; desired %d", d.Name, r.minStatus, want)
	}
	if r.minPods < want {
		t.Errorf("during the rollout only %d Ready, non-terminating pods of %s existed; desired %d", r.minPods, d.Name, want)
	}
	if r.statusUpdates < 2 {
		t.Errorf("saw only %d Deployment status updates: the rollout was not observed", r.statusUpdates)
	}
}

// rollout is what observeRollout saw.
type rollout struct {
	minStatus     int32 // lowest status.availableReplicas
	minPods       int32 // lowest count of Ready, non-terminating pods
	statusUpdates int
	final         appsv1.DeploymentStatus
}

// observeRollout re-applies the Deployment's manifest with every image
// retagged and watches both the Deployment and its pods, in the API
// server's order, until the Deployment reports the rollout complete and
// only want pods remain, all Ready on the new images. Re-applying the
// manifest (not the stored object) keeps this field manager off the fields
// the controllers own, replicas above all.
func observeRollout(ctx context.Context, cp *controlplane.ControlPlane, ns string, manifest *unstructured.Unstructured, want int32) (rollout, error) {
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	var r rollout
	name := manifest.GetName()

	cur, err := cp.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return r, err
	}
	sel, err := metav1.LabelSelectorAsSelector(cur.Spec.Selector)
	if err != nil {
		return r, err
	}
	podList, err := cp.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return r, err
	}
	// A pod counts as available while it is Ready and not terminating (a
	// terminating pod is leaving the Service's endpoints).
	pods := map[string]*corev1.Pod{}
	for i := range podList.Items {
		pods[podList.Items[i].Name] = &podList.Items[i]
	}
	podWatch, err := cp.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel.String(), ResourceVersion: podList.ResourceVersion})
	if err != nil {
		return r, err
	}
	defer podWatch.Stop()
	depWatch, err := cp.Client.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: cur.ResourceVersion,
	})
	if err != nil {
		return r, err
	}
	defer depWatch.Stop()

	u := manifest.DeepCopy()
	newImages := map[string]string{}
	containers, _, err := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	if err != nil || len(containers) == 0 {
		return r, fmt.Errorf("manifest of %s has no containers (%v)", name, err)
	}
	for i, c := range containers {
		cm := c.(map[string]any)
		cm["image"] = retag(cm["image"].(string), "e2e-rollout")
		newImages[cm["name"].(string)] = cm["image"].(string)
		containers[i] = cm
	}
	if err := unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers"); err != nil {
		return r, err
	}
	res, err := cp.Apply(ctx, u, ns, fieldManager)
	if err != nil {
		return r, err
	}
	if len(res.Warnings) > 0 {
		return r, fmt.Errorf("rollout apply of %s: warnings %v", name, res.Warnings)
	}
	gen := res.Object.GetGeneration()

	available := func() (n int32) {
		for _, p := range pods {
			if p.DeletionTimestamp == nil && controlplane.PodReady(p) {
				n++
			}
		}
		return n
	}
	settled := func() bool {
		if int32(len(pods)) != want {
			return false
		}
		for _, p := range pods {
			if p.DeletionTimestamp != nil || !controlplane.PodReady(p) {
				return false
			}
			for _, c := range p.Spec.Containers {
				if c.Image != newImages[c.Name] {
					return false
				}
			}
		}
		return true
	}
	r.minStatus, r.minPods = cur.Status.AvailableReplicas, available()
	for depDone := false; !depDone || !settled(); {
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("rollout of %s did not complete: %w\n%s", name, ctx.Err(), cp.Describe(context.Background(), ns, name))
		case ev, ok := <-podWatch.ResultChan():
			if !ok {
				return r, fmt.Errorf("pod watch closed")
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				return r, fmt.Errorf("pod watch: %v", ev.Object)
			}
			if ev.Type == watch.Deleted {
				delete(pods, p.Name)
			} else {
				pods[p.Name] = p
			}
			r.minPods = min(r.minPods, available())
		case ev, ok := <-depWatch.ResultChan():
			if !ok {
				return r, fmt.Errorf("deployment watch closed")
			}
			dep, isDep := ev.Object.(*appsv1.Deployment)
			if !isDep {
				return r, fmt.Errorf("deployment watch: %v", ev.Object)
			}
			r.statusUpdates++
			r.final = dep.Status
			r.minStatus = min(r.minStatus, dep.Status.AvailableReplicas)
			depDone = dep.Generation >= gen && controlplane.DeploymentAvailable(dep, want)
		}
	}
	return r, nil
}

// retag replaces an image reference's tag (and drops any digest).
func retag(image, tag string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image + ":" + tag
}

// checkBudgetAtDesired asserts the PodDisruptionBudget lets a node drain
// proceed at the Deployment's desired (autoscaler minimum) count: a budget
// that allows no disruption there blocks every drain until someone scales
// up by hand. A single replica is exempt: a budget over one pod either
// blocks or protects nothing, and Spool's workers tolerate the gap.
func checkBudgetAtDesired(t *testing.T, cp *controlplane.ControlPlane, a applied, d *appsv1.Deployment, want int32) {
	pdb := a.pdbFor(t, d)
	if pdb == nil {
		t.Fatalf("no PodDisruptionBudget selects the pods of %s", d.Name)
	}
	cur := settledBudget(t, cp, a, pdb, want)
	t.Logf("%s: PDB %s at %d replicas: desiredHealthy %d, disruptionsAllowed %d", d.Name, pdb.Name, want, cur.Status.DesiredHealthy, cur.Status.DisruptionsAllowed)
	if want > 1 && cur.Status.DisruptionsAllowed < 1 {
		t.Errorf("PDB %s allows no disruption at %d replicas: a node drain would block forever", pdb.Name, want)
	}
}

// settledBudget waits until the disruption controller has observed the
// budget's spec and counted want healthy pods of want expected.
func settledBudget(t *testing.T, cp *controlplane.ControlPlane, a applied, pdb *policyv1.PodDisruptionBudget, want int32) *policyv1.PodDisruptionBudget {
	t.Helper()
	var cur *policyv1.PodDisruptionBudget
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := cp.Client.PolicyV1().PodDisruptionBudgets(a.ns).Get(ctx, pdb.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		cur = got
		s := cur.Status
		return s.ObservedGeneration >= cur.Generation && s.ExpectedPods == want && s.CurrentHealthy == want, nil
	})
	if err != nil {
		status := policyv1.PodDisruptionBudgetStatus{}
		if cur != nil {
			status = cur.Status
		}
		t.Fatalf("PDB %s never observed %d healthy pods: %v (status %+v)", pdb.Name, want, err, status)
	}
	return cur
}

// checkEviction drains by the eviction API with the kubelets paused, so an
// evicted pod's replacement is scheduled but cannot become Ready: exactly
// the disruptions the PDB allows succeed, and the next eviction is refused
// with 429 Too Many Requests, both at once and after the disruption
// controller has recounted. The kubelets resume and the Deployment
// recovers afterwards, still spread.
//
// Pausing the kubelets rather than cordoning the nodes keeps the recovery
// deterministic: uncordoning happens node by node, and the waiting
// replacement lands on whichever node is schedulable first.
func checkEviction(t *testing.T, cp *controlplane.ControlPlane, a applied, d *appsv1.Deployment, want int32) {
	ctx := t.Context()
	pdb := a.pdbFor(t, d)
	if pdb == nil {
		t.Fatalf("no PodDisruptionBudget selects the pods of %s", d.Name)
	}
	pdbs := cp.Client.PolicyV1().PodDisruptionBudgets(a.ns)
	cur := settledBudget(t, cp, a, pdb, want)
	allowed := cur.Status.DisruptionsAllowed
	t.Logf("%s: PDB %s at %d replicas: desiredHealthy %d, disruptionsAllowed %d", d.Name, pdb.Name, want, cur.Status.DesiredHealthy, allowed)

	cp.PauseKubelets()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := cp.ResumeKubelets(); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()

	dep, err := cp.Client.AppsV1().Deployments(a.ns).Get(ctx, d.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cp.DeploymentPods(ctx, dep)
	if err != nil {
		t.Fatal(err)
	}
	evict := func(name string) error {
		return cp.Client.PolicyV1().Evictions(a.ns).Evict(ctx, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: a.ns},
		})
	}
	next := 0
	for ; next < int(allowed) && next < len(pods); next++ {
		if err := evict(pods[next].Name); err != nil {
			t.Fatalf("eviction %d of %d allowed by the PDB failed: %v", next+1, allowed, err)
		}
	}
	if next >= len(pods) {
		t.Fatalf("the PDB allows evicting all %d pods", len(pods))
	}
	victim := pods[next].Name
	err = evict(victim)
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("eviction beyond the budget: got %v, want 429 Too Many Requests", err)
	}
	t.Logf("%s: eviction of %s refused: %v", d.Name, victim, err)

	// Once the evicted pods are gone and the controller has recounted,
	// the budget must still refuse: this is the steady state of a drain
	// whose replacements cannot start.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		var err error
		cur, err = pdbs.Get(ctx, pdb.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return cur.Status.ObservedGeneration >= cur.Generation && len(cur.Status.DisruptedPods) == 0 &&
			cur.Status.CurrentHealthy == want-allowed, nil
	})
	if err != nil {
		t.Fatalf("PDB %s never settled at %d healthy: %v (status %+v)", pdb.Name, want-allowed, err, cur.Status)
	}
	if cur.Status.DisruptionsAllowed != 0 {
		t.Errorf("PDB %s still allows %d disruptions at %d healthy", pdb.Name, cur.Status.DisruptionsAllowed, cur.Status.CurrentHealthy)
	}
	if err := evict(victim); !apierrors.IsTooManyRequests(err) {
		t.Errorf("eviction with the budget spent (steady state): got %v, want 429 Too Many Requests", err)
	}
	if p, err := cp.Client.CoreV1().Pods(a.ns).Get(ctx, victim, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Errorf("the refused eviction still removed pod %s (%v)", victim, err)
	}

	resume()
	if _, pods, err := cp.WaitDeploymentAvailable(ctx, a.ns, d.Name, want, waitTimeout); err != nil {
		t.Fatal(err)
	} else {
		checkSpread(t, cp, d.Name, pods)
	}
}

// checkScale scales the Deployment to scaleTo replicas the way its owner
// would: through the HPA's minReplicas when an HPA owns it (a hand scale
// would be undone by the HPA once metrics flow; for a KEDA target this is
// raising minReplicaCount), through the scale subresource otherwise
// (`kubectl scale`). The new pods must become available and keep the
// spread.
func checkScale(t *testing.T, cp *controlplane.ControlPlane, a applied, d *appsv1.Deployment) {
	ctx := t.Context()
	if hpa := a.hpaFor(d); hpa != nil {
		if hpa.Spec.MaxReplicas < scaleTo {
			t.Fatalf("HPA %s maxReplicas %d < %d", hpa.Name, hpa.Spec.MaxReplicas, scaleTo)
		}
		patch := fmt.Appendf(nil, `{"spec":{"minReplicas":%d}}`, scaleTo)
		if _, err := cp.Client.AutoscalingV2().HorizontalPodAutoscalers(a.ns).Patch(ctx, hpa.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "spool-e2e-operator"}); err != nil {
			t.Fatal(err)
		}
	} else {
		// A patch of the scale subresource, as `kubectl scale` sends
		// without --resource-version: no conflict with status updates.
		patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, scaleTo)
		if _, err := cp.Client.AppsV1().Deployments(a.ns).Patch(ctx, d.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "spool-e2e-operator"}, "scale"); err != nil {
			t.Fatal(err)
		}
	}
	_, pods, err := cp.WaitDeploymentAvailable(ctx, a.ns, d.Name, scaleTo, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	checkSpread(t, cp, d.Name, pods)
}
