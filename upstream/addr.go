package upstream

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPort is the POP3 port (RFC 1939 §3).
const DefaultPort = 110

// Route is where a login goes.
type Route struct {
	User string // the upstream user name
	Host string // a lower-case name, or a canonical IP address without brackets
	Port int    // 1-65535
}

// Addr returns "host:port", with IPv6 in brackets, for Dial and AllowList.
func (r Route) Addr() string { return net.JoinHostPort(r.Host, strconv.Itoa(r.Port)) }

// ParseLogin splits a login at the last of the separators (e.g. "%#@"):
// "me@example.com@pop.example.com:995" routes user "me@example.com" to
// pop.example.com:995, "a%b@host" routes "a%b" to host. The host part is
// "host", "host:port", "[v6]" or "[v6]:port", the port required if
// defaultPort is outside 1-65535. Without a separator the login is the user
// at defaultAddr ("" refuses it). *LoginError reports an empty user or host,
// a bad port or host, or a space or control character USER cannot carry.
func ParseLogin(login, separators, defaultAddr string, defaultPort int) (Route, error) {
	if defaultPort < 1 || defaultPort > 65535 {
		defaultPort = 0
	}
	i := -1
	if separators != "" {
		i = strings.LastIndexAny(login, separators)
	}
	if i < 0 {
		if defaultAddr == "" {
			return Route{}, &LoginError{Reason: "no upstream server in login"}
		}
		if err := checkUser(login); err != nil {
			return Route{}, err
		}
		host, port, err := splitHostPort(defaultAddr, 0)
		if err != nil {
			return Route{}, &LoginError{Reason: "invalid default upstream server"}
		}
		return Route{User: login, Host: host, Port: port}, nil
	}
	user, hostport := login[:i], login[i+1:]
	if err := checkUser(user); err != nil {
		return Route{}, err
	}
	host, port, err := splitHostPort(hostport, defaultPort)
	if err != nil {
		return Route{}, err
	}
	return Route{User: user, Host: host, Port: port}, nil
}

func checkUser(user string) error {
	if user == "" {
		return &LoginError{Reason: "empty user name"}
	}
	for i := 0; i < len(user); i++ {
		if c := user[i]; c <= ' ' || c == 0x7f {
			return &LoginError{Reason: "user name contains a space or control character"}
		}
	}
	return nil
}

// splitHostPort requires a port if defaultPort is 0.
func splitHostPort(s string, defaultPort int) (host string, port int, err error) {
	portStr := ""
	hasPort := false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, &LoginError{Reason: "missing ']' after IPv6 address"}
		}
		lit, rest := s[1:end], s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, &LoginError{Reason: "unexpected characters after IPv6 address"}
			}
			portStr, hasPort = rest[1:], true
		}
		a, perr := netip.ParseAddr(lit)
		if perr != nil || !a.Is6() || a.Zone() != "" {
			return "", 0, &LoginError{Reason: "invalid IPv6 address"}
		}
		s = a.String()
	} else {
		switch strings.Count(s, ":") {
		case 0:
		case 1:
			s, portStr, _ = strings.Cut(s, ":")
			hasPort = true
		default:
			return "", 0, &LoginError{Reason: "IPv6 addresses must be in brackets"}
		}
		if s == "" {
			return "", 0, &LoginError{Reason: "empty upstream host"}
		}
		if a, perr := netip.ParseAddr(s); perr == nil && a.Is4() {
			s = a.String()
		} else if !validHostname(s) {
			return "", 0, &LoginError{Reason: "invalid upstream host name"}
		}
		s = strings.ToLower(s)
	}
	port = defaultPort
	if hasPort || defaultPort == 0 {
		if port, err = parsePort(portStr); err != nil {
			return "", 0, err
		}
	}
	return s, port, nil
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 {
		return 0, &LoginError{Reason: "invalid port"}
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, &LoginError{Reason: "invalid port"}
		}
		n = n*10 + int(s[i]-'0')
	}
	if n < 1 || n > 65535 {
		return 0, &LoginError{Reason: "port out of range"}
	}
	return n, nil
}

// validHostname accepts letters, digits, '-', '.', '_', labels of 1-63 and 253
// characters in all, and no all-digit last label: resolvers might read
// "127.1" or "1.2.3.300" as IPv4 addresses the allow list never saw.
func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}
