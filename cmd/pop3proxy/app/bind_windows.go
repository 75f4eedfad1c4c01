package app

import (
	"errors"
	"fmt"
	"syscall"
)

// Winsock's reasons for a failed bind (winerror.h).
const (
	wsaeacces        = syscall.Errno(10013)
	wsaeaddrinuse    = syscall.Errno(10048)
	wsaeaddrnotavail = syscall.Errno(10049)
)

// bindProblem names a failed bind and its remedy on Windows, or returns ""
// for reasons without one. Windows has no privileged ports; a port it
// refuses is reserved, or held exclusively by another program.
func bindProblem(err error, key string, _ int) (problem, hint string) {
	switch {
	case errors.Is(err, wsaeacces):
		return "access denied", fmt.Sprintf("Windows reserves that port (netsh interface ipv4 show excludedportrange protocol=tcp) "+
			"or another program holds it exclusively; give %s another port", key)
	case errors.Is(err, wsaeaddrinuse):
		return "address already in use", fmt.Sprintf("another program (perhaps another pop3proxy) listens there; stop it or give %s another address", key)
	case errors.Is(err, wsaeaddrnotavail):
		return "address not available", fmt.Sprintf("no network interface of this host has that IP address; give %s one it has, or 0.0.0.0 for all", key)
	}
	return "", ""
}
