package app

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// serverOptions maps the configuration onto the POP3 server's options,
// with the certificate (nil without tls.cert) loaded from the files; the
// caller adds the backend and what SHUTDOWN does.
func serverOptions(cfg *Config, log *zap.Logger) (pop3server.Options, *certReloader, error) {
	l := cfg.Limits
	opts := pop3server.Options{
		Logger:              log,
		Greeting:            cfg.Server.Greeting,
		MaxLineLength:       l.MaxLineLength,
		MaxBadCommands:      l.MaxBadCommands,
		AuthTimeout:         l.AuthTimeout.D(),
		IdleTimeout:         l.IdleTimeout.D(),
		WriteTimeout:        l.WriteTimeout.D(),
		MaxConnections:      l.MaxConnections,
		MaxConnectionsPerIP: l.MaxConnectionsPerIP,
		FailedLoginDelay:    l.FailedLoginDelay.D(),
		MaxFailedLoginDelay: l.MaxFailedLoginDelay.D(),
		HandshakeTimeout:    l.HandshakeTimeout.D(),
	}
	allowFrom := make([]netip.Prefix, 0, len(cfg.Shutdown.AllowFrom))
	for _, s := range cfg.Shutdown.AllowFrom {
		p, _ := parsePrefix(s) // validated when the config was loaded
		allowFrom = append(allowFrom, p)
	}
	opts.AllowShutdown = func(c *pop3server.ConnInfo) bool { return addrAllowed(c.RemoteAddr, allowFrom) }
	if opts.FailedLoginDelay == 0 {
		opts.FailedLoginDelay = -1 // the framework reads 0 as "default"
	}
	var certs *certReloader
	if cfg.TLS.Cert != "" {
		var err error
		certs, err = newCertReloader(cfg.TLS.Cert, cfg.TLS.Key, log)
		if err != nil {
			return opts, nil, err
		}
		opts.TLSConfig = certs.tlsConfig()
		opts.RequireTLS = cfg.TLS.requireTLS()
		if cfg.TLS.RequireExemptLoopback {
			// The client's address: behind a PROXY listener the real
			// client, so a local load balancer exempts nobody.
			opts.TLSExempt = func(c *pop3server.ConnInfo) bool { return isLoopbackAddr(c.RemoteAddr) }
		}
	}
	return opts, certs, nil
}

// isLoopbackAddr reports whether a client connects from this host.
func isLoopbackAddr(a net.Addr) bool {
	ip, ok := clientIP(a)
	return ok && ip.IsLoopback()
}

// clientIP is the address a client connects from. A load balancer's own
// address (a LOCAL PROXY header) is no client's.
func clientIP(a net.Addr) (netip.Addr, bool) {
	if _, ok := a.(balancerAddr); ok {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap(), err == nil
}

// listenSpec is one configured listener: its key, address and how the
// server speaks on it.
type listenSpec struct {
	key, addr       string
	proxyProto, tls bool // PROXY header first; implicit TLS
}

// sameSocket reports whether a listener opened for s can go on serving o:
// the same address, spoken to the same way.
func (s listenSpec) sameSocket(o listenSpec) bool {
	return s.addr == o.addr && s.proxyProto == o.proxyProto && s.tls == o.tls
}

// listenSpecs returns the listeners cfg sets, in a fixed order.
func listenSpecs(cfg *Config) []listenSpec {
	var out []listenSpec
	for _, s := range []listenSpec{
		{"listen", cfg.Listen, false, false},
		{"listen_tls", cfg.ListenTLS, false, true},
		{"listen_proxy", cfg.ListenProxy, true, false},
		{"listen_proxy_tls", cfg.ListenProxyTLS, true, true},
	} {
		if s.addr != "" {
			out = append(out, s)
		}
	}
	return out
}

// trustedPrefixes is proxy_protocol.trusted, parsed.
func trustedPrefixes(cfg *Config) []netip.Prefix {
	trusted := make([]netip.Prefix, 0, len(cfg.ProxyProtocol.Trusted))
	for _, s := range cfg.ProxyProtocol.Trusted {
		p, _ := parsePrefix(s) // validated when the config was loaded
		trusted = append(trusted, p)
	}
	return trusted
}

// servedListener is an open listener and how the server speaks on it.
type servedListener struct {
	listenSpec
	ln     net.Listener
	header *headerListener // the PROXY layer of ln; nil on direct listeners
	// closed is set before a reload closes ln, so that the error its
	// Serve returns is not taken for a failure.
	closed atomic.Bool
}

// openListener opens the listener of spec; its error names the key and
// says what to do.
func openListener(spec listenSpec, cfg *Config, log *zap.Logger) (*servedListener, error) {
	ln, err := net.Listen("tcp", spec.addr)
	if err != nil {
		return nil, listenError(spec.key, spec.addr, err)
	}
	l := &servedListener{listenSpec: spec, ln: ln}
	if spec.proxyProto {
		// The PROXY header comes first, before any TLS.
		h, err := proxyProtocolListener(ln, trustedPrefixes(cfg), cfg.ProxyProtocol.HeaderTimeout.D(), log)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("%s: %w", spec.key, err)
		}
		l.ln, l.header = h, h
	}
	return l, nil
}

