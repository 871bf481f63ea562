package manifests

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	cnpgv1 "github.com/cloudnative-pg/cloudnative-pg/api/v1"
	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
)

// set is one rendering, decoded, with the lookups the policy needs.
type set struct {
	name  string
	raw   []*unstructured.Unstructured
	objs  []runtime.Object
	pods  []podOwner // every pod template, with its owner
	hpas  []*autoscalingv2.HorizontalPodAutoscaler
	keda  []*kedav1alpha1.ScaledObject
	pdbs  []*policyv1.PodDisruptionBudget
	svcs  []*corev1.Service
	nps   []*networkingv1.NetworkPolicy
	cms   map[string]*corev1.ConfigMap
	secs  map[string]*corev1.Secret
	cnpg  []*cnpgv1.Cluster
	smons []*monitoringv1.ServiceMonitor
}

// podOwner is a pod template and what runs it.
type podOwner struct {
	kind, name string
	replicas   *int32 // nil when the field is absent
	meta       metav1.ObjectMeta
	spec       corev1.PodSpec
	selector   *metav1.LabelSelector
	hook       bool // a `helm test` pod, run once
}

func (p podOwner) id() string { return p.kind + "/" + p.name }

func sets(t *testing.T) []*set {
	t.Helper()
	s := newScheme(t)
	var out []*set
	for _, name := range sortedKeys(renderings(t)) {
		raw := renderings(t)[name]
		st := &set{name: name, raw: raw, objs: typed(t, s, raw), cms: map[string]*corev1.ConfigMap{}, secs: map[string]*corev1.Secret{}}
		for _, o := range st.objs {
			switch o := o.(type) {
			case *appsv1.Deployment:
				st.pods = append(st.pods, podOwner{"Deployment", o.Name, o.Spec.Replicas, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec, o.Spec.Selector, false})
			case *appsv1.StatefulSet:
				st.pods = append(st.pods, podOwner{"StatefulSet", o.Name, o.Spec.Replicas, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec, o.Spec.Selector, false})
			case *corev1.Pod:
				one := int32(1)
				st.pods = append(st.pods, podOwner{"Pod", o.Name, &one, o.ObjectMeta, o.Spec, nil, o.Annotations["helm.sh/hook"] == "test"})
			case *autoscalingv2.HorizontalPodAutoscaler:
				st.hpas = append(st.hpas, o)
			case *kedav1alpha1.ScaledObject:
				st.keda = append(st.keda, o)
			case *policyv1.PodDisruptionBudget:
				st.pdbs = append(st.pdbs, o)
			case *corev1.Service:
				st.svcs = append(st.svcs, o)
			case *networkingv1.NetworkPolicy:
				st.nps = append(st.nps, o)
			case *corev1.ConfigMap:
				st.cms[o.Name] = o
			case *corev1.Secret:
				st.secs[o.Name] = o
			case *cnpgv1.Cluster:
				st.cnpg = append(st.cnpg, o)
			case *monitoringv1.ServiceMonitor:
				st.smons = append(st.smons, o)
			}
		}
		if len(st.pods) == 0 {
			t.Fatalf("%s: no pod template", name)
		}
		out = append(out, st)
	}
	return out
}

func containers(spec corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
}

// isSpool reports whether a pod runs Spool itself (not PostgreSQL).
func isSpool(p podOwner) bool {
	return strings.HasPrefix(p.meta.Labels["app.kubernetes.io/name"], "spool") ||
		strings.HasPrefix(p.meta.Labels["app.kubernetes.io/name"], "tiny")
}

