package app

import (
	"slices"
	"testing"
)

// The reload summary names the keys that changed, section by section, and
// filter blocks by their content, not by where they stand in the file.
func TestChangedKeys(t *testing.T) {
	parse := func(doc string) *Config {
		t.Helper()
		cfg, err := ParseConfig([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	base := "listen: 127.0.0.1:1110\nfilters:\n  - type: header\n    add: {X-A: one}\n"
	a := parse(base)
	for _, same := range []string{
		"# moved down\n\n" + base,
		"listen: 127.0.0.1:1110\nfilters:\n  # a comment in the list\n  - {type: header, add: {X-A: one}} # and on a line\n",
	} {
		if got := changedKeys(a, parse(same)); len(got) != 0 {
			t.Errorf("the same configuration differs in %v:\n%s", got, same)
		}
	}
	b := parse("listen: 127.0.0.1:1111\nlimits:\n  max_connections: 5\nlog:\n  level: debug\nfilters:\n  - type: header\n    add: {X-A: two}\n")
	want := []string{"listen", "filters", "limits.max_connections", "log.level"}
	got := changedKeys(a, b)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("changed keys %v, want %v", got, want)
	}
}
