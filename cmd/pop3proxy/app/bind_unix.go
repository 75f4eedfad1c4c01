//go:build !windows

package app

import (
	"errors"
	"fmt"
	"syscall"
)

// bindProblem names a failed bind and its remedy on Unix, or returns ""
// for reasons without one.
func bindProblem(err error, key string, port int) (problem, hint string) {
	switch {
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		if port > 0 && port < 1024 {
			return "permission denied", "ports below 1024 need root or the CAP_NET_BIND_SERVICE capability " +
				"(setcap or the systemd unit's AmbientCapabilities, see README, Install), or use a port above 1023"
		}
		return "", ""
	case errors.Is(err, syscall.EADDRINUSE):
		return "address already in use", fmt.Sprintf("another program (perhaps another pop3proxy) listens there; stop it or give %s another address", key)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "address not available", fmt.Sprintf("no network interface of this host has that IP address; give %s one it has, or 0.0.0.0 for all", key)
	}
	return "", ""
}