// TestPodSecurityRestricted runs every pod template through the Pod
// Security Admission's own restricted checks (the code the API server
// enforces with), and adds what restricted leaves optional: a read-only
// root filesystem, and user/group 65532 for Spool's image.
func TestPodSecurityRestricted(t *testing.T) {
	t.Parallel()
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, st := range sets(t) {
		for _, p := range st.pods {
			for _, r := range eval.EvaluatePod(lv, &p.meta, &p.spec) {
				if !r.Allowed {
					t.Errorf("%s: %s: restricted: %s: %s", st.name, p.id(), r.ForbiddenReason, r.ForbiddenDetail)
				}
			}
			if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
				t.Errorf("%s: %s mounts a service account token", st.name, p.id())
			}
			for _, c := range containers(p.spec) {
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s: %s container %s: root filesystem not read-only", st.name, p.id(), c.Name)
				}
				if isSpool(p) && (sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsGroup == nil || *sc.RunAsGroup != 65532) {
					t.Errorf("%s: %s container %s: want runAsUser/runAsGroup 65532", st.name, p.id(), c.Name)
				}
			}
		}
	}
}

// TestPodSecurityCheckBites: the evaluator above does refuse a pod that
// breaks restricted, so a pass means something.
func TestPodSecurityCheckBites(t *testing.T) {
	t.Parallel()
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	p := sets(t)[0].pods[0]
	spec := *p.spec.DeepCopy()
	yes := true
	spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = &yes
	denied := false
	for _, r := range eval.EvaluatePod(lv, &p.meta, &spec) {
		denied = denied || !r.Allowed
	}
	if !denied {
		t.Fatal("allowPrivilegeEscalation: true passed the restricted checks")
	}
}

// TestProbes: every long-running container has startup, liveness and
// readiness probes, and liveness differs from readiness (a liveness probe
// that checks the database would restart every pod in an outage).
func TestProbes(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		for _, p := range st.pods {
			if p.hook {
				continue // a one-shot test pod
			}
			for _, c := range p.spec.Containers {
				where := fmt.Sprintf("%s: %s container %s", st.name, p.id(), c.Name)
				if c.StartupProbe == nil || c.LivenessProbe == nil || c.ReadinessProbe == nil {
					t.Errorf("%s: want startup, liveness and readiness probes", where)
					continue
				}
				if reflect.DeepEqual(c.LivenessProbe, c.ReadinessProbe) || reflect.DeepEqual(c.LivenessProbe.ProbeHandler, c.ReadinessProbe.ProbeHandler) && isSpool(p) {
					t.Errorf("%s: liveness and readiness probe the same thing", where)
				}
				if isSpool(p) && p.kind == "Deployment" && !strings.Contains(p.name, "sink") {
					if h := c.LivenessProbe.HTTPGet; h == nil || h.Path != "/livez" {
						t.Errorf("%s: liveness must be GET /livez (the process), got %+v", where, c.LivenessProbe.ProbeHandler)
					}
					if h := c.ReadinessProbe.HTTPGet; h == nil || h.Path != "/readyz" {
						t.Errorf("%s: readiness must be GET /readyz (able to serve), got %+v", where, c.ReadinessProbe.ProbeHandler)
					}
				}
			}
		}
	}
}

// TestResources: every container, init containers included, requests and
// limits CPU, memory and ephemeral storage.
func TestResources(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		for _, p := range st.pods {
			for _, c := range containers(p.spec) {
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
					req, hasReq := c.Resources.Requests[r]
					lim, hasLim := c.Resources.Limits[r]
					if !hasReq || !hasLim || req.IsZero() || lim.IsZero() {
						t.Errorf("%s: %s container %s: no %s request and limit", st.name, p.id(), c.Name, r)
					} else if req.Cmp(lim) > 0 {
						t.Errorf("%s: %s container %s: %s request above its limit", st.name, p.id(), c.Name, r)
					}
				}
			}
		}
	}
}

