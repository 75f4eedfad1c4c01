// Package sockaddr parses the address keys of the scanner plugins:
// unix:///path or tcp://host:port.
package sockaddr

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// maxUnixPath is the longest socket path Linux accepts: sun_path holds 108
// bytes, the terminating NUL included.
const maxUnixPath = 107

// Parse turns an address key into a network and address for net.Dial;
// hint is added to errors to show a working value.
func Parse(s, hint string) (network, address string, err error) {
	if s == "" {
		return "", "", errors.New("address is required; " + hint)
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return "", "", fmt.Errorf("address %q has no scheme; %s", s, hint)
	}
	switch strings.ToLower(scheme) {
	case "unix":
		switch {
		case !strings.HasPrefix(rest, "/"):
			return "", "", fmt.Errorf("address %q: the socket path must be absolute (three slashes: unix:///run/...)", s)
		case strings.HasSuffix(rest, "/"):
			return "", "", fmt.Errorf("address %q: the socket path names a directory", s)
		case len(rest) > maxUnixPath:
			return "", "", fmt.Errorf("address %q: a unix socket path can have at most %d bytes", s, maxUnixPath)
		case strings.ContainsRune(rest, 0):
			return "", "", fmt.Errorf("address %q: the socket path contains NUL", s)
		}
		return "unix", rest, nil
	case "tcp":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", "", fmt.Errorf("address %q: %v; %s", s, err, hint)
		}
		if host == "" || strings.ContainsAny(host, "/?#@ ") {
			return "", "", fmt.Errorf("address %q: needs a host name or IP address before the port; %s", s, hint)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return "", "", fmt.Errorf("address %q: port %q is not a number from 1 to 65535", s, port)
		}
		return "tcp", net.JoinHostPort(host, port), nil
	}
	return "", "", fmt.Errorf("address %q: scheme %q is not supported; %s", s, scheme, hint)
}