// logListening says that l accepts connections.
func logListening(log *zap.Logger, l *servedListener) {
	log.Info("listening", zap.String("listener", l.key), zap.String("addr", l.ln.Addr().String()),
		zap.Bool("tls", l.tls), zap.Bool("proxy_protocol", l.proxyProto))
}

// openListeners opens every configured listener; on error, the ones
// already open are closed.
func openListeners(cfg *Config, log *zap.Logger) ([]*servedListener, error) {
	var out []*servedListener
	for _, spec := range listenSpecs(cfg) {
		l, err := openListener(spec, cfg, log)
		if err != nil {
			for _, o := range out {
				o.ln.Close()
			}
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// newGateway builds the relaying backend with a new filter chain; sp holds
// the messages the chain looks at, and stats counts what it does. The
// caller closes the returned chain once no session uses the gateway.
func newGateway(cfg *Config, sp *spool.Spool, stats *proxy.Stats, obs *observability, cache *verdictcache.Cache, log *zap.Logger) (*proxy.Gateway, *filter.Chain, error) {
	u := cfg.Upstream
	allow, err := upstream.NewAllowList(u.Allow)
	if err != nil {
		return nil, nil, err
	}
	mode, err := upstream.ParseTLSMode(u.TLS)
	if err != nil {
		return nil, nil, err
	}
	opts := upstream.Options{
		DialTimeout:        u.DialTimeout.D(),
		Timeout:            u.Timeout.D(),
		TLS:                mode,
		InsecureSkipVerify: u.InsecureSkipVerify,
		// auto: a proxy that only this machine can reach may reach this
		// machine's private services; one on the network must not become
		// a way into the network behind it.
		DenyPrivate: cfg.denyPrivate(),
		MaxMessages: u.MaxMessages,
	}
	if u.CAFile != "" {
		pool, err := loadCAFile(u.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("upstream.ca_file: %w", err)
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	overrides, err := destinationOverrides(u.Destinations)
	if err != nil {
		return nil, nil, err
	}
	chain, err := filter.Build(cfg.Filters, log)
	if err != nil {
		return nil, nil, err
	}
	oversize, _ := filter.ParseOversize(cfg.Oversize) // validated when the config was loaded
	chain.SetObserver(obs.filterObserver())
	return proxy.New(proxy.Options{
		Separators:        u.Separators,
		Default:           u.Default,
		Allow:             allow,
		Overrides:         overrides,
		Upstream:          opts,
		Logger:            log,
		Chain:             chain,
		MaxSize:           int64(cfg.MaxSize),
		Oversize:          oversize,
		Spool:             sp,
		ScanKeepalive:     cfg.ScanKeepalive.D(),
		UpstreamKeepalive: u.Keepalive.D(),
		Stats:             stats,
		Observer:          obs.relayObserver(),
		Cache:             cache,
		ScanAhead:         cfg.ScanAhead,
	}), chain, nil
}

// destinationOverrides maps upstream.destinations.
func destinationOverrides(ds []DestinationConfig) (*upstream.Overrides, error) {
	list := make([]upstream.Override, 0, len(ds))
	for i, d := range ds {
		o := upstream.Override{Match: d.Match, InsecureSkipVerify: d.InsecureSkipVerify}
		if d.TLS != "" {
			mode, err := upstream.ParseTLSMode(d.TLS)
			if err != nil {
				return nil, fmt.Errorf("upstream.destinations[%d].tls: %w", i, err)
			}
			o.TLS = &mode
		}
		if d.CAFile != "" {
			pool, err := loadCAFile(d.CAFile)
			if err != nil {
				return nil, fmt.Errorf("upstream.destinations[%d].ca_file: %w", i, err)
			}
			o.RootCAs = pool
		}
		list = append(list, o)
	}
	return upstream.NewOverrides(list)
}