// TestGoRuntimeFromLimits: Spool's server containers size GOMAXPROCS and
// GOMEMLIMIT from their own limits.
func TestGoRuntimeFromLimits(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		for _, p := range st.pods {
			if !isSpool(p) || p.kind != "Deployment" || strings.Contains(p.name, "sink") {
				continue
			}
			c := p.spec.Containers[0]
			for env, res := range map[string]string{"GOMAXPROCS": "limits.cpu", "GOMEMLIMIT": "limits.memory"} {
				ok := false
				for _, e := range c.Env {
					if e.Name == env && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
						e.ValueFrom.ResourceFieldRef.Resource == res && e.ValueFrom.ResourceFieldRef.ContainerName == c.Name {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s: %s: %s not from %s", st.name, p.id(), env, res)
				}
			}
		}
	}
}

// ownedByAutoscaler names the workloads whose replica count an HPA or a
// KEDA ScaledObject sets, with the least they keep.
func (st *set) ownedByAutoscaler() map[string]int32 {
	out := map[string]int32{}
	for _, h := range st.hpas {
		if h.Spec.MinReplicas != nil {
			out[h.Spec.ScaleTargetRef.Kind+"/"+h.Spec.ScaleTargetRef.Name] = *h.Spec.MinReplicas
		} else {
			out[h.Spec.ScaleTargetRef.Kind+"/"+h.Spec.ScaleTargetRef.Name] = 1
		}
	}
	for _, k := range st.keda {
		kind := k.Spec.ScaleTargetRef.Kind
		if kind == "" {
			kind = "Deployment"
		}
		minimum := int32(0)
		if k.Spec.MinReplicaCount != nil {
			minimum = *k.Spec.MinReplicaCount
		}
		out[kind+"/"+k.Spec.ScaleTargetRef.Name] = minimum
	}
	return out
}

// TestAutoscalerOwnsReplicas: an autoscaler's target exists, has no
// replicas field (an apply would reset the count), and an HPA and a
// ScaledObject never share one; everything else says its count.
func TestAutoscalerOwnsReplicas(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		owned := st.ownedByAutoscaler()
		if len(owned) != len(st.hpas)+len(st.keda) {
			t.Errorf("%s: two autoscalers share a target", st.name)
		}
		for target := range owned {
			found := false
			for _, p := range st.pods {
				if p.id() == target {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: an autoscaler targets %s, which is not there", st.name, target)
			}
		}
		for _, p := range st.pods {
			if _, ok := owned[p.id()]; ok && p.replicas != nil {
				t.Errorf("%s: %s sets replicas though an autoscaler owns its count", st.name, p.id())
			}
			if _, ok := owned[p.id()]; !ok && p.replicas == nil {
				t.Errorf("%s: %s has neither replicas nor an autoscaler", st.name, p.id())
			}
		}
		for _, h := range st.hpas {
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
				t.Errorf("%s: HPA %s keeps fewer than 2 pods", st.name, h.Name)
			}
			if h.Spec.Behavior == nil || h.Spec.Behavior.ScaleDown == nil || h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds == nil ||
				*h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds < 60 {
				t.Errorf("%s: HPA %s has no scale-down stabilization", st.name, h.Name)
			}
		}
		for _, k := range st.keda {
			if k.Spec.MinReplicaCount == nil || *k.Spec.MinReplicaCount < 1 {
				t.Errorf("%s: ScaledObject %s may scale to zero, leaving no maintenance leader", st.name, k.Name)
			}
			prom := false
			for _, tr := range k.Spec.Triggers {
				if tr.Type == "prometheus" && strings.Contains(tr.Metadata["query"], "spool_queue_depth") &&
					strings.Contains(tr.Metadata["query"], "max by") {
					prom = true
				}
			}
			if !prom {
				t.Errorf("%s: ScaledObject %s does not scale on max-deduplicated spool_queue_depth", st.name, k.Name)
			}
		}
	}
}

