// Package controlplane starts a real Kubernetes control plane inside the test
// process: embedded etcd, kube-apiserver, kube-scheduler and
// kube-controller-manager from k8s.io/kubernetes, with kwok's controller
// playing the kubelet for a set of simulated nodes spread over zones.
//
// Nothing here is a fake of the API: admission (Pod Security included),
// validation, server-side apply, scheduling (topology spread), the
// Deployment/ReplicaSet/disruption controllers and the eviction API are the
// real code. What is simulated is the node: kwok marks scheduled pods
// Running and Ready and deletes terminating ones at once, and renews node
// leases as heartbeats. Probes, images and containers are never run.
//
// The test server packages locate their serving certificates next to their
// own source files, so test binaries using this package must not be built
// with -trimpath.
package controlplane

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	etcdtesting "k8s.io/apiserver/pkg/storage/etcd3/testserver"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	apiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
	kcmtesting "k8s.io/kubernetes/cmd/kube-controller-manager/app/testing"
	schedulertesting "k8s.io/kubernetes/cmd/kube-scheduler/app/testing"
	"k8s.io/kubernetes/test/utils/ktesting"
	"k8s.io/kubernetes/test/utils/ktesting/initoption"
	"k8s.io/kubernetes/test/utils/kubeconfig"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodeheartbeat "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
	"sigs.k8s.io/kwok/pkg/apis/internalversion"
	kwokconfig "sigs.k8s.io/kwok/pkg/config"
	kwokcontrollers "sigs.k8s.io/kwok/pkg/kwok/controllers"
	kwoklog "sigs.k8s.io/kwok/pkg/log"
	kwokclient "sigs.k8s.io/kwok/pkg/utils/client"
)

// Well-known node labels the scheduler's topology spread reads.
const (
	LabelZone     = "topology.kubernetes.io/zone"
	LabelHostname = "kubernetes.io/hostname"
	// LabelKwok marks the simulated nodes; kwok manages exactly these.
	LabelKwok = "spool.test/kwok"
)

// Controllers are the kube-controller-manager controllers the control plane
// runs: the workload chain (Deployment → ReplicaSet → Pod), the disruption
// controller that computes PodDisruptionBudget status for the eviction API,
// the HorizontalPodAutoscaler (which holds a Deployment at minReplicas even
// without a metrics API), Jobs, EndpointSlices for Services, garbage
// collection of replaced ReplicaSets' pods, namespace deletion, and the
// default ServiceAccount that ServiceAccount admission requires, and node
// lifecycle: the TaintNodesByCondition admission plugin registers every node
// with a not-ready NoSchedule taint, and only this controller lifts it once
// the node reports Ready (and puts it back if kwok's lease heartbeats stop).
var Controllers = []string{
	"node-lifecycle-controller",
	"deployment-controller",
	"replicaset-controller",
	"disruption-controller",
	"horizontal-pod-autoscaler-controller",
	"job-controller",
	"endpointslice-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"serviceaccount-controller",
}

// Options shapes the simulated cluster.
type Options struct {
	// Zones are the topology.kubernetes.io/zone values; default a, b, c.
	Zones []string
	// NodesPerZone is the number of nodes in each zone; default 2.
	NodesPerZone int
	// NodeCapacity is each node's capacity and allocatable; the default is
	// 4 CPU, 16Gi memory, 100Gi ephemeral storage and 110 pods.
	NodeCapacity corev1.ResourceList
}

// ControlPlane is a running control plane with simulated nodes. It is torn
// down by the cleanup of the test that started it.
type ControlPlane struct {
	// Config is a superuser (system:masters) client configuration.
	Config *rest.Config
	// Client and Dynamic are clients built from Config.
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Mapper resolves kinds to resources; Reset it after installing CRDs.
	Mapper *restmapper.DeferredDiscoveryRESTMapper
	// Nodes are the simulated node names, and NodeZone maps each to its zone.
	Nodes    []string
	NodeZone map[string]string
	Zones    []string

	kubeconfigPath string
	kwokBase       context.Context // parent of each kwok run, with its logger
	kwokMu         sync.Mutex
	kwokStop       context.CancelFunc // nil while the kubelets are paused
}

