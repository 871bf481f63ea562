package controlplane

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// DeploymentPods lists the pods selected by the Deployment that are not
// terminating.
func (cp *ControlPlane) DeploymentPods(ctx context.Context, d *appsv1.Deployment) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s selector: %w", d.Name, err)
	}
	list, err := cp.Client.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", d.Name, err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// DeploymentAvailable reports whether the controller has observed the
// latest spec and every one of want replicas is updated and available, with
// no old or extra pods left.
func DeploymentAvailable(d *appsv1.Deployment, want int32) bool {
	s := d.Status
	return s.ObservedGeneration >= d.Generation &&
		d.Spec.Replicas != nil && *d.Spec.Replicas == want &&
		s.Replicas == want && s.UpdatedReplicas == want &&
		s.AvailableReplicas == want && s.ReadyReplicas == want &&
		s.UnavailableReplicas == 0
}

// WaitDeploymentAvailable waits until the Deployment is available at want
// replicas and exactly want of its pods exist, all scheduled and Ready.
// On timeout the error describes the Deployment, its ReplicaSets and pods.
func (cp *ControlPlane) WaitDeploymentAvailable(ctx context.Context, ns, name string, want int32, timeout time.Duration) (*appsv1.Deployment, []corev1.Pod, error) {
	var (
		d    *appsv1.Deployment
		pods []corev1.Pod
	)
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var err error
		d, err = cp.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if !DeploymentAvailable(d, want) {
			return false, nil
		}
		pods, err = cp.DeploymentPods(ctx, d)
		if err != nil || int32(len(pods)) != want {
			return false, nil
		}
		for i := range pods {
			if pods[i].Spec.NodeName == "" || !PodReady(&pods[i]) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return d, pods, fmt.Errorf("deployment %s/%s not available at %d replicas: %w\n%s", ns, name, want, err, cp.Describe(context.Background(), ns, name))
	}
	return d, pods, nil
}

// Describe summarises a Deployment, its ReplicaSets, its pods and the
// namespace's warning events, for failure messages.
func (cp *ControlPlane) Describe(ctx context.Context, ns, name string) string {
	var b strings.Builder
	d, err := cp.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		fmt.Fprintf(&b, "deployment %s: %v\n", name, err)
		return b.String()
	}
	replicas := int32(-1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	fmt.Fprintf(&b, "deployment %s: generation %d observed %d spec.replicas %d status %+v\n",
		name, d.Generation, d.Status.ObservedGeneration, replicas, d.Status)
	rss, err := cp.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, rs := range rss.Items {
			fmt.Fprintf(&b, "  replicaset %s: replicas %d ready %d available %d conditions %+v\n",
				rs.Name, rs.Status.Replicas, rs.Status.ReadyReplicas, rs.Status.AvailableReplicas, rs.Status.Conditions)
		}
	}
	pods, err := cp.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "  pod %s: node %q phase %s ready %v deleting %v\n",
				p.Name, p.Spec.NodeName, p.Status.Phase, PodReady(&p), p.DeletionTimestamp != nil)
			for _, c := range p.Status.Conditions {
				if c.Status != corev1.ConditionTrue && c.Message != "" {
					fmt.Fprintf(&b, "    %s: %s\n", c.Type, c.Message)
				}
			}
		}
	}
	events, err := cp.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning {
				fmt.Fprintf(&b, "  event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

// Spread counts pods per zone (every zone of the cluster, including empty
// ones) and per node (every node, including empty ones).
func (cp *ControlPlane) Spread(pods []corev1.Pod) (zones, nodes map[string]int) {
	zones = map[string]int{}
	nodes = map[string]int{}
	for _, z := range cp.Zones {
		zones[z] = 0
	}
	for _, n := range cp.Nodes {
		nodes[n] = 0
	}
	for _, p := range pods {
		nodes[p.Spec.NodeName]++
		zones[cp.NodeZone[p.Spec.NodeName]]++
	}
	return zones, nodes
}

// Skew is the difference between the largest and smallest count, as the
// scheduler's topology spread defines it over eligible domains.
func Skew(counts map[string]int) int {
	if len(counts) == 0 {
		return 0
	}
	vals := make([]int, 0, len(counts))
	for _, v := range counts {
		vals = append(vals, v)
	}
	return slices.Max(vals) - slices.Min(vals)
}
