package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// This file is a small JSON Schema (2020-12 subset, as OpenAPI 3.1 uses it)
// checker: just the keywords openapi.json uses. TestOpenAPIKeywordsKnown
// fails if the document starts using one this checker does not implement,
// so a schema can never be silently half-checked. A library would bring a
// dependency tree into go.mod for ~200 lines of test code.

// isSchemaKeyword reports whether validate implements keyword k.
func isSchemaKeyword(k string) bool {
	switch k {
	case "$ref", "type", "enum", "properties", "required", "additionalProperties", "items",
		"minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength",
		"pattern", "format", "oneOf", "minProperties":
		return true
	}
	return false
}

// isSchemaAnnotation reports whether k is a keyword that asserts nothing.
func isSchemaAnnotation(k string) bool {
	switch k {
	case "description", "title", "default", "example":
		return true
	}
	return false
}

// openAPIDocument is the parsed document with helpers to find operations.
type openAPIDocument struct {
	root map[string]any
}

func loadOpenAPI(t testing.TB) *openAPIDocument {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(openAPIDoc))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	return &openAPIDocument{root: root}
}

// resolve follows a local "#/a/b/c" reference.
func (d *openAPIDocument) resolve(ref string) (map[string]any, error) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("unsupported $ref %q", ref)
	}
	var cur any = d.root
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: %q is not an object", ref, part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("$ref %q: no %q", ref, part)
		}
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("$ref %q is not an object", ref)
	}
	return m, nil
}

// deref follows $ref chains of a non-schema object (a response, a parameter).
func (d *openAPIDocument) deref(m map[string]any) (map[string]any, error) {
	for i := 0; i < 10; i++ {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, nil
		}
		var err error
		if m, err = d.resolve(ref); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("$ref chain too long")
}

// operation returns paths[path][method].
func (d *openAPIDocument) operation(method, path string) (map[string]any, bool) {
	paths, _ := d.root["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, ok := item[strings.ToLower(method)].(map[string]any)
	return op, ok
}

// responseSchema returns the schema documented for (method, path, status,
// media type), or an error saying what is undocumented.
func (d *openAPIDocument) responseSchema(method, path string, status int, mediaType string) (map[string]any, error) {
	op, ok := d.operation(method, path)
	if !ok {
		return nil, fmt.Errorf("%s %s is not documented", method, path)
	}
	responses, _ := op["responses"].(map[string]any)
	resp, ok := responses[fmt.Sprint(status)].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s: status %d is not documented", method, path, status)
	}
	resp, err := d.deref(resp)
	if err != nil {
		return nil, err
	}
	content, _ := resp["content"].(map[string]any)
	media, ok := content[mediaType].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s %d: media type %q is not documented", method, path, status, mediaType)
	}
	schema, ok := media["schema"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s %s %d %s: no schema", method, path, status, mediaType)
	}
	return schema, nil
}

// validateJSON decodes body and validates it against schema.
func (d *openAPIDocument) validateJSON(schema map[string]any, body []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return []string{"body is not JSON: " + err.Error()}
	}
	return d.validate(schema, v, "$")
}

