package kubernetes_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// harnessManifests is a small, hand-written stand-in for Spool's rendered
// manifests, in their shape: an API Deployment owned by an HPA and a worker
// Deployment owned by a KEDA ScaledObject, neither setting replicas; a PDB
// each; a Service; PSS restricted pods with probes, resources, a zero-
// unavailability rolling update and zone/host spread. It proves the harness
// on its own, independent of deploy/.
const harnessManifests = `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: spool
  labels: {app.kubernetes.io/name: spool}
automountServiceAccountToken: false
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: spool
  labels: {app.kubernetes.io/name: spool}
data:
  SPOOL_LOG_LEVEL: info
---
apiVersion: v1
kind: Service
metadata:
  name: spool
  labels: {app.kubernetes.io/name: spool}
spec:
  type: LoadBalancer
  selector: {app.kubernetes.io/name: spool, app.kubernetes.io/component: api}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 9090, targetPort: admin}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: spool-api
  labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: api}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: api}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 25%}
  template:
    metadata:
      labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: api}
    spec:
` + podSpec + `
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: spool-api
  labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: api}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: spool-api}
  minReplicas: 2
  maxReplicas: 10
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {type: Utilization, averageUtilization: 50}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: spool-api
  labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: api}
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: api}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: spool-worker
  labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: worker}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: worker}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 25%}
  template:
    metadata:
      labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: worker}
    spec:
` + podSpec + `
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: spool-worker
  labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: worker}
spec:
  scaleTargetRef: {name: spool-worker}
  minReplicaCount: 1
  maxReplicaCount: 10
  triggers:
  - type: prometheus
    metadata: {serverAddress: "http://prometheus.monitoring:9090", query: "sum(spool_queue_depth)", threshold: "100"}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: spool-worker
  labels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: worker}
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app.kubernetes.io/name: spool, app.kubernetes.io/component: worker}
`

// podSpec is indented to sit under a Deployment's spec.template.spec. The
// zone constraint is hard; matchLabelKeys keeps each revision's spread
// apart from the previous one's during a rollout.
const podSpec = `      serviceAccountName: spool
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 330
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app.kubernetes.io/name: spool}
        matchLabelKeys: [pod-template-hash, app.kubernetes.io/component]
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: ScheduleAnyway
        labelSelector:
          matchLabels: {app.kubernetes.io/name: spool}
        matchLabelKeys: [pod-template-hash, app.kubernetes.io/component]
      containers:
      - name: spool
        image: ghcr.io/spoolhq/spool:v0.1.0
        args: [serve]
        ports:
        - {name: http, containerPort: 8000}
        - {name: admin, containerPort: 9090}
        envFrom:
        - configMapRef: {name: spool}
        env:
        - name: GOMAXPROCS
          valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: "1"}}
        - name: GOMEMLIMIT
          valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: "1"}}
        startupProbe:
          httpGet: {path: /healthz, port: admin}
          periodSeconds: 2
          failureThreshold: 30
        livenessProbe:
          httpGet: {path: /healthz, port: admin}
          periodSeconds: 10
        readinessProbe:
          httpGet: {path: /readyz, port: admin}
          periodSeconds: 5
        resources:
          requests: {cpu: 250m, memory: 128Mi, ephemeral-storage: 64Mi}
          limits: {cpu: "1", memory: 512Mi, ephemeral-storage: 256Mi}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts:
        - {name: tmp, mountPath: /tmp}
      volumes:
      - name: tmp
        emptyDir: {sizeLimit: 64Mi}`

// decodeManifests splits a multi-document YAML stream into objects.
func decodeManifests(s string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(s), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("decode manifests: %w", err)
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}
