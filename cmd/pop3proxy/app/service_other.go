//go:build !windows

package app

import (
	"errors"
	"io"
)

// startedAsService is false: only Windows has a service manager that
// needs a program to speak its protocol. systemd and launchd start
// pop3proxy as a plain process (dist/).
func startedAsService(string) (bool, error) { return false, nil }

// runService is never called outside Windows; it runs serve as it is.
func runService(serve func(stop, reload <-chan struct{}) error) error { return serve(nil, nil) }

// serviceCommand explains where the service files for this system are.
func serviceCommand(string, string, io.Writer) error {
	return errors.New("-service is for Windows; on Linux use dist/pop3proxy.service (systemd), on macOS dist/org.pop3proxy.pop3proxy.plist (launchd): see README.md, Install")
}
