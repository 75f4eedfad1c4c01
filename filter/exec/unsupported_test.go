package exec

import (
	"strings"
	"testing"
)

// Where exec cannot run, the proxy refuses to start and says why, naming
// the system and the alternatives.
func TestUnsupportedSaysWhy(t *testing.T) {
	err := (&unsupportedFilter{goos: "windows"}).Provision(filterEnv())
	if err == nil {
		t.Fatal("the stand-in for exec provisioned")
	}
	for _, want := range []string{"exec filter is not available on windows", "process groups", "examples/filterplugin"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
