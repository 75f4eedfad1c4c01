package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-multierror"
	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// validate checks values that decoded but make no sense, each reported with
// its key path.
func (c *Config) validate() []error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, yamlconf.NewFieldError(path, 0, format, args...))
	}

	listeners := 0
	for _, l := range listenSpecs(c) {
		if _, err := isLoopbackListen(l.addr); err != nil {
			bad(l.key, "%v", err)
			continue
		}
		listeners++
	}
	remote := c.remoteListener()
	if len(listenSpecs(c)) == 0 {
		bad("listen", "no listener: set at least one of listen, listen_tls, listen_proxy, listen_proxy_tls")
	}
	c.validateTLS(bad)
	if c.ListenProxy != "" || c.ListenProxyTLS != "" {
		if len(c.ProxyProtocol.Trusted) == 0 {
			bad("proxy_protocol.trusted", "must list the load balancers' addresses: a PROXY header from anyone else would let them pose as any client")
		}
	}
	for i, s := range c.ProxyProtocol.Trusted {
		if _, err := parsePrefix(s); err != nil {
			bad(fmt.Sprintf("proxy_protocol.trusted[%d]", i), "%v", err)
		}
	}
	positive(bad, "proxy_protocol.header_timeout", c.ProxyProtocol.HeaderTimeout)
	if c.MaxSize <= 0 {
		bad("max_size", "must be greater than 0")
	}
	if _, err := filter.ParseOversize(c.Oversize); err != nil {
		bad("oversize", "%v", err)
	}
	if c.SpoolDir != "" {
		if !filepath.IsAbs(c.SpoolDir) {
			bad("spool_dir", "must be an absolute path")
		} else if st, err := os.Stat(c.SpoolDir); err == nil && !st.IsDir() {
			bad("spool_dir", "%s is not a directory", c.SpoolDir)
		}
	}

	u := c.Upstream
	allow, err := upstream.NewAllowList(u.Allow)
	if err != nil {
		bad("upstream.allow", "%v", err)
	}
	if u.Default != "" {
		if _, _, err := net.SplitHostPort(u.Default); err != nil {
			bad("upstream.default", "must be host:port: %v", err)
		} else if allow != nil && len(u.Allow) > 0 && !allow.Allows(u.Default) {
			bad("upstream.default", "%q is not matched by upstream.allow, so no login could use it", u.Default)
		}
	}
	if u.Separators == "" && u.Default == "" {
		bad("upstream.separators", "must not be empty unless upstream.default is set (no login could be routed)")
	}
	for _, r := range u.Separators {
		if !strings.ContainsRune("%#@!", r) {
			bad("upstream.separators", "%q is not a supported separator (use any of %%, #, @, !)", r)
		}
	}
	if _, err := upstream.ParseTLSMode(u.TLS); err != nil {
		bad("upstream.tls", "%v", err)
	}
	if u.CAFile != "" {
		if _, err := loadCAFile(u.CAFile); err != nil {
			bad("upstream.ca_file", "%v", err)
		}
	}
	positive(bad, "upstream.dial_timeout", u.DialTimeout)
	positive(bad, "upstream.timeout", u.Timeout)
	if listeners > 0 && remote != "" && len(u.Allow) == 0 {
		bad("upstream.allow", "must be set because %s accepts remote clients: "+
			"without it anyone who can connect could make the proxy dial any host and port", remote)
	}
	switch u.AllowPrivate {
	case "auto", "true", "false":
	default:
		bad("upstream.allow_private", "%q is not one of auto, true, false", u.AllowPrivate)
	}
	if c.denyPrivate() {
		why := "allow_private: false"
		if u.AllowPrivate == "auto" {
			why = "allow_private: auto, and " + remote + " accepts remote clients"
		}
		if host, _, err := net.SplitHostPort(u.Default); err == nil {
			if ip, err := netip.ParseAddr(host); err == nil {
				if kind, private := upstream.PrivateAddr(ip); private {
					bad("upstream.default", "%s is a %s address, which upstream.allow_private refuses (%s); set allow_private: true to allow it", host, kind, why)
				}
			}
		}
		// An entry no login could ever use is a mistake, not a policy.
		for i, pattern := range u.Allow {
			if kind, private := privatePattern(pattern); private {
				bad(fmt.Sprintf("upstream.allow[%d]", i), "%s names only %s addresses, which upstream.allow_private refuses (%s); set allow_private: true to allow it", pattern, kind, why)
			}
		}
	}
	if u.MaxMessages < 1 {
		bad("upstream.max_messages", "must be at least 1")
	}
	for i, d := range u.Destinations {
		path := fmt.Sprintf("upstream.destinations[%d]", i)
		if d.Match == "" {
			bad(path+".match", "is required (a host:port pattern as in upstream.allow)")
		} else if _, err := upstream.NewAllowList([]string{d.Match}); err != nil {
			bad(path+".match", "%v", err)
		}
		if d.TLS != "" {
			if _, err := upstream.ParseTLSMode(d.TLS); err != nil {
				bad(path+".tls", "%v", err)
			}
		}
		if d.CAFile != "" {
			if _, err := loadCAFile(d.CAFile); err != nil {
				bad(path+".ca_file", "%v", err)
			}
		}
	}

	positive(bad, "scan_keepalive", c.ScanKeepalive)
	c.validateCache(bad)
	// Building the chain checks every filter block (unknown types and
	// keys, values each plugin rejects); the real chain is built again
	// with the configured logger when the proxy starts.
	if chain, err := filter.Build(c.Filters, nil); err != nil {
		var me *multierror.Error
		if errors.As(err, &me) {
			errs = append(errs, me.Errors...)
		} else {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, chain.CheckMaxSize(int64(c.MaxSize))...)
		chain.Close()
	}

	for i, s := range c.Shutdown.AllowFrom {
		if _, err := parsePrefix(s); err != nil {
			bad(fmt.Sprintf("shutdown.allow_from[%d]", i), "%v", err)
		}
	}
	positive(bad, "shutdown.drain_timeout", c.Shutdown.DrainTimeout)

	l := c.Limits
	if l.MaxLineLength < 255 {
		// RFC 2449 §4: servers that support CAPA accept 255-octet commands.
		bad("limits.max_line_length", "must be at least 255 (RFC 2449 §4)")
	}
	if l.MaxBadCommands < 1 {
		bad("limits.max_bad_commands", "must be at least 1")
	}
	positive(bad, "limits.auth_timeout", l.AuthTimeout)
	if l.IdleTimeout.D() < minIdleTimeout {
		bad("limits.idle_timeout", "must be at least 10m (RFC 1939 §3 autologout minimum)")
	}
	positive(bad, "limits.write_timeout", l.WriteTimeout)
	if l.MaxConnections < 1 {
		bad("limits.max_connections", "must be at least 1")
	}
	if l.MaxConnectionsPerIP < 1 {
		bad("limits.max_connections_per_ip", "must be at least 1")
	}
	if l.FailedLoginDelay < 0 {
		bad("limits.failed_login_delay", "must not be negative")
	}
	if l.MaxFailedLoginDelay < l.FailedLoginDelay {
		bad("limits.max_failed_login_delay", "must be at least limits.failed_login_delay")
	}
	positive(bad, "limits.handshake_timeout", l.HandshakeTimeout)

	if strings.ContainsAny(c.Server.Greeting, "\r\n<>") || len(c.Server.Greeting) > 400 {
		bad("server.greeting", "must be one line of at most 400 characters without < or > (clients read <...> as an APOP challenge)")
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "console", "json":
	default:
		bad("log.format", "%q is not one of console, json", c.Log.Format)
	}
	c.validateMetrics(bad)
	return errs
}

