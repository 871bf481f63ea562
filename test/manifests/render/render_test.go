package render

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecodeYAML(t *testing.T) {
	t.Parallel()
	objs, err := DecodeYAML([]byte("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# only a comment\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetName() != "a" || objs[1].GetKind() != "Secret" {
		t.Fatalf("got %d objects: %v", len(objs), objs)
	}
	if len(Without(objs, "Secret")) != 1 {
		t.Error("Without kept the Secret")
	}
	if _, err := DecodeYAML([]byte("metadata:\n  name: x\n")); err == nil {
		t.Error("a document without apiVersion and kind decoded")
	}
	back, err := ToYAML(objs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := DecodeYAML(back)
	if err != nil || len(again) != 2 {
		t.Fatalf("round trip: %d objects, %v", len(again), err)
	}
}

// TestExampleSecrets: a missing secrets/X.env is filled from its example,
// an existing one is left alone, and the generator sees the values.
func TestExampleSecrets(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	write := func(path, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(src, "base", "kustomization.yaml"), "secretGenerator:\n  - name: s\n    envs: [secrets/s.env]\n")
	write(filepath.Join(src, "base", "secrets", "s.example.env"), "key=example\n")
	write(filepath.Join(src, "over", "kustomization.yaml"), "resources: [../base]\nsecretGenerator:\n  - name: t\n    envs: [secrets/t.env]\n")
	write(filepath.Join(src, "over", "secrets", "t.example.env"), "key=example\n")
	write(filepath.Join(src, "over", "secrets", "t.env"), "key=real\n")

	if _, err := RenderKustomize(filepath.Join(src, "base")); err == nil {
		t.Fatal("rendered without secrets/s.env")
	}
	objs, err := RenderKustomizeWithExampleSecrets(src, "over")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range objs {
		data, _ := o.Object["data"].(map[string]any)
		got[strings.SplitN(o.GetName(), "-", 2)[0]], _ = data["key"].(string)
	}
	// base64 of "example" and "real"
	if got["s"] != "ZXhhbXBsZQ==" || got["t"] != "cmVhbA==" {
		t.Errorf("secret values %v: want s from the example, t from the real file", got)
	}
	if _, err := os.Stat(filepath.Join(src, "base", "secrets", "s.env")); err == nil {
		t.Error("the source tree was written to")
	}
}
