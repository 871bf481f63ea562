package monitoring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// The subset of Grafana's dashboard JSON model (schemaVersion 39) that
// spool.json uses. Decoding is strict: a field not declared here fails the
// test, so a typo or a field Grafana would ignore cannot slip in; extend the
// structs deliberately when the dashboard needs more.

type dashboardModel struct {
	Annotations          annotations `json:"annotations"`
	Description          string      `json:"description"`
	Editable             bool        `json:"editable"`
	FiscalYearStartMonth int         `json:"fiscalYearStartMonth"`
	GraphTooltip         int         `json:"graphTooltip"`
	ID                   *int        `json:"id"`
	Links                []dashLink  `json:"links"`
	Panels               []panel     `json:"panels"`
	Refresh              string      `json:"refresh"`
	SchemaVersion        int         `json:"schemaVersion"`
	Tags                 []string    `json:"tags"`
	Templating           templating  `json:"templating"`
	Time                 timeRange   `json:"time"`
	Timepicker           struct{}    `json:"timepicker"`
	Timezone             string      `json:"timezone"`
	Title                string      `json:"title"`
	UID                  string      `json:"uid"`
	Version              int         `json:"version"`
	WeekStart            string      `json:"weekStart"`
}

type annotations struct {
	List []struct {
		BuiltIn    int           `json:"builtIn"`
		Datasource datasourceRef `json:"datasource"`
		Enable     bool          `json:"enable"`
		Hide       bool          `json:"hide"`
		IconColor  string        `json:"iconColor"`
		Name       string        `json:"name"`
		Type       string        `json:"type"`
	} `json:"list"`
}

type dashLink struct {
	Title       string `json:"title"`
	Type        string `json:"type"`
	Icon        string `json:"icon"`
	Tooltip     string `json:"tooltip"`
	URL         string `json:"url"`
	TargetBlank bool   `json:"targetBlank"`
}

type timeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *datasourceRef `json:"datasource"`
	GridPos     gridPos        `json:"gridPos"`
	FieldConfig *fieldConfig   `json:"fieldConfig"`
	Options     *panelOptions  `json:"options"`
	Targets     []target       `json:"targets"`
	// Rows only.
	Collapsed *bool   `json:"collapsed"`
	Panels    []panel `json:"panels"`
}

type fieldConfig struct {
	Defaults  fieldDefaults `json:"defaults"`
	Overrides []struct {
		Matcher struct {
			ID      string `json:"id"`
			Options string `json:"options"`
		} `json:"matcher"`
		Properties []struct {
			ID    string          `json:"id"`
			Value json.RawMessage `json:"value"`
		} `json:"properties"`
	} `json:"overrides"`
}

type fieldDefaults struct {
	Unit     string   `json:"unit"`
	Min      *float64 `json:"min"`
	Max      *float64 `json:"max"`
	Decimals *int     `json:"decimals"`
	// Value mappings (state-timeline): a raw value shown as a word and a colour.
	Mappings []struct {
		Type    string `json:"type"`
		Options map[string]struct {
			Text  string `json:"text"`
			Color string `json:"color"`
			Index int    `json:"index"`
		} `json:"options"`
	} `json:"mappings"`
	Color struct {
		Mode string `json:"mode"`
	} `json:"color"`
	Thresholds struct {
		Mode  string `json:"mode"`
		Steps []struct {
			Color string   `json:"color"`
			Value *float64 `json:"value"`
		} `json:"steps"`
	} `json:"thresholds"`
	Custom *struct {
		DrawStyle   string `json:"drawStyle"`
		LineWidth   int    `json:"lineWidth"`
		FillOpacity int    `json:"fillOpacity"`
		ShowPoints  string `json:"showPoints"`
		SpanNulls   bool   `json:"spanNulls"`
		Stacking    struct {
			Mode  string `json:"mode"`
			Group string `json:"group"`
		} `json:"stacking"`
		AxisLabel       string `json:"axisLabel"`
		ThresholdsStyle struct {
			Mode string `json:"mode"`
		} `json:"thresholdsStyle"`
	} `json:"custom"`
}

// panelOptions is the union of the timeseries, state-timeline and stat
// options used.
type panelOptions struct {
	// timeseries and state-timeline
	Legend *struct {
		DisplayMode string   `json:"displayMode"`
		Placement   string   `json:"placement"`
		ShowLegend  bool     `json:"showLegend"`
		Calcs       []string `json:"calcs"`
	} `json:"legend"`
	Tooltip *struct {
		Mode string `json:"mode"`
		Sort string `json:"sort"`
	} `json:"tooltip"`
	// stat
	ReduceOptions *struct {
		Calcs  []string `json:"calcs"`
		Fields string   `json:"fields"`
		Values bool     `json:"values"`
	} `json:"reduceOptions"`
	Orientation string `json:"orientation"`
	TextMode    string `json:"textMode"`
	ColorMode   string `json:"colorMode"`
	GraphMode   string `json:"graphMode"`
	JustifyMode string `json:"justifyMode"`
	// state-timeline
	MergeValues *bool   `json:"mergeValues"`
	ShowValue   string  `json:"showValue"`
	AlignValue  string  `json:"alignValue"`
	RowHeight   float64 `json:"rowHeight"`
}

