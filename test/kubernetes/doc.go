// Package kubernetes holds Spool's end-to-end Kubernetes tests: the
// rendered manifests applied to a real in-process control plane (see
// package controlplane). It is a separate Go module so that the main module
// does not carry k8s.io/kubernetes and its dependencies.
package kubernetes