// PauseKubelets stops the simulated kubelets (kwok), as if every node's
// kubelet hung: pods already Running stay Ready, new pods are scheduled but
// never become Ready, and terminating pods are not removed. Node leases are
// not renewed either, so a pause must stay well under the 40s lease.
func (cp *ControlPlane) PauseKubelets() {
	cp.stopKubelets()
	// kwok's workers notice the cancellation asynchronously; let a status
	// patch already on the wire land before the caller relies on the pause.
	time.Sleep(300 * time.Millisecond)
}

func (cp *ControlPlane) stopKubelets() {
	cp.kwokMu.Lock()
	defer cp.kwokMu.Unlock()
	if cp.kwokStop != nil {
		cp.kwokStop()
		cp.kwokStop = nil
	}
}

// ResumeKubelets starts the simulated kubelets (again): kwok lists every
// pod and node and catches up.
func (cp *ControlPlane) ResumeKubelets() error {
	cp.kwokMu.Lock()
	defer cp.kwokMu.Unlock()
	if cp.kwokStop != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(cp.kwokBase)
	if err := startKwok(ctx, cp.kubeconfigPath); err != nil {
		cancel()
		return fmt.Errorf("start kwok: %w", err)
	}
	cp.kwokStop = cancel
	return nil
}

// Start brings up etcd, kube-apiserver, kube-scheduler,
// kube-controller-manager and kwok, registers the simulated nodes and waits
// until every node is Ready. It calls t.Fatal on failure and registers the
// teardown with t.Cleanup.
func Start(t *testing.T, opts Options) *ControlPlane {
	t.Helper()
	if len(opts.Zones) == 0 {
		opts.Zones = []string{"zone-a", "zone-b", "zone-c"}
	}
	if opts.NodesPerZone == 0 {
		opts.NodesPerZone = 2
	}
	if opts.NodeCapacity == nil {
		opts.NodeCapacity = corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse("4"),
			corev1.ResourceMemory:           resource.MustParse("16Gi"),
			corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
			corev1.ResourcePods:             resource.MustParse("110"),
		}
	}

	logPath, logFile, err := redirectLogs(t)
	if err != nil {
		t.Fatalf("controlplane: %v", err)
	}
	// The components log through klog to logPath, not through the test's
	// log; tCtx is cancelled when the test ends.
	tCtx := ktesting.Init(t, initoption.PerTestOutput(false))

	// Loopback by address: "localhost" may resolve to ::1 first, where
	// etcd does not listen.
	etcdConfig := etcdtesting.NewTestConfig(t)
	for _, urls := range [][]url.URL{etcdConfig.ListenClientUrls, etcdConfig.AdvertiseClientUrls, etcdConfig.ListenPeerUrls, etcdConfig.AdvertisePeerUrls} {
		for i := range urls {
			urls[i].Host = strings.Replace(urls[i].Host, "localhost", "127.0.0.1", 1)
		}
	}
	etcdConfig.InitialCluster = etcdConfig.InitialClusterFromName(etcdConfig.Name)
	// etcd's own log joins the components' (its shutdown errors, expected
	// at teardown, would otherwise end every verbose test run).
	etcdConfig.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logFile), zapcore.WarnLevel,
	)).Named("etcd-server"))
	etcdClient := etcdtesting.RunEtcd(t, etcdConfig)
	storage := storagebackend.NewDefaultConfig("/registry", nil)
	storage.Transport.ServerList = etcdClient.Endpoints()

	apiFlags := []string{
		// No kubelet answers on 127.0.0.1 for the kubernetes Service.
		"--endpoint-reconciler-type=none",
	}
	api, err := apiservertesting.StartTestServer(tCtx, apiservertesting.NewDefaultTestServerOptions(), apiFlags, storage)
	if err != nil {
		t.Fatalf("controlplane: start kube-apiserver: %v", err)
	}
	t.Cleanup(api.TearDownFn)
	t.Logf("controlplane: kube-apiserver at %s, component logs in %s", api.ClientConfig.Host, logPath)

	cfg := rest.CopyConfig(api.ClientConfig)
	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfig.CreateKubeConfig(cfg), kubeconfigPath); err != nil {
		t.Fatalf("controlplane: write kubeconfig: %v", err)
	}

	sched, err := schedulertesting.StartTestServer(t, tCtx, []string{
		"--kubeconfig=" + kubeconfigPath,
		"--leader-elect=false",
		"--authentication-skip-lookup=true",
	})
	if err != nil {
		t.Fatalf("controlplane: start kube-scheduler: %v", err)
	}
	t.Cleanup(sched.TearDownFn)

	kcmFlags := []string{
		"--kubeconfig=" + kubeconfigPath,
		"--leader-elect=false",
		"--authentication-skip-lookup=true",
		"--controllers=" + strings.Join(Controllers, ","),
		// Seconds, not the production 15s, so a test sees the HPA act.
		"--horizontal-pod-autoscaler-sync-period=1s",
		"--concurrent-deployment-syncs=5",
		"--concurrent-replicaset-syncs=5",
	}
	kcm, err := kcmtesting.StartTestServer(t, tCtx, kcmFlags)
	if err != nil {
		t.Fatalf("controlplane: start kube-controller-manager: %v", err)
	}
	t.Cleanup(kcm.TearDownFn)

	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("controlplane: client: %v", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("controlplane: dynamic client: %v", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatalf("controlplane: discovery client: %v", err)
	}

	cp := &ControlPlane{
		Config:   cfg,
		Client:   client,
		Dynamic:  dyn,
		Mapper:   restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)),
		NodeZone: map[string]string{},
		Zones:    opts.Zones,
	}

	// kwok stops before the API server does (cleanups run last-in,
	// first-out), so it never retries against a server going away.
	cp.kwokBase = kwoklog.NewContext(tCtx, kwoklog.NewLogger(logFile, kwoklog.LevelInfo))
	cp.kubeconfigPath = kubeconfigPath
	t.Cleanup(cp.stopKubelets)
	if err := cp.ResumeKubelets(); err != nil {
		t.Fatalf("controlplane: %v", err)
	}
	if err := cp.registerNodes(tCtx, opts); err != nil {
		t.Fatalf("controlplane: %v", err)
	}
	return cp
}

