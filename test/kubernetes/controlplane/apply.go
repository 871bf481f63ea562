package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// RestrictedNamespace creates a namespace that enforces (and warns and
// audits at) the Pod Security Standard "restricted" profile, latest version.
func (cp *ControlPlane) RestrictedNamespace(ctx context.Context, name string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: name,
		Labels: map[string]string{
			"pod-security.kubernetes.io/enforce":         "restricted",
			"pod-security.kubernetes.io/enforce-version": "latest",
			"pod-security.kubernetes.io/warn":            "restricted",
			"pod-security.kubernetes.io/warn-version":    "latest",
			"pod-security.kubernetes.io/audit":           "restricted",
			"pod-security.kubernetes.io/audit-version":   "latest",
		},
	}}
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	// ServiceAccount admission refuses pods until the namespace's default
	// ServiceAccount exists; the serviceaccount controller creates it.
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cp.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s: default ServiceAccount never appeared: %w", name, err)
	}
	return nil
}

// ApplyResult is what the API server said about one applied object.
type ApplyResult struct {
	Object   *unstructured.Unstructured // as stored, after apply
	Warnings []string                   // Warning headers (deprecations, Pod Security warn mode, …)
}

// Apply sends obj with server-side apply (force, so re-applies win over
// controllers' fields only where this manager set them) and strict field
// validation: an unknown or duplicated field is an error, not a silent
// drop. A namespaced object is placed in namespace whatever its manifest
// says.
func (cp *ControlPlane) Apply(ctx context.Context, obj *unstructured.Unstructured, namespace, fieldManager string) (ApplyResult, error) {
	gvk := obj.GroupVersionKind()
	mapping, err := cp.RESTMapping(gvk)
	if err != nil {
		return ApplyResult{}, err
	}
	obj = obj.DeepCopy()

	rec := &warningRecorder{}
	cfg := rest.CopyConfig(cp.Config)
	cfg.WarningHandler = rec
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply: client: %w", err)
	}
	var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		obj.SetNamespace(namespace)
		ri = dyn.Resource(mapping.Resource).Namespace(namespace)
	}
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply %s %s: marshal: %w", gvk.Kind, obj.GetName(), err)
	}
	force := true
	out, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		FieldManager:    fieldManager,
		Force:           &force,
		FieldValidation: metav1.FieldValidationStrict,
	})
	res := ApplyResult{Object: out, Warnings: rec.list()}
	if err != nil {
		return res, fmt.Errorf("apply %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return res, nil
}

type warningRecorder struct {
	mu       sync.Mutex
	warnings []string
}

func (w *warningRecorder) HandleWarningHeader(code int, agent, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.warnings = append(w.warnings, text)
}

func (w *warningRecorder) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.warnings...)
}

// Served reports whether the API server serves gvk.
func (cp *ControlPlane) Served(gvk schema.GroupVersionKind) (bool, error) {
	_, err := cp.RESTMapping(gvk)
	if err == nil {
		return true, nil
	}
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return false, err
}

// InstallPermissiveCRD installs a CustomResourceDefinition for gvk whose
// schema accepts any object (x-kubernetes-preserve-unknown-fields), and
// waits until it is established and discoverable. It stands in for a CRD
// whose published manifest is not available offline: the API server then
// checks names, metadata and apply semantics for such objects, but not
// their spec. The plural is the lower-cased kind plus "s", which is right
// for the operator kinds Spool uses (ScaledObject, TriggerAuthentication,
// ServiceMonitor, PodMonitor, PrometheusRule, Cluster, Pooler).
func (cp *ControlPlane) InstallPermissiveCRD(ctx context.Context, gvk schema.GroupVersionKind, namespaced bool) error {
	plural := strings.ToLower(gvk.Kind) + "s"
	scope := apiextensionsv1.ClusterScoped
	if namespaced {
		scope = apiextensionsv1.NamespaceScoped
	}
	preserve := true
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: plural + "." + gvk.Group},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: gvk.Group,
			Names: apiextensionsv1.CustomResourceDefinitionNames{
				Plural:   plural,
				Singular: strings.ToLower(gvk.Kind),
				Kind:     gvk.Kind,
				ListKind: gvk.Kind + "List",
			},
			Scope: scope,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name:    gvk.Version,
				Served:  true,
				Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{
					OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type:                   "object",
						XPreserveUnknownFields: &preserve,
					},
				},
				Subresources: &apiextensionsv1.CustomResourceSubresources{
					Status: &apiextensionsv1.CustomResourceSubresourceStatus{},
				},
			}},
		},
	}
	client, err := apiextensionsclient.NewForConfig(cp.Config)
	if err != nil {
		return fmt.Errorf("crd client: %w", err)
	}
	crds := client.ApiextensionsV1().CustomResourceDefinitions()
	if _, err := crds.Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create crd %s: %w", crd.Name, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := crds.Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range got.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				cp.Mapper.Reset()
				served, err := cp.Served(gvk)
				return served, err
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("crd %s not established: %w", crd.Name, err)
	}
	return nil
}
