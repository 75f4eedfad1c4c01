package header

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/pop3proxy/pop3proxy/filter"
)

func init() {
	// No I/O, no daemon to protect, nothing that could hang: the chain calls it directly.
	filter.Register(filter.PluginInfo{Type: "header", New: func() filter.Plugin { return new(Filter) }, Inline: true})
}

const headerMaxLine = 998 // RFC 5322 §2.1.1's hard limit on a line, CRLF excluded

// Filter is the "header" filter.
//
//	filters:
//	- type: header
//	  remove: [X-Spam-Flag]               # every field of these names
//	  set: {X-Scanned-By: pop3proxy}      # remove all of that name, then add one
//	  add: {X-Proxied: "yes"}             # added at the top
//
// Removals (remove, and set's names) never apply to added fields, so a name
// in both remove and add acts as set. add and set together may name a field
// only once, in any spelling. Added fields go to the top in byte order of
// their names: a YAML mapping has no order Go could keep. In a value, white
// space runs become one space, folded at spaces (RFC 5322 §2.2.3); non-ASCII
// is UTF-8 (RFC 6532): for old clients use ASCII or RFC 2047 encoded words.
type Filter struct {
	Add    map[string]string `yaml:"add"`
	Remove []string          `yaml:"remove"`
	Set    map[string]string `yaml:"set"`

	edits []filter.Edit
}

// Provision checks the field names and values and prepares the edits.
func (h *Filter) Provision(filter.Env) error {
	if len(h.Add) == 0 && len(h.Remove) == 0 && len(h.Set) == 0 {
		return errors.New("nothing to do: give add, set or remove")
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	var edits []filter.Edit
	removed := map[string]bool{}
	for i, name := range h.Remove {
		if err := filter.CheckFieldName(name); err != nil {
			bad("remove[%d]: %v", i, err)
			continue
		}
		if !removed[strings.ToLower(name)] {
			removed[strings.ToLower(name)] = true
			edits = append(edits, filter.Remove(name))
		}
	}

	added := map[string]string{} // lower-case name → who added it: none twice (X-A and x-a)
	adds := map[string]string{}
	for _, key := range []string{"set", "add"} {
		fields := h.Set
		if key == "add" {
			fields = h.Add
		}
		for _, name := range sortedNames(fields) {
			value := fields[name]
			if err := filter.CheckFieldName(name); err != nil {
				bad("%s: %v", key, err)
				continue
			}
			lower := strings.ToLower(name)
			if prev, dup := added[lower]; dup {
				bad("%s: %s: the field is already added by %s", key, name, prev)
				continue
			}
			added[lower] = fmt.Sprintf("%s (%s)", name, key)
			if err := checkValue(name, value); err != nil {
				bad("%s: %v", key, err)
				continue
			}
			if key == "set" && !removed[lower] {
				removed[lower] = true
				edits = append(edits, filter.Remove(name))
			}
			adds[name] = value
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	for _, name := range sortedNames(adds) {
		edits = append(edits, filter.Add(name, adds[name]))
	}
	h.edits = edits
	return nil
}

// Judge returns a copy of the configured edits, so no caller can change what the next message gets.
func (h *Filter) Judge(context.Context, *filter.Message) (filter.Verdict, error) {
	return filter.Verdict{Action: filter.Continue, Edits: slices.Clone(h.edits)}, nil
}

func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// checkValue refuses CR and LF (header injection), other controls (RFC 5322 §3.2.5),
// and a field longer than a line, which might need folding inside a word (not allowed).
func checkValue(name, value string) error {
	if strings.TrimSpace(value) == "" {
		return fmt.Errorf("%s: empty value (to drop a field, use remove)", name)
	}
	if !utf8.ValidString(value) {
		return fmt.Errorf("%s: value is not valid UTF-8", name)
	}
	for _, r := range value {
		if (r < 32 && r != '\t') || r == 127 {
			return fmt.Errorf("%s: value contains the control character %U (CR, LF and NUL are never allowed)", name, r)
		}
	}
	if n := len(name) + 2 + len(value); n > headerMaxLine {
		return fmt.Errorf("%s: field is %d octets as one line; at most %d are allowed (RFC 5322 §2.1.1)", name, n, headerMaxLine)
	}
	return nil
}

var (
	_ filter.Judge       = (*Filter)(nil)
	_ filter.Provisioner = (*Filter)(nil)
)
