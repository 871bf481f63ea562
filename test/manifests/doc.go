// Package manifests tests Spool's Kubernetes deployment files without a
// cluster: every Kustomize overlay and the Helm chart under several value
// sets are rendered (package render), every object is decoded strictly into
// its Go API type (k8s.io/api, and the CRDs' own types for KEDA, the
// prometheus-operator and CloudNativePG), and the result is held to the
// deployment policy: Pod Security Standard restricted, distinct probes,
// requests and limits, autoscaler ownership of replica counts, PDBs that
// allow an eviction, selectors that select, references that resolve, pinned
// images, and a Kustomize base that agrees with the chart's defaults.
//
// It is a module of its own so that Spool's main module never depends on
// Helm, Kustomize or the Kubernetes API packages. Run it with
// `make test-manifests` (part of `make test`).
package manifests
