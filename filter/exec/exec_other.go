//go:build !unix

package exec

import (
	"runtime"

	"github.com/pop3proxy/pop3proxy/filter"
)

// Without process groups the exec filter cannot be made safe: "exec" is
// registered only to say so at start (unsupportedFilter).
func init() {
	filter.Register(filter.PluginInfo{Type: "exec", New: func() filter.Plugin { return &unsupportedFilter{goos: runtime.GOOS} }})
}