// validate returns every violation of schema by v, each naming its path.
func (d *openAPIDocument) validate(schema map[string]any, v any, path string) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }

	if ref, ok := schema["$ref"].(string); ok {
		target, err := d.resolve(ref)
		if err != nil {
			fail("%v", err)
			return errs
		}
		errs = append(errs, d.validate(target, v, path)...)
	}
	if t, ok := schema["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		matched := false
		for _, typ := range types {
			matched = matched || hasType(v, typ)
		}
		if !matched {
			fail("want type %v, got %s", types, jsonTypeOf(v))
			return errs
		}
	}
	if enum, ok := schema["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			found = found || fmt.Sprint(e) == fmt.Sprint(v)
		}
		if !found {
			fail("%v is not one of %v", v, enum)
		}
	}
	if n, ok := v.(json.Number); ok {
		f, _ := n.Float64()
		if min, ok := schema["minimum"].(json.Number); ok {
			if m, _ := min.Float64(); f < m {
				fail("%v is below minimum %v", n, min)
			}
		}
		if max, ok := schema["maximum"].(json.Number); ok {
			if m, _ := max.Float64(); f > m {
				fail("%v is above maximum %v", n, max)
			}
		}
	}
	if s, ok := v.(string); ok {
		if min, ok := schema["minLength"].(json.Number); ok {
			if m, _ := min.Int64(); int64(len([]rune(s))) < m {
				fail("string shorter than %v", min)
			}
		}
		if max, ok := schema["maxLength"].(json.Number); ok {
			if m, _ := max.Int64(); int64(len([]rune(s))) > m {
				fail("string longer than %v", max)
			}
		}
		if p, ok := schema["pattern"].(string); ok {
			re, err := regexp.Compile(p)
			if err != nil {
				fail("bad pattern %q: %v", p, err)
			} else if !re.MatchString(s) {
				fail("%q does not match %s", s, p)
			}
		}
		switch schema["format"] {
		case "date-time":
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				fail("%q is not an RFC 3339 date-time", s)
			}
		case "uuid":
			if _, err := uuid.Parse(s); err != nil || len(s) != 36 {
				fail("%q is not a UUID", s)
			}
		}
	}
	if arr, ok := v.([]any); ok {
		if min, ok := schema["minItems"].(json.Number); ok {
			if m, _ := min.Int64(); int64(len(arr)) < m {
				fail("fewer than %v items", min)
			}
		}
		if max, ok := schema["maxItems"].(json.Number); ok {
			if m, _ := max.Int64(); int64(len(arr)) > m {
				fail("more than %v items", max)
			}
		}
		if items, ok := schema["items"].(map[string]any); ok {
			for i, x := range arr {
				errs = append(errs, d.validate(items, x, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	if obj, ok := v.(map[string]any); ok {
		if min, ok := schema["minProperties"].(json.Number); ok {
			if m, _ := min.Int64(); int64(len(obj)) < m {
				fail("fewer than %v properties", min)
			}
		}
		props, _ := schema["properties"].(map[string]any)
		if req, ok := schema["required"].([]any); ok {
			for _, r := range req {
				if _, ok := obj[r.(string)]; !ok {
					fail("missing required property %q", r)
				}
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k].(map[string]any); ok {
				errs = append(errs, d.validate(ps, obj[k], path+"."+k)...)
				continue
			}
			switch ap := schema["additionalProperties"].(type) {
			case bool:
				if !ap {
					fail("unexpected property %q", k)
				}
			case map[string]any:
				errs = append(errs, d.validate(ap, obj[k], path+"."+k)...)
			}
		}
	}
	if one, ok := schema["oneOf"].([]any); ok {
		n := 0
		var all []string
		for i, s := range one {
			sub := d.validate(s.(map[string]any), v, path)
			if len(sub) == 0 {
				n++
			}
			all = append(all, fmt.Sprintf("[oneOf %d] %v", i, sub))
		}
		if n != 1 {
			fail("matches %d of the oneOf schemas, want exactly 1: %v", n, all)
		}
	}
	return errs
}

func hasType(v any, typ string) bool {
	switch typ {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Int64()
		return err == nil
	case "array":
		_, ok := v.([]any)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

func jsonTypeOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// TestSchemaChecker makes sure the checker itself can fail: each case is a
// value that must be refused (or accepted) by a schema.
func TestSchemaChecker(t *testing.T) {
	t.Parallel()
	d := loadOpenAPI(t)
	task := func() map[string]any {
		return map[string]any{
			"id": "01890a5d-ac96-774b-bcce-b302099a8057", "queue": "q", "state": "available",
			"attempt": json.Number("0"), "max_attempts": json.Number("25"), "priority": json.Number("5"),
			"run_at": "2024-01-01T00:00:00.000000Z", "created_at": "2024-01-01T00:00:00.000000Z",
			"updated_at": "2024-01-01T00:00:00.000000Z", "finished_at": nil,
			"target":  map[string]any{"url": "http://x", "method": "POST", "headers": map[string]any{}},
			"timeout": "30s", "content_type": "", "last_error": nil, "last_status": nil,
		}
	}
	ref := map[string]any{"$ref": "#/components/schemas/Task"}
	if errs := d.validate(ref, task(), "$"); len(errs) != 0 {
		t.Fatalf("a valid task is refused: %v", errs)
	}
	cases := map[string]func(m map[string]any){
		"missing required":  func(m map[string]any) { delete(m, "id") },
		"extra property":    func(m map[string]any) { m["payload"] = "x" },
		"bad enum":          func(m map[string]any) { m["state"] = "done" },
		"wrong type":        func(m map[string]any) { m["attempt"] = "0" },
		"float for integer": func(m map[string]any) { m["attempt"] = json.Number("1.5") },
		"null not allowed":  func(m map[string]any) { m["queue"] = nil },
		"above maximum":     func(m map[string]any) { m["priority"] = json.Number("10") },
		"bad date-time":     func(m map[string]any) { m["run_at"] = "yesterday" },
		"bad uuid":          func(m map[string]any) { m["id"] = "x" },
		"bad duration":      func(m map[string]any) { m["timeout"] = "30" },
		"nested extra":      func(m map[string]any) { m["target"].(map[string]any)["x"] = "y" },
		"header not string": func(m map[string]any) {
			m["target"].(map[string]any)["headers"] = map[string]any{"a": json.Number("1")}
		},
		"nullable wrong type":   func(m map[string]any) { m["last_status"] = "500" },
		"nullable finished bad": func(m map[string]any) { m["finished_at"] = "soon" },
	}
	for name, mutate := range cases {
		m := task()
		mutate(m)
		if errs := d.validate(ref, m, "$"); len(errs) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
	batch := map[string]any{"tasks": []any{task(), map[string]any{"id": "x"}}}
	if errs := d.validate(map[string]any{"$ref": "#/components/schemas/TaskBatch"}, batch, "$"); len(errs) == 0 {
		t.Error("a bad array item is accepted")
	}
	oneOf := map[string]any{"oneOf": []any{map[string]any{"$ref": "#/components/schemas/Task"}, map[string]any{"$ref": "#/components/schemas/TaskBatch"}}}
	if errs := d.validate(oneOf, map[string]any{"tasks": []any{task()}}, "$"); len(errs) != 0 {
		t.Errorf("oneOf refuses a batch: %v", errs)
	}
	if errs := d.validate(oneOf, map[string]any{}, "$"); len(errs) == 0 {
		t.Error("oneOf accepts an object matching neither")
	}
}

// TestOpenAPIKeywordsKnown walks every schema in the document and fails on
// a keyword the checker does not implement.
func TestOpenAPIKeywordsKnown(t *testing.T) {
	t.Parallel()
	d := loadOpenAPI(t)
	var walkSchema func(s any, path string)
	walkSchema = func(s any, path string) {
		m, ok := s.(map[string]any)
		if !ok {
			t.Errorf("%s: schema is not an object", path)
			return
		}
		for k, v := range m {
			switch {
			case isSchemaAnnotation(k):
			case !isSchemaKeyword(k):
				t.Errorf("%s: keyword %q is not implemented by the test's schema checker", path, k)
			case k == "properties":
				for name, ps := range v.(map[string]any) {
					walkSchema(ps, path+".properties."+name)
				}
			case k == "items":
				walkSchema(v, path+".items")
			case k == "additionalProperties":
				if _, isBool := v.(bool); !isBool {
					walkSchema(v, path+".additionalProperties")
				}
			case k == "oneOf":
				for i, x := range v.([]any) {
					walkSchema(x, fmt.Sprintf("%s.oneOf[%d]", path, i))
				}
			case k == "$ref":
				if _, err := d.resolve(v.(string)); err != nil {
					t.Errorf("%s: %v", path, err)
				}
			}
		}
	}
	comps := d.root["components"].(map[string]any)
	for name, s := range comps["schemas"].(map[string]any) {
		walkSchema(s, "components.schemas."+name)
	}
	for name, p := range comps["parameters"].(map[string]any) {
		walkSchema(p.(map[string]any)["schema"], "components.parameters."+name)
	}
	// Inline schemas under paths: parameters, request bodies, responses.
	var walkAny func(v any, path string)
	walkAny = func(v any, path string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "schema" {
					walkSchema(x, path+".schema")
					continue
				}
				walkAny(x, path+"."+k)
			}
		case []any:
			for i, x := range v {
				walkAny(x, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walkAny(d.root["paths"], "paths")
	walkAny(comps["responses"], "components.responses")
}
