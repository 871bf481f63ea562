package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The files under test, from this package's directory.
const (
	helmValuesFile  = "../../deploy/logging/filebeat-values.yaml"
	composeFileName = "../../deploy/logging/filebeat.compose.yml"
)

// decodeStrict decodes YAML into v, failing on any key v does not declare:
// a typo such as `expand_key` or `filebeatconfig` must fail here, because
// Filebeat and Helm would ignore it silently.
func decodeStrict(t *testing.T, name string, data []byte, v any) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// The parts of the elastic/filebeat chart's values that Spool sets.
type helmValues struct {
	Daemonset struct {
		Enabled      bool     `yaml:"enabled"`
		ExtraEnvs    []envVar `yaml:"extraEnvs"`
		SecretMounts []struct {
			Name       string `yaml:"name"`
			SecretName string `yaml:"secretName"`
			Path       string `yaml:"path"`
		} `yaml:"secretMounts"`
		SecurityContext struct {
			RunAsUser                int   `yaml:"runAsUser"`
			Privileged               bool  `yaml:"privileged"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
				Add  []string `yaml:"add"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		Tolerations    []map[string]string `yaml:"tolerations"`
		FilebeatConfig map[string]string   `yaml:"filebeatConfig"`
	} `yaml:"daemonset"`
	Deployment struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"deployment"`
	Image            string `yaml:"image"`
	ImageTag         string `yaml:"imageTag"`
	ClusterRoleRules []struct {
		APIGroups []string `yaml:"apiGroups"`
		Resources []string `yaml:"resources"`
		Verbs     []string `yaml:"verbs"`
	} `yaml:"clusterRoleRules"`
	HostPathRoot           string `yaml:"hostPathRoot"`
	TerminationGracePeriod int    `yaml:"terminationGracePeriod"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

// filebeatYML is the subset of filebeat.yml Spool writes; Filebeat accepts
// dotted keys ("output.elasticsearch") as written.
type filebeatYML struct {
	Autodiscover struct {
		Providers []struct {
			Type        string `yaml:"type"`
			Node        string `yaml:"node"`
			LabelsDedot *bool  `yaml:"labels.dedot"`
			Templates   []struct {
				Condition struct {
					Equals map[string]string `yaml:"equals"`
				} `yaml:"condition"`
				Config []inputConfig `yaml:"config"`
			} `yaml:"templates"`
		} `yaml:"providers"`
	} `yaml:"filebeat.autodiscover"`
	Processors []struct {
		AddKubernetesMetadata *struct {
			Host     string `yaml:"host"`
			Matchers []struct {
				LogsPath struct {
					LogsPath string `yaml:"logs_path"`
				} `yaml:"logs_path"`
			} `yaml:"matchers"`
		} `yaml:"add_kubernetes_metadata"`
	} `yaml:"processors"`
	Output struct {
		Hosts    []string `yaml:"hosts"`
		Username string   `yaml:"username"`
		Password string   `yaml:"password"`
		SSLCAs   []string `yaml:"ssl.certificate_authorities"`
	} `yaml:"output.elasticsearch"`
	SetupKibana *struct {
		Host string `yaml:"host"`
	} `yaml:"setup.kibana"`
}

type inputConfig struct {
	Type     string   `yaml:"type"`
	ID       string   `yaml:"id"`
	Paths    []string `yaml:"paths"`
	Symlinks *bool    `yaml:"prospector.scanner.symlinks"`
	Parsers  []struct {
		Container *struct {
			Stream string `yaml:"stream"`
			Format string `yaml:"format"`
		} `yaml:"container"`
		NDJSON *struct {
			Target        *string `yaml:"target"`
			ExpandKeys    bool    `yaml:"expand_keys"`
			OverwriteKeys bool    `yaml:"overwrite_keys"`
			AddErrorKey   bool    `yaml:"add_error_key"`
			MessageKey    string  `yaml:"message_key"`
		} `yaml:"ndjson"`
	} `yaml:"parsers"`
}

// checkInput holds one autodiscover template to what shipping Spool's lines
// needs: the filestream input (not the deprecated container or log input),
// the container parser first, then ndjson into the event root with dotted
// keys expanded, and a per-container id and path from the provider's data.
func checkInput(t *testing.T, name string, in inputConfig, idVar, pathPrefix string) {
	t.Helper()
	if in.Type != "filestream" {
		t.Errorf("%s: input type %q, want filestream", name, in.Type)
	}
	if !strings.Contains(in.ID, "${"+idVar+"}") {
		t.Errorf("%s: input id %q must be unique per container (${%s})", name, in.ID, idVar)
	}
	if len(in.Paths) != 1 || !strings.HasPrefix(in.Paths[0], pathPrefix) || !strings.Contains(in.Paths[0], "${"+idVar+"}") {
		t.Errorf("%s: paths %v, want one under %s naming ${%s}", name, in.Paths, pathPrefix, idVar)
	}
	if len(in.Parsers) != 2 || in.Parsers[0].Container == nil || in.Parsers[1].NDJSON == nil {
		t.Fatalf("%s: parsers must be [container, ndjson], got %+v", name, in.Parsers)
	}
	if c := in.Parsers[0].Container; c.Stream != "all" {
		t.Errorf("%s: container parser stream %q, want all (stderr carries the exit error)", name, c.Stream)
	}
	nd := in.Parsers[1].NDJSON
	if nd.Target == nil || *nd.Target != "" {
		t.Errorf(`%s: ndjson target must be "" (the event root, where ECS keys belong)`, name)
	}
	if !nd.ExpandKeys || !nd.OverwriteKeys || !nd.AddErrorKey {
		t.Errorf("%s: ndjson needs expand_keys, overwrite_keys and add_error_key: %+v", name, *nd)
	}
	if nd.MessageKey != "message" {
		t.Errorf("%s: ndjson message_key %q, want message", name, nd.MessageKey)
	}
}

// noLiteralPasswords: every password-ish value is an environment reference.
var passwordLine = regexp.MustCompile(`(?im)^\s*[\w.\-]*password[\w.\-]*\s*:\s*(.+)$`)

func checkNoLiteralPasswords(t *testing.T, name string, data []byte) {
	t.Helper()
	for _, m := range passwordLine.FindAllStringSubmatch(string(data), -1) {
		v := strings.Trim(strings.TrimSpace(m[1]), `"'`)
		if !strings.HasPrefix(v, "${") {
			t.Errorf("%s: a password written in the file: %q", name, strings.TrimSpace(m[0]))
		}
	}
}

func TestFilebeatHelmValues(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(helmValuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var v helmValues
	decodeStrict(t, helmValuesFile, data, &v)
	checkNoLiteralPasswords(t, helmValuesFile, data)

	if !v.Daemonset.Enabled || v.Deployment.Enabled {
		t.Errorf("want the DaemonSet only: daemonset.enabled=%v deployment.enabled=%v", v.Daemonset.Enabled, v.Deployment.Enabled)
	}
	if v.Image == "" || !regexp.MustCompile(`^[89]\.\d+\.\d+$`).MatchString(v.ImageTag) {
		t.Errorf("image %q:%q: want a pinned 8.x or 9.x Filebeat", v.Image, v.ImageTag)
	}
	// Credentials from a Secret, by reference.
	envs := map[string]envVar{}
	for _, e := range v.Daemonset.ExtraEnvs {
		envs[e.Name] = e
	}
	for _, name := range []string{"ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD"} {
		e, ok := envs[name]
		switch {
		case !ok:
			t.Errorf("daemonset.extraEnvs lacks %s", name)
		case e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
			e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "":
			t.Errorf("%s must come from valueFrom.secretKeyRef (name and key), got %+v", name, e)
		}
	}
	if r := v.Daemonset.Resources; r.Requests["cpu"] == "" || r.Requests["memory"] == "" || r.Limits["memory"] == "" {
		t.Errorf("daemonset.resources: want cpu and memory requests and a memory limit, got %+v", r)
	}
	if len(v.Daemonset.FilebeatConfig) != 1 || v.Daemonset.FilebeatConfig["filebeat.yml"] == "" {
		t.Fatalf("daemonset.filebeatConfig must hold filebeat.yml only, got keys %v", keys(v.Daemonset.FilebeatConfig))
	}
	var rules = map[string]bool{}
	for _, r := range v.ClusterRoleRules {
		for _, res := range r.Resources {
			rules[res] = strings.Join(r.Verbs, ",") == "get,list,watch"
		}
	}
	for _, res := range []string{"pods", "namespaces", "nodes", "replicasets"} {
		if !rules[res] {
			t.Errorf("clusterRoleRules: want get,list,watch on %s", res)
		}
	}

	fbText := v.Daemonset.FilebeatConfig["filebeat.yml"]
	var fb filebeatYML
	decodeStrict(t, "filebeat.yml in "+helmValuesFile, []byte(fbText), &fb)
	checkNoLiteralPasswords(t, "filebeat.yml", []byte(fbText))

	ps := fb.Autodiscover.Providers
	if len(ps) != 1 || ps[0].Type != "kubernetes" || ps[0].Node != "${NODE_NAME}" {
		t.Fatalf("want one kubernetes autodiscover provider on ${NODE_NAME}, got %+v", ps)
	}
	// Filebeat de-dots label names by default; say so and match that form.
	if ps[0].LabelsDedot == nil || !*ps[0].LabelsDedot {
		t.Errorf("labels.dedot must be true for the condition's label key")
	}
	if len(ps[0].Templates) != 1 {
		t.Fatalf("want one template, got %d", len(ps[0].Templates))
	}
	tpl := ps[0].Templates[0]
	if want := map[string]string{"kubernetes.labels.app_kubernetes_io/name": "spool"}; fmt.Sprint(tpl.Condition.Equals) != fmt.Sprint(want) {
		t.Errorf("condition %v, want %v (pods labelled app.kubernetes.io/name: spool)", tpl.Condition.Equals, want)
	}
	if len(tpl.Config) != 1 {
		t.Fatalf("want one input per container, got %d", len(tpl.Config))
	}
	checkInput(t, "kubernetes", tpl.Config[0], "data.kubernetes.container.id", "/var/log/containers/")
	if s := tpl.Config[0].Symlinks; s == nil || !*s {
		t.Errorf("/var/log/containers holds symlinks: prospector.scanner.symlinks must be true")
	}

	var akm bool
	for _, p := range fb.Processors {
		if p.AddKubernetesMetadata != nil {
			akm = true
		}
	}
	if !akm {
		t.Errorf("processors lack add_kubernetes_metadata")
	}
	o := fb.Output
	if len(o.Hosts) != 1 || o.Hosts[0] != "${ELASTICSEARCH_HOSTS}" || o.Username != "${ELASTICSEARCH_USERNAME}" || o.Password != "${ELASTICSEARCH_PASSWORD}" {
		t.Errorf("output.elasticsearch must take hosts and credentials from the environment: %+v", o)
	}
	// The CA the output trusts is mounted from a Secret.
	var caMounted bool
	for _, m := range v.Daemonset.SecretMounts {
		for _, ca := range o.SSLCAs {
			caMounted = caMounted || strings.HasPrefix(ca, m.Path)
		}
	}
	if !caMounted {
		t.Errorf("ssl.certificate_authorities %v is not under any secretMounts path", o.SSLCAs)
	}
}

func TestFilebeatComposeConfig(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(composeFileName)
	if err != nil {
		t.Fatal(err)
	}
	var fb filebeatYML
	decodeStrict(t, composeFileName, data, &fb)
	checkNoLiteralPasswords(t, composeFileName, data)

	ps := fb.Autodiscover.Providers
	if len(ps) != 1 || ps[0].Type != "docker" || len(ps[0].Templates) != 1 {
		t.Fatalf("want one docker autodiscover provider with one template, got %+v", ps)
	}
	if ps[0].LabelsDedot == nil || !*ps[0].LabelsDedot {
		t.Errorf("labels.dedot must be true for the condition's label key")
	}
	tpl := ps[0].Templates[0]
	if want := map[string]string{"docker.container.labels.com_docker_compose_service": "spool"}; fmt.Sprint(tpl.Condition.Equals) != fmt.Sprint(want) {
		t.Errorf("condition %v, want %v (the Compose service spool)", tpl.Condition.Equals, want)
	}
	if len(tpl.Config) != 1 {
		t.Fatalf("want one input per container, got %d", len(tpl.Config))
	}
	checkInput(t, "docker", tpl.Config[0], "data.docker.container.id", "/var/lib/docker/containers/")
	o := fb.Output
	if len(o.Hosts) != 1 || o.Hosts[0] != "http://elasticsearch:9200" {
		t.Errorf("output.elasticsearch.hosts %v, want the profile's http://elasticsearch:9200", o.Hosts)
	}
	if o.Password != "" && !strings.HasPrefix(o.Password, "${") {
		t.Errorf("output password must come from the environment")
	}
}

// TestStrictDecodingCatchesTypos shows the checks above can fail: a
// mistyped key is refused rather than ignored.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(composeFileName)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(data, []byte("expand_keys:"), []byte("expand_key:"), 1)
	if bytes.Equal(bad, data) {
		t.Fatal("expand_keys not found in the compose config")
	}
	dec := yaml.NewDecoder(bytes.NewReader(bad))
	dec.KnownFields(true)
	var fb filebeatYML
	if err := dec.Decode(&fb); err == nil || !strings.Contains(err.Error(), "expand_key") {
		t.Errorf("a mistyped key was accepted: %v", err)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// expandKeys does what Filebeat's ndjson parser does with expand_keys:
// dotted keys become nested objects. A key that is both a value and a
// prefix of another ("error" and "error.message") cannot be expanded, and
// Filebeat would then drop the line's fields with an error.
func expandKeys(m map[string]any) (map[string]any, error) {
	out := map[string]any{}
	for k, v := range m {
		parts := strings.Split(k, ".")
		cur := out
		for i, p := range parts {
			if i == len(parts)-1 {
				if _, exists := cur[p]; exists {
					return nil, fmt.Errorf("key %q collides with another key's prefix", k)
				}
				cur[p] = v
				break
			}
			next, exists := cur[p]
			if !exists {
				n := map[string]any{}
				cur[p] = n
				cur = n
				continue
			}
			n, ok := next.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("key %q needs %q to be an object, but it is a value", k, strings.Join(parts[:i+1], "."))
			}
			cur = n
		}
	}
	return out, nil
}

func TestExpandKeysDetectsConflicts(t *testing.T) {
	t.Parallel()
	if _, err := expandKeys(map[string]any{"error": "x", "error.message": "y"}); err == nil {
		t.Error(`"error" next to "error.message" was not reported`)
	}
	if _, err := expandKeys(map[string]any{"error.message": "y", "error": "x"}); err == nil {
		t.Error(`"error.message" next to "error" was not reported`)
	}
	got, err := expandKeys(map[string]any{"log.level": "info", "log.logger": "x", "message": "m"})
	if err != nil || got["log"].(map[string]any)["level"] != "info" {
		t.Errorf("expand: %v %v", got, err)
	}
}

var (
	shipTimestamp = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$`)
	shipLevels    = map[string]bool{"debug": true, "info": true, "warn": true, "error": true}
)

// checkShippable holds each stdout line to what Filebeat and Elasticsearch
// need: one JSON object, the ECS base fields with their types, and keys that
// expand without collisions. It returns the decoded lines.
func checkShippable(t *testing.T, out string) []map[string]any {
	t.Helper()
	if out == "" {
		t.Fatal("no output")
	}
	var lines []map[string]any
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		dec := json.NewDecoder(strings.NewReader(l))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil || dec.More() {
			t.Errorf("stdout line %d is not one JSON object (%v): %q", i+1, err, l)
			continue
		}
		for _, k := range []string{"@timestamp", "log.level", "message", "ecs.version", "service.name", "service.version", "event.dataset"} {
			if s, ok := m[k].(string); !ok || s == "" {
				t.Errorf("line %d: %s missing or not a string: %q", i+1, k, l)
			}
		}
		if ts, _ := m["@timestamp"].(string); !shipTimestamp.MatchString(ts) {
			t.Errorf("line %d: @timestamp %q", i+1, ts)
		} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("line %d: @timestamp: %v", i+1, err)
		}
		if lv, _ := m["log.level"].(string); !shipLevels[lv] {
			t.Errorf("line %d: log.level %q", i+1, lv)
		}
		if m["event.dataset"] != "spool.log" || m["service.name"] != "spool" {
			t.Errorf("line %d: event.dataset %v service.name %v", i+1, m["event.dataset"], m["service.name"])
		}
		if _, err := expandKeys(m); err != nil {
			t.Errorf("line %d: Filebeat could not expand its keys: %v\n%s", i+1, err, l)
		}
		lines = append(lines, m)
	}
	if len(lines) == 0 {
		t.Fatal("no log lines")
	}
	return lines
}