type target struct {
	RefID        string         `json:"refId"`
	Datasource   *datasourceRef `json:"datasource"`
	EditorMode   string         `json:"editorMode"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Range        bool           `json:"range"`
	Instant      bool           `json:"instant"`
}

type templating struct {
	List []variable `json:"list"`
}

type variable struct {
	Type       string         `json:"type"`
	Name       string         `json:"name"`
	Label      string         `json:"label"`
	Datasource *datasourceRef `json:"datasource"`
	Definition string         `json:"definition"`
	// Query is a string for a datasource variable (the plugin type) and an
	// object for a Prometheus query variable; see variableQuery.
	Query       json.RawMessage  `json:"query"`
	Current     variableOption   `json:"current"`
	Hide        int              `json:"hide"`
	IncludeAll  bool             `json:"includeAll"`
	AllValue    string           `json:"allValue"`
	Multi       bool             `json:"multi"`
	Options     []variableOption `json:"options"`
	Refresh     int              `json:"refresh"`
	Regex       string           `json:"regex"`
	SkipURLSync bool             `json:"skipUrlSync"`
	Sort        int              `json:"sort"`
}

type variableOption struct {
	Selected bool            `json:"selected"`
	Text     json.RawMessage `json:"text"`
	Value    json.RawMessage `json:"value"`
}

type variableQuery struct {
	QryType int    `json:"qryType"`
	Query   string `json:"query"`
	RefID   string `json:"refId"`
}

// strictDecode decodes b into v, refusing unknown fields and trailing data.
func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// loadDashboard decodes spool.json strictly.
func loadDashboard(t *testing.T) dashboardModel {
	t.Helper()
	var d dashboardModel
	if err := strictDecode(readFile(t, dashboardFile), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// queryPanels flattens rows (including collapsed rows' nested panels) and
// returns the panels that run queries.
func queryPanels(d dashboardModel) []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

// The datasource every query uses: the $datasource variable, never a fixed
// uid that exists only in one Grafana.
var dsVar = datasourceRef{Type: "prometheus", UID: "${datasource}"}

func TestDashboardModel(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)

	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d; want a current one (36-41, Grafana 9.x-11.x)", d.SchemaVersion)
	}
	if d.UID != "spool" || d.Title == "" || d.ID != nil {
		t.Errorf("uid %q, title %q, id %v: want uid spool, a title and a null id (provisioning assigns it)", d.UID, d.Title, d.ID)
	}

	// Variables: $datasource (Prometheus datasource picker), $queue and
	// $destination.
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			t.Errorf("variable %s defined twice", v.Name)
		}
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok {
		t.Error("no $datasource variable")
	} else {
		var q string
		if v.Type != "datasource" || json.Unmarshal(v.Query, &q) != nil || q != "prometheus" {
			t.Errorf("$datasource: type %q query %s; want a datasource variable of plugin prometheus", v.Type, v.Query)
		}
	}
	// $queue and $destination: label_values of their label, All (.*) and
	// multi-select (Grafana then regex-escapes the values, so a
	// destination's dots and slashes match literally).
	for _, name := range []string{"queue", "destination"} {
		v, ok := vars[name]
		if !ok {
			t.Errorf("no $%s variable", name)
			continue
		}
		var q variableQuery
		if err := strictDecode(v.Query, &q); err != nil {
			t.Errorf("$%s query: %v", name, err)
		}
		if v.Type != "query" || v.Datasource == nil || *v.Datasource != dsVar {
			t.Errorf("$%s: type %q datasource %v; want a query variable on %v", name, v.Type, v.Datasource, dsVar)
		}
		if !strings.HasPrefix(q.Query, "label_values(") || !strings.HasSuffix(q.Query, ", "+name+")") || q.Query != v.Definition {
			t.Errorf("$%s query %q (definition %q); want label_values(…, %s) in both", name, q.Query, v.Definition, name)
		}
		if !v.IncludeAll || !v.Multi || v.AllValue != ".*" {
			t.Errorf("$%s: includeAll %v multi %v allValue %q; want All (.*) and multi-select", name, v.IncludeAll, v.Multi, v.AllValue)
		}
	}

	// Panel ids unique over rows and panels; no overlapping grid cells.
	ids := map[int]string{}
	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, p := range all {
		if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("panel %q: id %d is not a unique positive id (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q and %q overlap: %+v %+v", a.Title, b.Title, ga, gb)
			}
		}
	}

	// Every query panel: a known type, the $datasource datasource, targets
	// with unique refIds and an expression, options that fit its type.
	qp := queryPanels(d)
	if len(qp) == 0 {
		t.Fatal("no query panels")
	}
	titles := map[string]bool{}
	for _, p := range qp {
		if titles[p.Title] {
			t.Errorf("two panels titled %q", p.Title)
		}
		titles[p.Title] = true
		if p.Collapsed != nil || len(p.Panels) > 0 {
			t.Errorf("panel %q: collapsed/panels belong to rows only", p.Title)
		}
		if p.Description == "" {
			t.Errorf("panel %q has no description", p.Title)
		}
		if p.Datasource == nil || *p.Datasource != dsVar {
			t.Errorf("panel %q: datasource %v, want %v", p.Title, p.Datasource, dsVar)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && *tg.Datasource != dsVar {
				t.Errorf("panel %q target %s: datasource %v, want %v", p.Title, tg.RefID, tg.Datasource, dsVar)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s: empty expr", p.Title, tg.RefID)
			}
		}
		if p.FieldConfig == nil || p.FieldConfig.Defaults.Unit == "" || p.Options == nil {
			t.Errorf("panel %q: fieldConfig with a unit and options are required", p.Title)
			continue
		}
		switch p.Type {
		case "timeseries":
			if p.Options.Legend == nil || p.Options.Tooltip == nil || p.Options.ReduceOptions != nil || p.FieldConfig.Defaults.Custom == nil {
				t.Errorf("panel %q: timeseries wants legend, tooltip and custom field config, no reduceOptions", p.Title)
			}
		case "state-timeline":
			// Without mappings it shows raw numbers instead of states.
			if p.Options.Legend == nil || p.Options.Tooltip == nil || p.Options.ReduceOptions != nil || p.FieldConfig.Defaults.Custom == nil || len(p.FieldConfig.Defaults.Mappings) == 0 {
				t.Errorf("panel %q: state-timeline wants legend, tooltip, custom field config and value mappings, no reduceOptions", p.Title)
			}
		case "stat":
			if p.Options.ReduceOptions == nil || p.Options.Legend != nil || len(p.Targets) != 1 {
				t.Errorf("panel %q: stat wants reduceOptions, no legend, one target", p.Title)
			}
		default:
			t.Errorf("panel %q: type %q; want timeseries, state-timeline or stat (graph and singlestat are gone from current Grafana)", p.Title, p.Type)
		}
	}

	// Labels: only the bounded label set the metrics have. No task ids,
	// URLs, paths or payload in a selector, grouping or legend.
	for _, p := range qp {
		for _, tg := range p.Targets {
			for _, l := range labelsUsed(tg.Expr, tg.LegendFormat) {
				if !allowedLabels[l] {
					t.Errorf("panel %q target %s uses label %q, not one of the bounded labels %v", p.Title, tg.RefID, l, sortedKeys(allowedLabels))
				}
			}
		}
	}
}

// allowedLabels are the labels Spool's metrics carry (see docs/operations.md)
// plus Prometheus' target labels. destination (scheme://host:port, never a
// path) is bounded by the dispatcher and schedule by the maintainer: at
// most 100 per process each, the rest "other".
var allowedLabels = map[string]bool{
	"queue": true, "outcome": true, "state": true, "route": true, "method": true, "code": true,
	"destination": true, "reason": true, "schedule": true,
	"le": true, "quantile": true, "version": true, "commit": true,
	"job": true, "instance": true, "namespace": true, "__name__": true,
}

var (
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"`)
	groupingRE = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	legendRE   = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	stringRE   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// labelsUsed lists the label names in expr's matchers and groupings and in
