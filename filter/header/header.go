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
	filter.Register(filter.PluginInfo{Type: "header", New: func() filter.Plugin { return new(Filter) }})
}

// headerMaxLine is RFC 5322 §2.1.1's hard limit on a line, CRLF excluded.
const headerMaxLine = 998

// Filter is the "header" filter: it removes and adds header fields of
// every message, the same for all, with no I/O.
//
//	filters:
//	- type: header
//	  remove: [X-Spam-Flag]               # every field of these names
//	  set: {X-Scanned-By: pop3proxy}      # remove all of that name, then add one
//	  add: {X-Proxied: "yes"}             # added at the top
//
// Removals (remove, and the names in set) run first and apply to the
// message as it reached this filter, never to the fields it adds, so a
// name may appear in both remove and add: that is the same as set. The
// added fields (add and set together) go to the top of the header, in the
// order of their names (byte order), because a YAML mapping has no order
// Go could keep. Untouched fields and the body keep their bytes.
//
// Values go out as written, except that runs of white space become one
// space where the chain folds a long value (RFC 5322 §2.2.3). Non-ASCII
// values are written as UTF-8 (RFC 6532); use ASCII (or RFC 2047 encoded
// words) for old clients.
type Filter struct {
	Add    map[string]string `yaml:"add"`
	Remove []string          `yaml:"remove"`
	Set    map[string]string `yaml:"set"`

	edits []filter.Edit
}

// Provision checks the field names and values and prepares the edits, so
// that a mistake stops the proxy at start instead of failing messages.
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

	// added maps a lower-case name to the key that added it: two keys
	// naming the same field (X-A in add and set, or X-A and x-a) would add
	// it twice, which is never what a "set" or a one-line "add" means.
	added := map[string]string{}
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

// Judge returns the configured edits for every message.
func (h *Filter) Judge(context.Context, *filter.Message) (filter.Verdict, error) {
	// A copy, so that no caller can change what the next message gets.
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

// checkValue refuses what would break the header: CR or LF would
// start a field of the value's choosing, NUL and other controls are not
// allowed in a header (RFC 5322 §3.2.5), and a field too long for one line
// could need folding inside a word, where RFC 5322 allows none.
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
