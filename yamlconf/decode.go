package yamlconf

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DecodeStrict decodes node into the struct out points to. An unknown key
// is an error, and every problem is collected with its key path (prefixed
// by path) and line. yaml.v3's KnownFields reports no paths, and nothing at
// all for values decoded through yaml.Node. Fields are matched by yaml tag;
// a yaml.Node field receives the raw node, and yaml.Unmarshalers decode
// themselves.
func DecodeStrict(node *yaml.Node, out any, path string) []error {
	var errs []error
	decodeValue(node, reflect.ValueOf(out).Elem(), path, &errs)
	return errs
}

// FieldError is one configuration problem, located by key path and line.
type FieldError struct {
	Path string
	Line int
	Msg  string
}

// NewFieldError returns a problem with the value at path.
func NewFieldError(path string, line int, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)}
}

func (e *FieldError) Error() string {
	loc := e.Path
	if loc == "" {
		loc = "(top level)"
	}
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, loc, e.Msg)
	}
	return loc + ": " + e.Msg
}

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	nodeType        = reflect.TypeFor[yaml.Node]()
)

func decodeValue(node *yaml.Node, v reflect.Value, path string, errs *[]error) {
	if node.Kind == yaml.DocumentNode {
		if len(node.Content) == 0 {
			return
		}
		node = node.Content[0]
	}
	if node.Kind == yaml.AliasNode {
		node = node.Alias
	}
	fail := func(format string, args ...any) {
		*errs = append(*errs, &FieldError{Path: path, Line: node.Line, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case v.Type() == nodeType:
		v.Set(reflect.ValueOf(*node))
		return
	case reflect.PointerTo(v.Type()).Implements(unmarshalerType):
		if err := node.Decode(v.Addr().Interface()); err != nil {
			fail("%s", CleanError(err))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			if isNull(node) {
				return
			}
			fail("expected a mapping of keys, got %s", describe(node))
			return
		}
		fields := yamlFields(v.Type())
		for i := 0; i+1 < len(node.Content); i += 2 {
			key, val := node.Content[i], node.Content[i+1]
			idx, ok := fields[key.Value]
			if !ok {
				*errs = append(*errs, &FieldError{Path: JoinPath(path, key.Value), Line: key.Line,
					Msg: "unknown key (valid keys: " + strings.Join(sortedKeys(fields), ", ") + ")"})
				continue
			}
			decodeValue(val, v.Field(idx), JoinPath(path, key.Value), errs)
		}
	case reflect.Slice:
		if isNull(node) {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if node.Kind != yaml.SequenceNode {
			fail("expected a list, got %s", describe(node))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(node.Content), len(node.Content))
		for i, item := range node.Content {
			decodeValue(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		v.Set(s)
	default:
		if node.Kind != yaml.ScalarNode && v.Kind() != reflect.Map {
			fail("expected a single value, got %s", describe(node))
			return
		}
		if err := node.Decode(v.Addr().Interface()); err != nil {
			fail("%s", CleanError(err))
		}
	}
}

// yamlFields maps yaml key names to struct field indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Struct order is the documented order of the keys.
	slices.SortFunc(keys, func(a, b string) int { return m[a] - m[b] })
	return keys
}

// JoinPath appends a key to a key path.
func JoinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

// CleanError strips yaml.v3's "yaml: unmarshal errors:\n  line N:"
// framing; the caller adds path and line itself.
func CleanError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(msg)
	if strings.HasPrefix(msg, "line ") {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			msg = rest
		}
	}
	return strings.TrimPrefix(msg, "yaml: ")
}