// remoteListener returns the key of the first listener that clients on
// other hosts can reach, or "" when the proxy serves this machine only. A
// PROXY protocol listener always counts as remote, wherever it listens:
// it exists to serve the clients of a load balancer.
func (c *Config) remoteListener() string {
	for _, l := range listenSpecs(c) {
		loopback, _ := isLoopbackListen(l.addr)
		if !loopback || l.proxyProto {
			return l.key
		}
	}
	return ""
}

// denyPrivate reports whether destinations on internal addresses are
// refused: always with allow_private: false, and with auto when remote
// clients could otherwise use the proxy as a way into the network behind
// it.
func (c *Config) denyPrivate() bool {
	a := c.Upstream.AllowPrivate
	return a == "false" || (a == "auto" && c.remoteListener() != "")
}

// privatePattern reports whether an upstream.allow pattern names only
// internal addresses: an IP literal, or a CIDR prefix inside one internal
// range. The ranges are CIDR blocks, so a prefix whose two ends fall in
// the same one lies wholly inside it; equal kinds at both ends and in the
// middle stand in for "the same block". Wildcard and host-name patterns
// may match public addresses and are never reported.
func privatePattern(pattern string) (kind string, private bool) {
	host := pattern
	if i := strings.LastIndexByte(pattern, ':'); i > 0 && !strings.HasSuffix(pattern, "]") {
		host = pattern[:i]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, err := netip.ParseAddr(host); err == nil {
		return upstream.PrivateAddr(ip)
	}
	p, err := netip.ParsePrefix(host)
	if err != nil {
		return "", false
	}
	p = p.Masked()
	kind, private = upstream.PrivateAddr(p.Addr())
	for _, a := range []netip.Addr{hostBitsSet(p, true), hostBitsSet(p, false)} {
		if k, ok := upstream.PrivateAddr(a); !ok || k != kind {
			return "", false
		}
	}
	return kind, private
}

// hostBitsSet returns the address of p with every host bit set (the last
// address), or with every host bit but the first set (the last address of
// the lower half).
func hostBitsSet(p netip.Prefix, first bool) netip.Addr {
	b := p.Addr().AsSlice()
	for bit := p.Bits(); bit < len(b)*8; bit++ {
		if bit == p.Bits() && !first {
			continue
		}
		b[bit/8] |= 0x80 >> (bit % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (c *Config) validateTLS(bad func(string, string, ...any)) {
	t := c.TLS
	switch t.Require {
	case "auto", "true", "false":
	default:
		bad("tls.require", "%q is not one of auto, true, false", t.Require)
	}
	switch {
	case (t.Cert == "") != (t.Key == ""):
		bad("tls", "cert and key go together")
	case t.Cert != "":
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			bad("tls.cert", "%v", err)
		}
	}
	if t.Cert == "" {
		for _, l := range listenSpecs(c) {
			if l.tls {
				bad(l.key, "needs tls.cert and tls.key")
			}
		}
		switch remote := c.remoteListener(); {
		case t.Require == "true":
			bad("tls.require", "needs tls.cert and tls.key (clients could never log in)")
		case t.Require == "auto" && remote != "":
			bad("tls.require", "%s accepts remote clients, but without tls.cert and tls.key their passwords would cross the network in clear; "+
				"configure a certificate, or set tls.require: false to accept that", remote)
		}
	}
}

func positive(bad func(string, string, ...any), path string, d yamlconf.Duration) {
	if d <= 0 {
		bad(path, "must be greater than 0")
	}
}

// isLoopbackListen reports whether a listen address only accepts local
// connections. An empty host listens on every interface.
func isLoopbackListen(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("must be host:port: %v", err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return false, fmt.Errorf("bad port %q", port)
	}
	if host == "localhost" {
		return true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if host == "" {
			return false, nil
		}
		return false, fmt.Errorf("host must be an IP address or localhost, got %q", host)
	}
	return ip.IsLoopback(), nil
}

// parsePrefix accepts a CIDR prefix or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
}

// loadCAFile reads PEM certificates to trust in addition to the system
// roots.
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate found in " + path)
	}
	return pool, nil
}
