//go:build unix

package exec

import (
	"reflect"
	"slices"
	"testing"

	"github.com/pop3proxy/pop3proxy/filter"
)

func filterEnv() filter.Env { return filter.Env{Name: "exec"} }

// The stand-in registered on Windows takes exactly the keys of the real
// filter, so that a configuration written for Unix gets the clear "not
// available" message there, not an unknown-key error first.
func TestUnsupportedTakesTheSameKeys(t *testing.T) {
	keys := func(v any) []string {
		var out []string
		typ := reflect.TypeOf(v).Elem()
		for i := range typ.NumField() {
			if tag := typ.Field(i).Tag.Get("yaml"); tag != "" {
				out = append(out, tag)
			}
		}
		slices.Sort(out)
		return out
	}
	if real, stand := keys(&Filter{}), keys(&unsupportedFilter{}); !slices.Equal(real, stand) {
		t.Errorf("exec keys %v, the Windows stand-in's %v", real, stand)
	}
}
