package exec

import (
	"context"
	"fmt"
	"io"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// unsupportedFilter is "exec" without process groups (Windows): it takes Filter's
// keys, so a Unix configuration is refused with the reason, not "unknown key".
type unsupportedFilter struct {
	Command   []string          `yaml:"command"`
	MaxOutput yamlconf.ByteSize `yaml:"max_output"`
	Env       map[string]string `yaml:"env"`

	goos string
}

func errUnsupported(goos string) error {
	return fmt.Errorf("the exec filter is not available on %s: it needs Unix process groups, to kill a timed-out program together with everything it started; run pop3proxy on Linux, macOS or a BSD for it, or write the check as a Go filter plugin (examples/filterplugin)", goos)
}

// Provision refuses to start: the filter would not be safe.
func (u *unsupportedFilter) Provision(filter.Env) error { return errUnsupported(u.goos) }

// Modify is never reached (Provision fails); it makes the type a filter.
func (u *unsupportedFilter) Modify(context.Context, *filter.Message, io.Writer) (bool, error) {
	return false, errUnsupported(u.goos)
}