// podsMatching returns the pod templates a label selector selects.
func (st *set) podsMatching(sel *metav1.LabelSelector) []podOwner {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return nil
	}
	var out []podOwner
	for _, p := range st.pods {
		if !p.hook && s.Matches(labels.Set(p.meta.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// TestPDBAllowsEviction: each PDB covers a workload, and at the least
// replica count that workload can have, the budget still allows one
// voluntary eviction (a budget that allows none blocks node drains).
func TestPDBAllowsEviction(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		owned := st.ownedByAutoscaler()
		for _, pdb := range st.pdbs {
			pods := st.podsMatching(pdb.Spec.Selector)
			if len(pods) != 1 {
				t.Errorf("%s: PDB %s selects %d workloads, want 1", st.name, pdb.Name, len(pods))
				continue
			}
			p := pods[0]
			least, ok := owned[p.id()]
			if !ok {
				least = *p.replicas
			}
			var allowed int
			switch {
			case pdb.Spec.MinAvailable != nil:
				n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, int(least), true)
				if err != nil {
					t.Fatal(err)
				}
				allowed = int(least) - n
			case pdb.Spec.MaxUnavailable != nil:
				n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, int(least), true)
				if err != nil {
					t.Fatal(err)
				}
				allowed = n
			}
			if allowed < 1 {
				t.Errorf("%s: PDB %s allows no eviction at %d replicas of %s", st.name, pdb.Name, least, p.id())
			}
			if least >= 2 && allowed >= int(least) {
				t.Errorf("%s: PDB %s allows evicting all %d pods of %s", st.name, pdb.Name, least, p.id())
			}
		}
		// Every multi-replica Spool workload has a budget.
		for _, p := range st.pods {
			if !isSpool(p) || p.hook || strings.Contains(p.name, "sink") || strings.HasPrefix(st.name, "chart minimal") {
				continue
			}
			covered := false
			for _, pdb := range st.pdbs {
				for _, q := range st.podsMatching(pdb.Spec.Selector) {
					covered = covered || q.id() == p.id()
				}
			}
			if !covered {
				t.Errorf("%s: no PDB covers %s", st.name, p.id())
			}
		}
	}
}

// TestSelectors: every selector selects what it means to: a workload its
// own pods, a Service, a PDB and a NetworkPolicy at least one pod template,
// a spread constraint the pod it sits in, a ServiceMonitor a Service with
// the port it names.
func TestSelectors(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		for _, p := range st.pods {
			if p.selector != nil {
				s, err := metav1.LabelSelectorAsSelector(p.selector)
				if err != nil || s.Empty() || !s.Matches(labels.Set(p.meta.Labels)) {
					t.Errorf("%s: %s: selector %v does not match its pod labels %v", st.name, p.id(), p.selector, p.meta.Labels)
				}
			}
			for _, c := range p.spec.TopologySpreadConstraints {
				s, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
				if err != nil || !s.Matches(labels.Set(p.meta.Labels)) {
					t.Errorf("%s: %s: spread on %s does not count its own pods", st.name, p.id(), c.TopologyKey)
				}
				if c.TopologyKey == "failure-domain.beta.kubernetes.io/zone" {
					t.Errorf("%s: %s: the deprecated zone label", st.name, p.id())
				}
			}
		}
		for _, svc := range st.svcs {
			if len(svc.Spec.Selector) == 0 {
				t.Errorf("%s: Service %s has no selector", st.name, svc.Name)
				continue
			}
			pods := st.podsMatchingHook(svc.Spec.Selector)
			if len(pods) == 0 {
				t.Errorf("%s: Service %s selects no pod", st.name, svc.Name)
			}
			for _, port := range svc.Spec.Ports {
				if port.TargetPort.Type == intstr.String {
					for _, p := range pods {
						if !hasPort(p.spec, port.TargetPort.StrVal) {
							t.Errorf("%s: Service %s port %s: %s has no container port %q", st.name, svc.Name, port.Name, p.id(), port.TargetPort.StrVal)
						}
					}
				}
			}
		}
		for _, np := range st.nps {
			if len(st.podsMatching(&np.Spec.PodSelector)) == 0 {
				t.Errorf("%s: NetworkPolicy %s selects no pod", st.name, np.Name)
			}
		}
		for _, sm := range st.smons {
			s, _ := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
			found := false
			for _, svc := range st.svcs {
				if s.Matches(labels.Set(svc.Labels)) {
					found = true
					for _, ep := range sm.Spec.Endpoints {
						ok := false
						for _, port := range svc.Spec.Ports {
							ok = ok || port.Name == ep.Port
						}
						if !ok {
							t.Errorf("%s: ServiceMonitor %s: Service %s has no port %q", st.name, sm.Name, svc.Name, ep.Port)
						}
					}
					if svc.Labels[sm.Spec.JobLabel] != "spool" {
						t.Errorf("%s: ServiceMonitor %s: job label %q is %q, the rules expect job=\"spool\"", st.name, sm.Name, sm.Spec.JobLabel, svc.Labels[sm.Spec.JobLabel])
					}
				}
			}
			if !found {
				t.Errorf("%s: ServiceMonitor %s selects no Service", st.name, sm.Name)
			}
		}
	}
}

