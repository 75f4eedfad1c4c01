package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"
)

// AllowList restricts the upstream servers logins may be routed to, so the
// proxy is not an open relay to arbitrary hosts and ports. A pattern is
// "host:port"; the port is a path.Match glob ("995", "*", "99[05]"), the
// host one of:
//   - an IPv4 prefix, "192.0.2.0/24", or an IPv6 prefix in brackets,
//     "[2001:db8::/32]";
//   - an IPv4 glob of digits, dots and * ? [ ] - ^ \ (at least one digit
//     or dot), "192.0.2.*", "*.*.*.*", matched against dotted decimal;
//   - an IPv6 address or glob in brackets, "[2001:db8::*]", matched against
//     the canonical form (RFC 5952 §4), so write wildcards in that form (a
//     bracketed part without ':' is a character class, not an address);
//   - anything else, a host name glob matched case-insensitively against
//     the name in the login, without DNS: "*.example.com". "*" alone
//     matches every host, names and addresses alike.
//
// Address patterns never match a host name: "192.0.2.*" must not admit
// "192.0.2.evil.example", whose owner can point it anywhere. An IPv4-mapped
// IPv6 address (RFC 4291 §2.5.5.2) is matched as the IPv4 address it
// carries, as dialled. A nil or empty AllowList allows everything; the
// configuration layer refuses that on a listener not on loopback.
type AllowList struct {
	rules []hostPortPattern
}

type patternKind uint8

const (
	nameGlob patternKind = iota // any host, as text
	ipv4Glob                    // IPv4 addresses, dotted decimal
	ipv6Glob                    // IPv6 addresses, canonical form
	ipPrefix                    // IP addresses inside a prefix
)

// hostPortPattern is one "host:port" pattern of an AllowList or an Override.
type hostPortPattern struct {
	kind   patternKind
	host   string       // lower-case path.Match pattern; not for ipPrefix
	prefix netip.Prefix // ipPrefix
	port   string       // path.Match pattern
}

// NewAllowList compiles patterns. It fails on a malformed glob (wrapping
// path.ErrBadPattern) or prefix, and on a missing ":port" ("host:*" is any).
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
			return r, errors.New("missing :port after IPv6 address")
		}
		r.port = rest[1:]
		if strings.Contains(inner, "/") {
			pfx, err := netip.ParsePrefix(inner)
			if err != nil || !pfx.Addr().Is6() {
				return r, fmt.Errorf("invalid IPv6 prefix %q", inner)
			}
			r.kind, r.prefix = ipPrefix, unmapPrefix(pfx)
		} else {
			if a, err := netip.ParseAddr(inner); err == nil {
				inner = a.String()
			}
			r.kind, r.host = ipv6Glob, inner
		}
	} else {
		i := strings.LastIndexByte(p, ':')
		if i < 0 {
			return r, errors.New("missing :port (use host:* for any port)")
		}
		r.host, r.port = p[:i], p[i+1:]
		switch {
		case strings.Contains(r.host, ":"):
			return r, errors.New("an IPv6 address goes in brackets: [2001:db8::1]:110")
		case strings.Contains(r.host, "/"):
			pfx, err := netip.ParsePrefix(r.host)
			if err != nil || !pfx.Addr().Is4() {
				return r, fmt.Errorf("invalid IPv4 prefix %q (an IPv6 prefix goes in brackets)", r.host)
			}
			r.kind, r.prefix, r.host = ipPrefix, pfx.Masked(), ""
		case looksIPv4(r.host):
			r.kind = ipv4Glob
		}
	}
	if (r.kind != ipPrefix && r.host == "") || r.port == "" {
		return r, errors.New("empty host or port")
	}
	for _, pat := range []string{r.host, r.port} {
		if _, err := path.Match(pat, ""); err != nil {
			return r, err
		}
	}
	return r, nil
}

// looksIPv4 wants only digits, dots and glob metacharacters, not metacharacters
// alone ("*" is any host).
func looksIPv4(host string) bool {
	digitOrDot := false
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case c >= '0' && c <= '9' || c == '.':
			digitOrDot = true
		case strings.IndexByte(`*?[]-^\`, c) >= 0:
		default:
			return false
		}
	}
	return digitOrDot
}

// unmapPrefix turns an IPv4-mapped prefix (::ffff:a.b.c.d/96 or longer)
// into the IPv4 prefix it stands for, since addresses are matched unmapped.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// Allows reports whether addr (as Route.Addr returns it) matches a pattern.
// A nil or empty list allows every address; a malformed addr matches none.
func (a *AllowList) Allows(addr string) bool {
	if a == nil || len(a.rules) == 0 {
		return true
	}
	t, ok := parseTarget(addr)
	if !ok {
		return false
	}
	for _, r := range a.rules {
		if r.match(t) {
			return true
		}
	}
	return false
}

type target struct {
	name string     // lower-case host; an address in canonical form, IPv6 in brackets
	ip   netip.Addr // the address, unmapped; invalid for a host name
	port string
}

// parseTarget refuses an address with a zone: ParseLogin never produces one.
func parseTarget(addr string) (target, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return target{}, false
	}
	t := target{name: strings.ToLower(host), port: port}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return target{}, false
		}
		t.ip = ip.Unmap()
		t.name = t.ip.String()
		if t.ip.Is6() {
			t.name = "[" + t.name + "]"
		}
	}
	return t, true
}

func (r hostPortPattern) match(t target) bool {
	if ok, _ := path.Match(r.port, t.port); !ok {
		return false
	}
	switch r.kind {
	case ipPrefix:
		return t.ip.IsValid() && r.prefix.Contains(t.ip)
	case ipv4Glob:
		return t.ip.Is4() && globMatch(r.host, t.ip.String())
	case ipv6Glob:
		return t.ip.Is6() && globMatch(r.host, t.ip.String())
	}
	return globMatch(r.host, t.name)
}

func globMatch(pattern, s string) bool {
	ok, _ := path.Match(pattern, s)
	return ok
}
