//go:build !unix

package exec

import (
	"runtime"

	"github.com/pop3proxy/pop3proxy/filter"
)

// Without process groups "exec" cannot be made safe (unsupportedFilter).
func init() {
	filter.Register(filter.PluginInfo{Type: "exec", New: func() filter.Plugin { return &unsupportedFilter{goos: runtime.GOOS} }})
}