// startKwok runs kwok's node and pod controllers in-process against the
// kubeconfig, managing the nodes labelled LabelKwok. The stages are kwok's
// own defaults: nodes initialise to Ready and heartbeat through leases,
// pods become Running/Ready once scheduled and vanish once deleted.
func startKwok(ctx context.Context, kubeconfigPath string) error {
	nodeStages, err := parseStages(nodefast.DefaultNodeInit, nodeheartbeat.DefaultNodeHeartbeatWithLease)
	if err != nil {
		return err
	}
	podStages, err := parseStages(podfast.DefaultPodReady, podfast.DefaultPodComplete, podfast.DefaultPodDelete)
	if err != nil {
		return err
	}

	cs, err := kwokclient.NewClientset("", kubeconfigPath)
	if err != nil {
		return fmt.Errorf("kwok clientset: %w", err)
	}
	restConfig, err := cs.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("kwok rest config: %w", err)
	}
	dyn, err := cs.ToDynamicClient()
	if err != nil {
		return fmt.Errorf("kwok dynamic client: %w", err)
	}
	mapper, err := cs.ToRESTMapper()
	if err != nil {
		return fmt.Errorf("kwok rest mapper: %w", err)
	}
	restClient, err := rest.RESTClientFor(restConfig)
	if err != nil {
		return fmt.Errorf("kwok rest client: %w", err)
	}
	typed, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return fmt.Errorf("kwok typed client: %w", err)
	}

	ctr, err := kwokcontrollers.NewController(kwokcontrollers.Config{
		Clock:                        clock.RealClock{},
		DynamicClient:                dyn,
		RESTClient:                   restClient,
		RESTMapper:                   mapper,
		ImpersonatingDynamicClient:   cs.ToImpersonatingDynamicClient(),
		ImpersonatingTypedClient:     cs.ToImpersonatingTypedClient(),
		TypedClient:                  typed,
		ManageNodesWithLabelSelector: LabelKwok,
		// Pod IPs are bookkeeping only: nothing ever connects to them.
		CIDR:   "10.244.0.0/16",
		NodeIP: "127.0.0.1",
		LocalStages: map[internalversion.StageResourceRef][]*internalversion.Stage{
			{APIGroup: "v1", Kind: "Node"}: nodeStages,
			{APIGroup: "v1", Kind: "Pod"}:  podStages,
		},
		PodPlayStageParallelism:   4,
		NodePlayStageParallelism:  2,
		NodeLeaseDurationSeconds:  40,
		NodeLeaseParallelism:      2,
		PodsOnNodeSyncParallelism: 2,
		ID:                        "spool-e2e-kwok",
	})
	if err != nil {
		return fmt.Errorf("kwok controller: %w", err)
	}
	if err := ctr.Start(ctx); err != nil {
		return fmt.Errorf("kwok controller start: %w", err)
	}
	return nil
}