func (st *set) podsMatchingHook(sel map[string]string) []podOwner {
	var out []podOwner
	for _, p := range st.pods {
		if labels.SelectorFromSet(sel).Matches(labels.Set(p.meta.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

func hasPort(spec corev1.PodSpec, name string) bool {
	for _, c := range containers(spec) {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// TestNetworkPolicyDefaultDeny: every Spool pod is under a policy that
// denies both directions unless another policy allows.
func TestNetworkPolicyDefaultDeny(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		if strings.HasPrefix(st.name, "chart minimal") {
			continue // networkPolicy.enabled=false
		}
		for _, p := range st.pods {
			if !isSpool(p) || p.hook || strings.Contains(p.name, "sink") {
				continue
			}
			denied := false
			for _, np := range st.nps {
				s, _ := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
				if s.Matches(labels.Set(p.meta.Labels)) && len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 && len(np.Spec.PolicyTypes) == 2 {
					denied = true
				}
			}
			if !denied {
				t.Errorf("%s: no default-deny NetworkPolicy covers %s", st.name, p.id())
			}
		}
	}
}

// cnpgAppKeys are the keys of the Secret CloudNativePG generates for a
// Cluster's application user, <cluster>-app.
var cnpgAppKeys = []string{"username", "password", "host", "port", "dbname", "uri", "jdbc-uri", "pgpass"}

// TestReferencesResolve: every Secret and ConfigMap a pod names (env,
// envFrom, volumes) is in the rendering with the key it asks for, or is
// the Secret a CloudNativePG Cluster in the rendering generates.
func TestReferencesResolve(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		secretKey := func(where, name, key string, optional bool) {
			if s, ok := st.secs[name]; ok {
				_, inData := s.Data[key]
				_, inString := s.StringData[key]
				if key != "" && !inData && !inString && !optional {
					t.Errorf("%s: %s: Secret %s has no key %q", st.name, where, name, key)
				}
				return
			}
			for _, c := range st.cnpg {
				if name == c.Name+"-app" {
					if key != "" && !contains(cnpgAppKeys, key) {
						t.Errorf("%s: %s: CloudNativePG's %s has no key %q", st.name, where, name, key)
					}
					return
				}
			}
			t.Errorf("%s: %s: Secret %s is not in the rendering", st.name, where, name)
		}
		cmKey := func(where, name, key string, optional bool) {
			cm, ok := st.cms[name]
			if !ok {
				t.Errorf("%s: %s: ConfigMap %s is not in the rendering", st.name, where, name)
				return
			}
			if _, ok := cm.Data[key]; key != "" && !ok && !optional {
				t.Errorf("%s: %s: ConfigMap %s has no key %q", st.name, where, name, key)
			}
		}
		opt := func(b *bool) bool { return b != nil && *b }
		for _, p := range st.pods {
			for _, c := range containers(p.spec) {
				where := p.id() + " container " + c.Name
				for _, e := range c.EnvFrom {
					if e.SecretRef != nil {
						secretKey(where, e.SecretRef.Name, "", opt(e.SecretRef.Optional))
					}
					if e.ConfigMapRef != nil {
						cmKey(where, e.ConfigMapRef.Name, "", opt(e.ConfigMapRef.Optional))
					}
				}
				for _, e := range c.Env {
					if e.ValueFrom == nil {
						continue
					}
					if r := e.ValueFrom.SecretKeyRef; r != nil {
						secretKey(where+" env "+e.Name, r.Name, r.Key, opt(r.Optional))
					}
					if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
						cmKey(where+" env "+e.Name, r.Name, r.Key, opt(r.Optional))
					}
				}
			}
			for _, v := range p.spec.Volumes {
				where := p.id() + " volume " + v.Name
				if s := v.Secret; s != nil {
					secretKey(where, s.SecretName, "", opt(s.Optional))
					for _, it := range s.Items {
						secretKey(where, s.SecretName, it.Key, opt(s.Optional))
					}
				}
				if c := v.ConfigMap; c != nil {
					cmKey(where, c.Name, "", opt(c.Optional))
					for _, it := range c.Items {
						cmKey(where, c.Name, it.Key, opt(c.Optional))
					}
				}
			}
			if p.spec.ServiceAccountName != "" && p.spec.ServiceAccountName != "default" {
				found := false
				for _, o := range st.raw {
					found = found || (o.GetKind() == "ServiceAccount" && o.GetName() == p.spec.ServiceAccountName)
				}
				if !found && !strings.HasPrefix(st.name, "chart minimal") {
					t.Errorf("%s: %s: ServiceAccount %s is not in the rendering", st.name, p.id(), p.spec.ServiceAccountName)
				}
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestImagesPinned: no image is "latest" or untagged.
func TestImagesPinned(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		for _, p := range st.pods {
			for _, c := range containers(p.spec) {
				img := c.Image
				name := img
				if i := strings.LastIndex(img, "/"); i >= 0 {
					name = img[i+1:]
				}
				if !strings.Contains(name, ":") && !strings.Contains(img, "@sha256:") || strings.HasSuffix(img, ":latest") {
					t.Errorf("%s: %s container %s: image %q is not pinned", st.name, p.id(), c.Name, img)
				}
			}
		}
		for _, c := range st.cnpg {
			if c.Spec.ImageName == "" || strings.HasSuffix(c.Spec.ImageName, ":latest") {
				t.Errorf("%s: Cluster %s: image %q is not pinned", st.name, c.Name, c.Spec.ImageName)
			}
		}
	}
}

// TestShutdownFitsGracePeriod: a Spool pod's terminationGracePeriodSeconds
// exceeds SPOOL_DRAIN_DELAY + SPOOL_SHUTDOWN_TIMEOUT from its ConfigMap, so
// the kubelet never kills a pod that is still finishing deliveries, and
// the shutdown timeout covers the default task timeout (30s).
func TestShutdownFitsGracePeriod(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		for _, p := range st.pods {
			if !isSpool(p) || p.hook || strings.Contains(p.name, "sink") {
				continue
			}
			var env map[string]string
			for _, e := range p.spec.Containers[0].EnvFrom {
				if e.ConfigMapRef != nil && st.cms[e.ConfigMapRef.Name] != nil {
					env = st.cms[e.ConfigMapRef.Name].Data
				}
			}
			drain, err1 := time.ParseDuration(env["SPOOL_DRAIN_DELAY"])
			shutdown, err2 := time.ParseDuration(env["SPOOL_SHUTDOWN_TIMEOUT"])
			if err1 != nil || err2 != nil {
				t.Errorf("%s: %s: SPOOL_DRAIN_DELAY/SPOOL_SHUTDOWN_TIMEOUT not set in its ConfigMap", st.name, p.id())
				continue
			}
			grace := p.spec.TerminationGracePeriodSeconds
			if grace == nil || time.Duration(*grace)*time.Second <= drain+shutdown {
				t.Errorf("%s: %s: terminationGracePeriodSeconds %v not above %s + %s", st.name, p.id(), grace, drain, shutdown)
			}
			if shutdown < 30*time.Second {
				t.Errorf("%s: %s: SPOOL_SHUTDOWN_TIMEOUT %s is shorter than the default task timeout", st.name, p.id(), shutdown)
			}
		}
	}
}

// TestRolloutStrategy: Spool's Deployments roll with no pod down
// (maxUnavailable 0) and a quarter surging.
func TestRolloutStrategy(t *testing.T) {
	t.Parallel()
	for _, st := range sets(t) {
		for _, o := range st.objs {
			d, ok := o.(*appsv1.Deployment)
			if !ok || strings.Contains(d.Name, "sink") {
				continue
			}
			ru := d.Spec.Strategy.RollingUpdate
			if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
				ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" || ru.MaxSurge == nil || ru.MaxSurge.String() != "25%" {
				t.Errorf("%s: Deployment %s: strategy %+v, want RollingUpdate maxUnavailable 0, maxSurge 25%%", st.name, d.Name, d.Spec.Strategy)
			}
		}
	}
}

// TestLabels: every object, and every pod template, carries the
// app.kubernetes.io labels.
func TestLabels(t *testing.T) {
	t.Parallel()
	keys := []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"}
	for _, st := range sets(t) {
		for _, o := range st.raw {
			for _, k := range keys {
				if o.GetLabels()[k] == "" {
					t.Errorf("%s: %s has no label %s", st.name, id(o), k)
				}
			}
		}
		for _, p := range st.pods {
			for _, k := range keys {
				if p.meta.Labels[k] == "" {
					t.Errorf("%s: %s pod template has no label %s", st.name, p.id(), k)
				}
			}
		}
	}
}

// TestBaseAgreesWithChart: the Kustomize base's Deployment and the chart's
// default one agree on what decides how Spool runs: probes, security
// contexts, strategy, resources, grace period, spread, ports; so do the
// production overlay's worker and the chart's.
func TestBaseAgreesWithChart(t *testing.T) {
	t.Parallel()
	s := newScheme(t)
	dep := func(objs []*unstructured.Unstructured, name string) *appsv1.Deployment {
		o := find(objs, "Deployment", name)
		if o == nil {
			t.Fatalf("no Deployment %s", name)
		}
		d, err := decodeStrict(s, o)
		if err != nil {
			t.Fatal(err)
		}
		return d.(*appsv1.Deployment)
	}
	for _, pair := range []struct {
		name        string
		kust, chart *appsv1.Deployment
	}{
		{"base vs chart defaults", dep(overlay(t, "base"), "spool"), dep(chart(t, "defaults"), "spool")},
		{"production api vs chart production", dep(overlay(t, "overlays/production"), "spool-api"), dep(chart(t, "production"), "spool-api")},
		{"production worker vs chart production", dep(overlay(t, "overlays/production"), "spool-worker"), dep(chart(t, "production"), "spool-worker")},
	} {
		k, c := pair.kust, pair.chart
		kp, cp := k.Spec.Template.Spec, c.Spec.Template.Spec
		same := func(what string, a, b any) {
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s: %s differ:\nkustomize: %+v\nchart:     %+v", pair.name, what, a, b)
			}
		}
		same("strategy", k.Spec.Strategy, c.Spec.Strategy)
		same("minReadySeconds", k.Spec.MinReadySeconds, c.Spec.MinReadySeconds)
		same("replicas", k.Spec.Replicas, c.Spec.Replicas)
		same("pod securityContext", kp.SecurityContext, cp.SecurityContext)
		same("terminationGracePeriodSeconds", kp.TerminationGracePeriodSeconds, cp.TerminationGracePeriodSeconds)
		same("automountServiceAccountToken", kp.AutomountServiceAccountToken, cp.AutomountServiceAccountToken)
		same("spread topology keys", spreadShape(kp), spreadShape(cp))
		same("volumes", volumeShape(kp), volumeShape(cp))
		same("init containers", len(kp.InitContainers), len(cp.InitContainers))
		for i := range kp.InitContainers {
			if i < len(cp.InitContainers) {
				ki, ci := kp.InitContainers[i], cp.InitContainers[i]
				same("init "+ki.Name+" args", ki.Args, ci.Args)
				same("init "+ki.Name+" securityContext", ki.SecurityContext, ci.SecurityContext)
				same("init "+ki.Name+" resources", ki.Resources, ci.Resources)
			}
		}
		kc, cc := kp.Containers[0], cp.Containers[0]
		same("args", kc.Args, cc.Args)
		same("ports", kc.Ports, cc.Ports)
		same("startupProbe", kc.StartupProbe, cc.StartupProbe)
		same("livenessProbe", kc.LivenessProbe, cc.LivenessProbe)
		same("readinessProbe", kc.ReadinessProbe, cc.ReadinessProbe)
		same("resources", kc.Resources, cc.Resources)
		same("securityContext", kc.SecurityContext, cc.SecurityContext)
		same("volumeMounts", kc.VolumeMounts, cc.VolumeMounts)
	}
	// And the ConfigMaps agree on the timing that the grace period is
	// computed from.
	kcm, ccm := configMap(t, s, overlay(t, "base"), "spool-"), configMap(t, s, chart(t, "defaults"), "spool")
	for _, k := range []string{"SPOOL_DRAIN_DELAY", "SPOOL_SHUTDOWN_TIMEOUT", "SPOOL_WORKERS", "SPOOL_LOG_LEVEL"} {
		if kcm.Data[k] != ccm.Data[k] {
			t.Errorf("ConfigMap %s: kustomize %q, chart %q", k, kcm.Data[k], ccm.Data[k])
		}
	}
}

func configMap(t *testing.T, s *runtime.Scheme, objs []*unstructured.Unstructured, prefix string) *corev1.ConfigMap {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && strings.HasPrefix(o.GetName(), prefix) && !strings.Contains(o.GetName(), "dashboard") {
			cm, err := decodeStrict(s, o)
			if err != nil {
				t.Fatal(err)
			}
			return cm.(*corev1.ConfigMap)
		}
	}
	t.Fatalf("no ConfigMap %s*", prefix)
	return nil
}

// spreadShape is a spread constraint without its label values (release
// names differ between the two).
func spreadShape(p corev1.PodSpec) []string {
	var out []string
	for _, c := range p.TopologySpreadConstraints {
		out = append(out, fmt.Sprintf("%s skew=%d %s taints=%v keys=%v", c.TopologyKey, c.MaxSkew, c.WhenUnsatisfiable,
			ptrString(c.NodeTaintsPolicy), c.MatchLabelKeys))
	}
	return out
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprint(*p)
}

// volumeShape is the volumes without Secret names (hashed by Kustomize).
func volumeShape(p corev1.PodSpec) []string {
	var out []string
	for _, v := range p.Volumes {
		switch {
		case v.EmptyDir != nil:
			out = append(out, fmt.Sprintf("%s emptyDir %v", v.Name, v.EmptyDir.SizeLimit))
		case v.Secret != nil:
			out = append(out, fmt.Sprintf("%s secret mode=%o items=%d", v.Name, *v.Secret.DefaultMode, len(v.Secret.Items)))
		default:
			out = append(out, v.Name)
		}
	}
	sort.Strings(out) // a Kustomize patch may reorder them
	return out
}