// legend's {{label}} references.
func labelsUsed(expr, legend string) []string {
	var out []string
	for _, m := range matcherRE.FindAllStringSubmatch(expr, -1) {
		out = append(out, m[1])
	}
	// Strings (matcher values) can hold parentheses; drop them before
	// reading grouping lists.
	bare := stringRE.ReplaceAllString(expr, `""`)
	for _, m := range groupingRE.FindAllStringSubmatch(bare, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	for _, m := range legendRE.FindAllStringSubmatch(legend, -1) {
		out = append(out, m[1])
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// The strict decoder and the label check must be able to fail.
func TestDashboardChecksCanFail(t *testing.T) {
	t.Parallel()
	var d dashboardModel
	if err := strictDecode([]byte(`{"panels":[{"id":1,"type":"stat","titel":"typo"}]}`), &d); err == nil {
		t.Error("a misspelt panel field decoded without error")
	}
	if err := strictDecode([]byte(`{"title":"x"} {}`), &d); err == nil {
		t.Error("trailing data decoded without error")
	}
	got := labelsUsed(`sum by (queue, task_id) (rate(spool_tasks_finished_total{url=~"http.*", outcome="failed"}[1m])) * on (instance) group_left (path) up`, "{{ id }}")
	for _, bad := range []string{"task_id", "url", "path", "id"} {
		if !slices.Contains(got, bad) {
			t.Errorf("labelsUsed missed %q: %v", bad, got)
		}
	}
	if slices.Contains(labelsUsed(`x{route!~"GET /(livez|readyz)"}`, ""), "livez|readyz") {
		t.Error("labelsUsed read a matcher value as a grouping")
	}
}