func parseStages(raw ...string) ([]*internalversion.Stage, error) {
	out := make([]*internalversion.Stage, 0, len(raw))
	for _, r := range raw {
		s, err := kwokconfig.UnmarshalWithType[*internalversion.Stage](r)
		if err != nil {
			return nil, fmt.Errorf("kwok stage: %w", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// registerNodes creates the simulated nodes, labelled like a cloud
// provider's (zone, hostname), and waits for kwok to report them Ready.
func (cp *ControlPlane) registerNodes(ctx context.Context, opts Options) error {
	for _, zone := range opts.Zones {
		for i := range opts.NodesPerZone {
			name := zone + "-node-" + strconv.Itoa(i)
			node := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{
					Name: name,
					Labels: map[string]string{
						LabelZone:                 zone,
						LabelHostname:             name,
						"kubernetes.io/os":        "linux",
						"kubernetes.io/arch":      "amd64",
						"node.kubernetes.io/role": "worker",
						LabelKwok:                 "true",
					},
					Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
				},
				Status: corev1.NodeStatus{
					Capacity:    opts.NodeCapacity.DeepCopy(),
					Allocatable: opts.NodeCapacity.DeepCopy(),
				},
			}
			if _, err := cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create node %s: %w", name, err)
			}
			cp.Nodes = append(cp.Nodes, name)
			cp.NodeZone[name] = zone
		}
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range cp.Nodes {
			n, err := cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) {
					return false, err
				}
				return false, nil
			}
			if !NodeReady(n) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("nodes not Ready: %w", err)
	}
	return nil
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RESTMapping resolves a kind, refreshing discovery once if the kind is not
// yet known (a CRD installed after the last lookup).
func (cp *ControlPlane) RESTMapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := cp.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil && meta.IsNoMatchError(err) {
		cp.Mapper.Reset()
		m, err = cp.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("rest mapping %s: %w", gvk, err)
	}
	return m, nil
}

// LogEnv names a file to keep the control plane's logs in; by default they
// go to a temporary file whose tail is printed if the test fails.
const LogEnv = "SPOOL_E2E_K8S_LOG"

// redirectLogs sends klog (which every component, etcd's client and gRPC
// log through) to a file instead of stderr: a healthy run logs thousands
// of lines nobody reads.
func redirectLogs(t *testing.T) (string, io.Writer, error) {
	path := os.Getenv(LogEnv)
	if path == "" {
		path = filepath.Join(t.TempDir(), "control-plane.log")
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("control plane log: %w", err)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL", "one_output": "true"} {
		if err := fs.Set(k, v); err != nil {
			return "", nil, fmt.Errorf("klog flag %s: %w", k, err)
		}
	}
	klog.SetOutput(f)
	// Writes after the cleanup (a component still shutting down) are
	// dropped rather than sent to a closed file.
	lw := &lockedWriter{w: f}
	t.Cleanup(func() {
		klog.Flush()
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", path, tail(path, 80))
		}
		klog.SetOutput(io.Discard)
		lw.close()
		f.Close()
	})
	return path, lw, nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lockedWriter serialises kwok's writes with the file's closing.
type lockedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return len(p), nil
	}
	return l.w.Write(p)
}

func (l *lockedWriter) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}
