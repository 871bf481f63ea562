// Package render turns Spool's Kubernetes deployment files (the Kustomize
// tree under deploy/kubernetes and the Helm chart under deploy/helm/spool)
// into Kubernetes objects, the way `kustomize build` and `helm template`
// would, without a cluster. The manifest tests and the control-plane test
// (test/kubernetes) share it so both look at exactly the same objects.
//
// It only renders and parses: policy and schema checks live in the tests.
// It is a Go module of its own (github.com/spoolhq/spool/test/manifests/render)
// that needs only Helm, Kustomize and apimachinery, so a module that imports
// it (test/kubernetes, through a replace directive) does not inherit the
// operators' API modules that the manifest tests decode with, nor the
// dependency versions those would force.
package render

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// RenderKustomize builds the kustomization in dir as `kustomize build dir`
// does with its defaults (load restrictor: files only from inside the
// kustomization root), straight from disk. Files a secretGenerator reads
// must exist; see RenderKustomizeWithExampleSecrets for a tree whose real
// secret files are git-ignored.
func RenderKustomize(dir string) ([]*unstructured.Unstructured, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: yaml: %w", dir, err)
	}
	return DecodeYAML(out)
}

// RenderKustomizeWithExampleSecrets copies the tree at root (for Spool,
// deploy/kubernetes) to a temporary directory, puts each
// secrets/NAME.example.env in place as secrets/NAME.env where that file is
// missing (the real ones are git-ignored, so a fresh clone has none), and
// renders overlay, a path relative to root such as "overlays/production".
// The copy is removed afterwards. Secret files already present are used as
// they are.
func RenderKustomizeWithExampleSecrets(root, overlay string) ([]*unstructured.Unstructured, error) {
	tmp, err := os.MkdirTemp("", "spool-kustomize-")
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := CopyWithExampleSecrets(root, tmp); err != nil {
		return nil, err
	}
	return RenderKustomize(filepath.Join(tmp, filepath.FromSlash(overlay)))
}

