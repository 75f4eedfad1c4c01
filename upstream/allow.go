package upstream

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"
)

// AllowList restricts the upstream servers logins may be routed to, so the
// proxy is not an open relay to arbitrary hosts and ports.
//
// Patterns are "host:port" globs in path.Match syntax, matched
// case-insensitively, host and port separately: "*.example.com:995",
// "pop.example.net:*", "[2001:db8::*]:995". A bracketed part containing ':'
// is an IPv6 host, not a character class. Addresses are compared in their
// canonical form (RFC 5952 §4), so write IPv6 wildcards in that form; host
// names are compared as given, without DNS.
//
// A nil or empty AllowList allows everything; the configuration layer
// refuses that on a listener not on loopback.
type AllowList struct {
	rules []hostPortPattern
}

// hostPortPattern is one "host:port" glob of an AllowList or an Override.
type hostPortPattern struct {
	host, port string // lower-case path.Match patterns
}

// NewAllowList compiles patterns. It fails on a malformed glob (wrapping
// path.ErrBadPattern) and on a pattern without ":port" ("host:*" is any).
func NewAllowList(patterns []string) (*AllowList, error) {
	a := &AllowList{}
	for _, p := range patterns {
		r, err := parseHostPortPattern(p)
		if err != nil {
			return nil, fmt.Errorf("allow list pattern %q: %w", p, err)
		}
		a.rules = append(a.rules, r)
	}
	return a, nil
}

func parseHostPortPattern(p string) (hostPortPattern, error) {
	p = strings.ToLower(strings.TrimSpace(p))
	var r hostPortPattern
	if end := strings.IndexByte(p, ']'); strings.HasPrefix(p, "[") && end > 0 && strings.Contains(p[1:end], ":") {
		inner, rest := p[1:end], p[end+1:]
		if !strings.HasPrefix(rest, ":") {
			return r, fmt.Errorf("missing :port after IPv6 address")
		}
		if a, err := netip.ParseAddr(inner); err == nil {
			inner = a.String()
		}
		// Escaped, the brackets match themselves (path.Match).
		r.host, r.port = `\[`+inner+`\]`, rest[1:]
	} else {
		i := strings.LastIndexByte(p, ':')
		if i < 0 {
			return r, fmt.Errorf("missing :port (use host:* for any port)")
		}
		r.host, r.port = p[:i], p[i+1:]
	}
	if r.host == "" || r.port == "" {
		return r, fmt.Errorf("empty host or port")
	}
	for _, pat := range []string{r.host, r.port} {
		if _, err := path.Match(pat, ""); err != nil {
			return r, err
		}
	}
	return r, nil
}

// Allows reports whether addr (as Route.Addr returns it) matches a pattern.
// A nil or empty list allows every address; a malformed addr matches none.
func (a *AllowList) Allows(addr string) bool {
	if a == nil || len(a.rules) == 0 {
		return true
	}
	host, port, ok := canonicalHostPort(addr)
	if !ok {
		return false
	}
	for _, r := range a.rules {
		if r.match(host, port) {
			return true
		}
	}
	return false
}

// canonicalHostPort splits addr for matching: the host in lower case, an
// IP address in its canonical form, IPv6 in brackets.
func canonicalHostPort(addr string) (host, port string, ok bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return "", "", false
	}
	host = strings.ToLower(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
		if ip.Is6() {
			host = "[" + host + "]"
		}
	}
	return host, port, true
}

func (r hostPortPattern) match(host, port string) bool {
	hostOK, _ := path.Match(r.host, host)
	portOK, _ := path.Match(r.port, port)
	return hostOK && portOK
}
