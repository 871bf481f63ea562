package manifests

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// schedulesFile is where Spool's pods find the schedules file: a
// ConfigMap mounted as a directory, so the kubelet updates it in place.
const (
	schedulesDir  = "/etc/spool/schedules"
	schedulesFile = schedulesDir + "/schedules.yaml"
)

// devSchedules is the dev overlay's example schedules (the list under
// `schedules:`), the chart's "schedules" value set. internal/schedfile's
// TestExampleFiles holds the file to Spool's own parser.
func devSchedules() []any {
	_, file, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "deploy", "kubernetes", "overlays", "dev", "schedules.yaml"))
	if err != nil {
		panic(err)
	}
	var doc struct {
		Schedules []any `json:"schedules"`
	}
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		panic(err)
	}
	return doc.Schedules
}

// TestSchedulesFile: where schedules are declared (the dev overlay, the
// chart with `schedules` set) every Spool container mounts the ConfigMap
// read-only as a directory (no subPath, which would never see an update),
// SPOOL_SCHEDULES_FILE names the file in it, and the file holds the
// example; where they are not (base, production, the chart's defaults)
// there is neither the ConfigMap nor the variable.
func TestSchedulesFile(t *testing.T) {
	t.Parallel()
	want := map[string]string{"kustomize overlays/dev": "spool-schedules", "chart schedules": "spool-schedules"}
	for _, st := range sets(t) {
		cmName, declared := want[st.name]
		var cm *corev1.ConfigMap
		for name, c := range st.cms {
			if strings.HasSuffix(name, "-schedules") {
				cm = c
			}
		}
		if !declared {
			if cm != nil {
				t.Errorf("%s: ConfigMap %s, but no schedules are declared", st.name, cm.Name)
			}
		} else if cm == nil || cm.Name != cmName {
			t.Errorf("%s: no ConfigMap %s", st.name, cmName)
			continue
		} else {
			var doc struct {
				Schedules []map[string]any `json:"schedules"`
			}
			if err := yaml.UnmarshalStrict([]byte(cm.Data["schedules.yaml"]), &doc); err != nil || len(doc.Schedules) != 2 {
				t.Errorf("%s: ConfigMap %s schedules.yaml holds %d schedules (%v), want the example's 2:\n%s",
					st.name, cm.Name, len(doc.Schedules), err, cm.Data["schedules.yaml"])
			}
		}
		for _, p := range st.pods {
			for _, c := range p.spec.Containers {
				if c.Name != "spool" {
					continue
				}
				env := envOf(st, c)
				file, set := env["SPOOL_SCHEDULES_FILE"]
				if !declared {
					if set && file != "" {
						t.Errorf("%s: %s sets SPOOL_SCHEDULES_FILE=%s without a schedules file", st.name, p.id(), file)
					}
					continue
				}
				if file != schedulesFile {
					t.Errorf("%s: %s: SPOOL_SCHEDULES_FILE=%q, want %s", st.name, p.id(), file, schedulesFile)
				}
				var mounted bool
				for _, m := range c.VolumeMounts {
					if m.MountPath != schedulesDir {
						continue
					}
					mounted = true
					if !m.ReadOnly || m.SubPath != "" {
						t.Errorf("%s: %s: %s mounted readOnly=%v subPath=%q, want read-only, whole directory", st.name, p.id(), schedulesDir, m.ReadOnly, m.SubPath)
					}
					var vol *corev1.Volume
					for i := range p.spec.Volumes {
						if p.spec.Volumes[i].Name == m.Name {
							vol = &p.spec.Volumes[i]
						}
					}
					if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != cmName || len(vol.ConfigMap.Items) != 0 {
						t.Errorf("%s: %s: volume %s is not the whole ConfigMap %s: %+v", st.name, p.id(), m.Name, cmName, vol)
					}
				}
				if !mounted {
					t.Errorf("%s: %s does not mount %s", st.name, p.id(), schedulesDir)
				}
			}
		}
	}
}

// envOf is a container's environment: its ConfigMaps' data (envFrom) and
// its literal env values, the latter winning.
func envOf(st *set, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef != nil && st.cms[e.ConfigMapRef.Name] != nil {
			for k, v := range st.cms[e.ConfigMapRef.Name].Data {
				env[k] = v
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}