// CopyWithExampleSecrets copies the directory tree src into dst (which
// must exist) and then fills in every missing secrets/NAME.env from its
// secrets/NAME.example.env, so the copy builds without real secrets.
func CopyWithExampleSecrets(src, dst string) error {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(path, target)
	})
	if err != nil {
		return fmt.Errorf("render: copy %s: %w", src, err)
	}
	// The real secret files are git-ignored, so a fresh clone has only the
	// examples: put each in place where its real file is missing.
	err = filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(filepath.Dir(path)) != "secrets" || !strings.HasSuffix(path, ".example.env") {
			return err
		}
		real := strings.TrimSuffix(path, ".example.env") + ".env"
		if _, err := os.Stat(real); err == nil {
			return nil
		}
		return copyFile(path, real)
	})
	if err != nil {
		return fmt.Errorf("render: example secrets: %w", err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ChartOptions says how to render the chart; the zero value is a first
// install of release "spool" into namespace "spool" on Kubernetes v1.36.
type ChartOptions struct {
	ReleaseName string         // default "spool"
	Namespace   string         // default "spool"
	Values      map[string]any // user values, merged over the chart's values.yaml
	// IncludeTests keeps the `helm test` hooks (templates/tests/), which
	// `helm install` does not create; leave it off for objects to apply.
	IncludeTests bool
	KubeVersion  string // .Capabilities.KubeVersion, default "v1.36.0"
}

// RenderChart renders the chart in chartDir with values over its defaults,
// as `helm template spool chartDir -n spool` would, without the test hooks.
// The merged values are checked against values.schema.json first.
func RenderChart(chartDir string, values map[string]any) ([]*unstructured.Unstructured, error) {
	return RenderChartWithOptions(chartDir, ChartOptions{Values: values})
}

// RenderChartWithOptions is RenderChart with a chosen release, namespace,
// Kubernetes version and whether to keep the test hooks.
func RenderChartWithOptions(chartDir string, opts ChartOptions) ([]*unstructured.Unstructured, error) {
	files, err := RenderChartFiles(chartDir, opts)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var objs []*unstructured.Unstructured
	for _, name := range names {
		o, err := DecodeYAML([]byte(files[name]))
		if err != nil {
			return nil, fmt.Errorf("render: %s: %w", name, err)
		}
		objs = append(objs, o...)
	}
	return objs, nil
}

// RenderChartFiles renders the chart into its manifests by template file
// name (NOTES.txt and partials left out), the form `helm lint` and the
// tests that look at one template need.
func RenderChartFiles(chartDir string, opts ChartOptions) (map[string]string, error) {
	if opts.ReleaseName == "" {
		opts.ReleaseName = "spool"
	}
	if opts.Namespace == "" {
		opts.Namespace = "spool"
	}
	if opts.KubeVersion == "" {
		opts.KubeVersion = "v1.36.0"
	}
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, fmt.Errorf("render: load chart %s: %w", chartDir, err)
	}
	kv, err := chartutil.ParseKubeVersion(opts.KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("render: kube version: %w", err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	if ch.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, kv.String()) {
		return nil, fmt.Errorf("render: chart requires kubeVersion %s, not %s", ch.Metadata.KubeVersion, kv)
	}
	vals := opts.Values
	if vals == nil {
		vals = map[string]any{}
	}
	// ToRenderValues coalesces the user values over values.yaml and checks
	// the result against values.schema.json, as `helm install` does.
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: opts.ReleaseName, Namespace: opts.Namespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, fmt.Errorf("render: values: %w", err)
	}
	var eng engine.Engine
	eng.Strict = false // missing keys render empty, as in helm template
	out, err := eng.Render(ch, rv)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	files := map[string]string{}
	prefix := ch.Name() + "/templates/"
	for name, text := range out {
		base := filepath.Base(name)
		switch {
		case !strings.HasPrefix(name, prefix):
			continue // a subchart's, none today
		case strings.HasSuffix(name, "NOTES.txt"), strings.HasPrefix(base, "_"):
			continue
		case strings.HasPrefix(name, prefix+"tests/") && !opts.IncludeTests:
			continue
		case strings.TrimSpace(text) == "":
			continue
		}
		files[strings.TrimPrefix(name, ch.Name()+"/")] = text
	}
	return files, nil
}

// Notes renders the chart's NOTES.txt with the given options.
func Notes(chartDir string, opts ChartOptions) (string, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return "", fmt.Errorf("render: load chart %s: %w", chartDir, err)
	}
	rv, err := chartutil.ToRenderValues(ch, opts.Values, chartutil.ReleaseOptions{
		Name: or(opts.ReleaseName, "spool"), Namespace: or(opts.Namespace, "spool"), Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return "", fmt.Errorf("render: values: %w", err)
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return "", fmt.Errorf("render: %w", err)
	}
	return out[ch.Name()+"/templates/NOTES.txt"], nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Chart loads the chart in dir, for callers that need its metadata.
func Chart(dir string) (*chart.Chart, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("render: load chart %s: %w", dir, err)
	}
	return ch, nil
}

// DecodeYAML splits a multi-document YAML stream into objects, skipping
// empty documents. Every document must have apiVersion and kind.
func DecodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("render: document %d: %w", i, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("render: document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetAPIVersion() == "" || u.GetKind() == "" {
			return nil, fmt.Errorf("render: document %d has no apiVersion or kind:\n%s", i, doc)
		}
		objs = append(objs, u)
	}
}

// ToYAML writes objects as one multi-document YAML stream, for kubectl or
// for a human reading a failed test.
func ToYAML(objs []*unstructured.Unstructured) ([]byte, error) {
	var b bytes.Buffer
	for _, o := range objs {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, fmt.Errorf("render: %s %s: %w", o.GetKind(), o.GetName(), err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}

// Without returns the objects whose kind is none of kinds, for a caller
// that cannot apply some (say, a test API server without the operators'
// CRDs).
func Without(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		skip := false
		for _, k := range kinds {
			skip = skip || o.GetKind() == k
		}
		if !skip {
			out = append(out, o)
		}
	}
	return out
}
