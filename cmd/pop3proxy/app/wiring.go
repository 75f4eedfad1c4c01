package app

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// serverOptions maps the configuration onto the POP3 server's options;
// the caller adds the backend and what SHUTDOWN does.
func serverOptions(cfg *Config, log *zap.Logger) (pop3server.Options, error) {
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
	if cfg.TLS.Cert != "" {
		certs, err := newCertReloader(cfg.TLS.Cert, cfg.TLS.Key, log)
		if err != nil {
			return opts, err
		}
		opts.TLSConfig = certs.tlsConfig()
		opts.RequireTLS = cfg.TLS.requireTLS()
		if cfg.TLS.RequireExemptLoopback {
			// The client's address: behind a PROXY listener the real
			// client, so a local load balancer exempts nobody.
			opts.TLSExempt = func(c *pop3server.ConnInfo) bool { return isLoopbackAddr(c.RemoteAddr) }
		}
	}
	return opts, nil
}

// isLoopbackAddr reports whether a client connects from this host. A load
// balancer's own address (a LOCAL PROXY header) is no client's.
func isLoopbackAddr(a net.Addr) bool {
	if _, ok := a.(balancerAddr); ok {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// servedListener is a listener and how the server speaks on it.
type servedListener struct {
	ln  net.Listener
	tls bool // implicit TLS
}

// openListeners opens every configured listener; on error, the ones
// already open are closed.
func openListeners(cfg *Config, log *zap.Logger) (_ []servedListener, err error) {
	var out []servedListener
	defer func() {
		if err != nil {
			for _, l := range out {
				l.ln.Close()
			}
		}
	}()
	trusted := make([]netip.Prefix, 0, len(cfg.ProxyProtocol.Trusted))
	for _, s := range cfg.ProxyProtocol.Trusted {
		p, _ := parsePrefix(s) // validated when the config was loaded
		trusted = append(trusted, p)
	}
	for _, spec := range []struct {
		key, addr       string
		proxyProto, tls bool
	}{
		{"listen", cfg.Listen, false, false},
		{"listen_tls", cfg.ListenTLS, false, true},
		{"listen_proxy", cfg.ListenProxy, true, false},
		{"listen_proxy_tls", cfg.ListenProxyTLS, true, true},
	} {
		if spec.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", spec.addr)
		if err != nil {
			return out, fmt.Errorf("%s: %w", spec.key, err)
		}
		if spec.proxyProto {
			// The PROXY header comes first, before any TLS.
			if ln, err = proxyProtocolListener(ln, trusted, cfg.ProxyProtocol.HeaderTimeout.D(), log); err != nil {
				return out, fmt.Errorf("%s: %w", spec.key, err)
			}
		}
		out = append(out, servedListener{ln: ln, tls: spec.tls})
		log.Info("listening", zap.String("listener", spec.key), zap.String("addr", ln.Addr().String()),
			zap.Bool("tls", spec.tls), zap.Bool("proxy_protocol", spec.proxyProto))
	}
	return out, nil
}

// newGateway builds the relaying backend with its filter chain; sp holds
// the messages the chain looks at.
func newGateway(cfg *Config, sp *spool.Spool, log *zap.Logger) (*proxy.Gateway, error) {
	u := cfg.Upstream
	allow, err := upstream.NewAllowList(u.Allow)
	if err != nil {
		return nil, err
	}
	mode, err := upstream.ParseTLSMode(u.TLS)
	if err != nil {
		return nil, err
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
			return nil, fmt.Errorf("upstream.ca_file: %w", err)
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	overrides, err := destinationOverrides(u.Destinations)
	if err != nil {
		return nil, err
	}
	chain, err := filter.Build(cfg.Filters, log)
	if err != nil {
		return nil, err
	}
	oversize, _ := filter.ParseOversize(cfg.Oversize) // validated when the config was loaded
	chain.SetOversize(oversize)
	chain.SetSpool(sp)
	for _, name := range chain.Names() {
		log.Info("filter enabled", zap.String("filter", name))
	}
	if opts.DenyPrivate {
		log.Info("destinations on loopback, link-local and private addresses are refused (upstream.allow_private)")
	}
	return proxy.New(proxy.Options{
		Separators:    u.Separators,
		Default:       u.Default,
		Allow:         allow,
		Overrides:     overrides,
		Upstream:      opts,
		Logger:        log,
		Chain:         chain,
		MaxSize:       int64(cfg.MaxSize),
		Oversize:      oversize,
		Spool:         sp,
		ScanKeepalive: cfg.ScanKeepalive.D(),
	}), nil
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
