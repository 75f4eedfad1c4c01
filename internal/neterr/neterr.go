// Package neterr shortens network errors for messages that already name
// the address and the step, as the upstream client's and the scanner
// plugins' do.
package neterr

import (
	"net"
	"os"
)

// Cause returns err without what a *net.OpError puts before its cause
// ("dial tcp 127.0.0.1:3310: connect: ", "read tcp a->b: "), which would
// repeat what the caller's message says. err stays in the chain, for
// errors.Is and As.
func Cause(err error) error {
	op, ok := err.(*net.OpError)
	if !ok || op.Err == nil {
		return err
	}
	cause := op.Err
	if se, ok := cause.(*os.SyscallError); ok && se.Err != nil {
		cause = se.Err
	}
	return WithText(cause.Error(), err)
}

// WithText is err with another text; err stays in the chain.
func WithText(text string, err error) error { return &relabelled{text: text, err: err} }

type relabelled struct {
	text string
	err  error
}

func (e *relabelled) Error() string { return e.text }
func (e *relabelled) Unwrap() error { return e.err }
