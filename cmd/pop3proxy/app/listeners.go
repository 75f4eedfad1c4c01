package app

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"go.uber.org/zap"
)

// maxRefusedPeersLogged bounds the memory used to log each refused peer
// address once; when it is full, the set starts over.
const maxRefusedPeersLogged = 4096

// proxyProtocolListener puts ln, a listener used only by load balancers
// (listen_proxy, listen_proxy_tls), behind go-proxyproto's Listener:
//
//   - Only peers in trusted may connect; others are closed on accept, and
//     each refused address is logged once.
//   - Every connection must start with a PROXY header (v1 or v2) within
//     headerTimeout (REQUIRE: presence is never guessed). A TCP header
//     names the client; LOCAL (health checks) and UNSPEC leave the peer's
//     own address; a UDP or UNIX source is no POP3 client and is refused.
//   - The POP3 server reads the header in the connection's own goroutine
//     (pop3server.PreambleConn), before the greeting, so a slow peer never
//     holds up Accept and a connection awaiting its header already counts
//     against the server's limits and is closed by its shutdown.
//
// For listen_proxy_tls, serve TLS on the returned listener: the header
// comes first, then the handshake. headerListener.update changes the
// trusted peers and header timeout without rebinding, for reloads.
func proxyProtocolListener(ln net.Listener, trusted []netip.Prefix, headerTimeout time.Duration, log *zap.Logger) (*headerListener, error) {
	if log == nil {
		log = zap.NewNop()
	}
	p := &peerPolicy{
		log:     log.With(zap.String("listener", ln.Addr().String())),
		refused: make(map[netip.Addr]struct{}),
	}
	if err := p.update(trusted, headerTimeout); err != nil {
		return nil, err
	}
	return &headerListener{
		Listener: &proxyproto.Listener{
			Listener:       ln,
			ConnPolicy:     p.decide,
			ValidateHeader: validateHeader,
		},
		policy: p,
	}, nil
}

// peerPolicy admits trusted load balancers only.
type peerPolicy struct {
	log *zap.Logger

	mu            sync.Mutex
	trusted       []netip.Prefix
	headerTimeout time.Duration
	refused       map[netip.Addr]struct{} // untrusted peers already logged
}

// update applies to connections accepted from now on.
func (p *peerPolicy) update(trusted []netip.Prefix, headerTimeout time.Duration) error {
	if len(trusted) == 0 {
		return errors.New("PROXY protocol listener: no trusted load balancer addresses")
	}
	if headerTimeout <= 0 {
		return fmt.Errorf("PROXY protocol listener: header timeout %v must be positive", headerTimeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trusted = append([]netip.Prefix(nil), trusted...)
	p.headerTimeout = headerTimeout
	return nil
}

func (p *peerPolicy) timeout() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.headerTimeout
}

// decide requires a header from a trusted peer. Refusals wrap
// ErrInvalidUpstream, which makes Accept close the connection and go on
// listening instead of failing.
func (p *peerPolicy) decide(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
	ap, err := netip.ParseAddrPort(o.Upstream.String())
	ip := ap.Addr().Unmap() // the zero Addr when unparsable
	p.mu.Lock()
	if err == nil {
		for _, pre := range p.trusted {
			if pre.Contains(ip) {
				p.mu.Unlock()
				return proxyproto.REQUIRE, nil
			}
		}
	}
	_, seen := p.refused[ip]
	if !seen {
		if len(p.refused) >= maxRefusedPeersLogged {
			clear(p.refused)
		}
		p.refused[ip] = struct{}{}
	}
	p.mu.Unlock()
	if !seen {
		p.log.Warn("connection refused: peer is not in proxy_protocol.trusted (logged once per address)",
			zap.String("peer", o.Upstream.String()))
	}
	return proxyproto.REJECT, fmt.Errorf("%w: %s", proxyproto.ErrInvalidUpstream, o.Upstream)
}

// validateHeader accepts LOCAL headers and PROXY headers for TCP over IPv4
// or IPv6 or for an unspecified transport (whose RemoteAddr is the peer's).
func validateHeader(h *proxyproto.Header) error {
	if h.Command.IsLocal() {
		return nil
	}
	switch h.TransportProtocol {
	case proxyproto.TCPv4, proxyproto.TCPv6, proxyproto.UNSPEC:
		return nil
	}
	return fmt.Errorf("proxyproto: unsupported transport %#x in PROXY header", byte(h.TransportProtocol))
}

// headerListener hands out connections whose header the POP3 server reads
// through pop3server.PreambleConn.
type headerListener struct {
	*proxyproto.Listener
	policy *peerPolicy
}

// update applies to connections accepted from now on.
func (l *headerListener) update(trusted []netip.Prefix, headerTimeout time.Duration) error {
	return l.policy.update(trusted, headerTimeout)
}

func (l *headerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if pc, ok := c.(*proxyproto.Conn); ok {
		// Set before anyone reads the connection: the header is read
		// in the connection's own goroutine, later.
		proxyproto.SetReadHeaderTimeout(l.policy.timeout())(pc)
		return headerConn{pc}, nil
	}
	return c, err
}

type headerConn struct{ *proxyproto.Conn }

// RemoteAddr is the client's address from the header. For a LOCAL header
// (a health check) or one without addresses it is the balancer's own
// address, wrapped in balancerAddr so that nothing takes the balancer for
// a local client: a balancer on the same host would otherwise exempt its
// connections from tls.require and let them send SHUTDOWN.
func (c headerConn) RemoteAddr() net.Addr {
	a := c.Conn.RemoteAddr()
	if h := c.Conn.ProxyHeader(); h == nil || h.Command.IsLocal() || h.TransportProtocol == proxyproto.UNSPEC {
		return balancerAddr{a}
	}
	return a
}

// balancerAddr is a load balancer's own address on a PROXY listener: no
// client's.
type balancerAddr struct{ net.Addr }

// ReadPreamble reads and checks the PROXY header. A zero-length Read
// processes the header and returns its error (the one every later Read
// and Write would return) without consuming any data.
func (c headerConn) ReadPreamble() error {
	_, err := c.Conn.Read(nil)
	return err
}

// bindError is a listener that could not be opened, said in the terms of
// the configuration: the key, the address, and what to do about it.
type bindError struct {
	key, addr string
	problem   string // "permission denied"
	hint      string // what to do
	err       error
}

func (e *bindError) Error() string {
	return e.key + " " + e.addr + ": " + e.problem + ": " + e.hint
}

func (e *bindError) Unwrap() error { return e.err }

// listenError explains why key's address could not be bound, when the
// operating system's reason has a known remedy.
func listenError(key, addr string, err error) error {
	port := -1
	if _, p, splitErr := net.SplitHostPort(addr); splitErr == nil {
		if n, lookupErr := net.LookupPort("tcp", p); lookupErr == nil {
			port = n
		}
	}
	if problem, hint := bindProblem(err, key, port); problem != "" {
		return &bindError{key: key, addr: addr, problem: problem, hint: hint, err: err}
	}
	return fmt.Errorf("%s %s: %w", key, addr, err)
}
