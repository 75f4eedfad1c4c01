package rspamd

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/internal/daemon"
	"github.com/pop3proxy/pop3proxy/scanners/internal/spamtag"
)

const (
	// maxMilterFields bounds the fields add_milter_headers adds; rspamd's
	// milter_headers module has 17 routines, most adding one field.
	maxMilterFields = 32
	maxMilterName   = 64
	// maxMilterValue bounds one field's value. X-Spamd-Result lists every
	// symbol with its options and runs to a few KiB on spam.
	maxMilterValue = 4096
)

// rspamdFields are rspamd 3.4's milter_headers X-* fields by default name,
// removed even when the reply does not name them: a message decided before
// the rules run (GTUBE, a pre-result) gets no milter block, and a sender's
// forged X-Spamd-Result would otherwise stay next to the verdict.
var rspamdFields = []string{
	"X-OS-Fingerprint", "X-Rspamd-Action", "X-Rspamd-Fuzzy", "X-Rspamd-Pre-Result",
	"X-Rspamd-Queue-Id", "X-Rspamd-Server", "X-Spam", "X-Spamd-Bar", "X-Spamd-Result",
	"X-Stat-Signature", "X-Virus",
}

// milterEdits removes the message's fields of every name in rspamdFields,
// add_headers or remove_headers (so a sender cannot forge rspamd's) and
// adds add_headers' fields. Only X-* names and Authentication-Results are
// taken: rspamd decides spam, not the message's structure, and the proxy
// is no place to drop a DKIM-Signature. The plugin's own X-Spam-* fields
// are ignored, as is remove_headers' occurrence number: all fields go.
func milterEdits(raw json.RawMessage) (edits []filter.Edit, skipped []string) {
	removed := map[string]bool{} // lower-case names already removed
	remove := func(name string) {
		if key := strings.ToLower(name); !removed[key] {
			removed[key] = true
			edits = append(edits, filter.Remove(name))
		}
	}
	for _, name := range rspamdFields {
		remove(name)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return edits, nil
	}
	var block struct {
		AddHeaders    map[string]json.RawMessage `json:"add_headers"`
		RemoveHeaders map[string]json.RawMessage `json:"remove_headers"`
	}
	if err := json.Unmarshal(raw, &block); err != nil {
		return edits, []string{"milter block: " + err.Error()}
	}
	for _, name := range sortedKeys(block.RemoveHeaders) {
		switch ok, own := milterName(name); {
		case own:
		case ok:
			remove(name)
		default:
			skipped = append(skipped, "remove "+daemon.Quote(name)+": not an X- field or Authentication-Results")
		}
	}

	var adds []filter.Edit
	for _, name := range sortedKeys(block.AddHeaders) {
		ok, own := milterName(name)
		if own {
			continue
		}
		if !ok {
			skipped = append(skipped, "add "+daemon.Quote(name)+": not an X- field or Authentication-Results")
			continue
		}
		values, valid := milterValues(block.AddHeaders[name])
		if !valid {
			skipped = append(skipped, "add "+daemon.Quote(name)+": value is not a string, an object with a value, or a list of them")
			continue
		}
		remove(name)
		for _, v := range values {
			if len(adds) == maxMilterFields {
				skipped = append(skipped, "add "+daemon.Quote(name)+": more than 32 fields")
				break
			}
			adds = append(adds, filter.Add(name, milterValue(v)))
		}
	}
	return append(edits, adds...), skipped
}

// milterName: ok if rspamd may set the field, own if the plugin writes it.
func milterName(name string) (ok, own bool) {
	if len(name) > maxMilterName || filter.CheckFieldName(name) != nil {
		return false, false
	}
	if spamtag.IsField(name) {
		return false, true
	}
	lower := strings.ToLower(name)
	if lower == "authentication-results" {
		return true, false
	}
	// The proxy's own marks (filter.UnscannedField) are not rspamd's.
	return strings.HasPrefix(lower, "x-") && !strings.HasPrefix(lower, "x-pop3proxy-"), false
}

// milterValues reads an add_headers entry: a string, {"value": ...,
// "order": ...}, or a list of either for several fields of one name.
func milterValues(raw json.RawMessage) ([]string, bool) {
	one := func(r json.RawMessage) (string, bool) {
		var s string
		if json.Unmarshal(r, &s) == nil {
			return s, true
		}
		var o struct {
			Value *string `json:"value"`
		}
		if json.Unmarshal(r, &o) == nil && o.Value != nil {
			return *o.Value, true
		}
		return "", false
	}
	if v, ok := one(raw); ok {
		return []string{v}, true
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil, false
	}
	values := make([]string, 0, len(list))
	for _, r := range list {
		v, ok := one(r)
		if !ok {
			return nil, false
		}
		values = append(values, v)
	}
	return values, true
}

// milterValue makes one line of printable ASCII (the chain folds it
// again): rspamd folds with CRLF or bare CR and a tab (docs/scanners.md,
// rspamd replies), and option strings may quote the message's own bytes.
func milterValue(v string) string {
	b := []byte(v)
	for i, c := range b {
		switch {
		case c < 0x20 || c == 0x7f:
			b[i] = ' '
		case c >= 0x80:
			b[i] = '?'
		}
	}
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > maxMilterValue {
		s = strings.TrimSpace(s[:maxMilterValue])
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := strings.Compare(strings.ToLower(a), strings.ToLower(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return keys
}
