//go:build !unix

package exec

import (
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
)

func filterEnv() filter.Env { return filter.Env{Name: "exec"} }

// On this system a configuration with an exec filter is refused at start
// with the reason, at the filter's path, not as an unknown type.
func TestExecRefusedAtStart(t *testing.T) {
	_, err := filter.BuildYAML([]byte("- type: exec\n  command: [myfilter]\n  max_output: 1MiB\n  env: {A: b}\n"), zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "filters[0]: exec: the exec filter is not available on") {
		t.Fatalf("exec filter on this system: %v", err)
	}
}
