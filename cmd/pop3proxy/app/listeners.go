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
//   - Only peers in trusted may connect; others are closed as soon as they
//     are accepted, and each refused address is logged once.
//   - Every connection must start with a PROXY header (v1 or v2) within
//     headerTimeout (the REQUIRE policy: whether a header is present is
//     never guessed). A TCP header names the client; LOCAL (load-balancer
//     health checks) and UNSPEC leave the peer's own address; a UDP or
//     UNIX source cannot stand for a POP3 client and is refused.
//   - The header is read by the POP3 server in the connection's own
//     goroutine (pop3server.PreambleConn), before the greeting, so a slow
//     peer never holds up Accept and a connection still waiting for its
//     header is already one of the server's connections: counted against
//     its limits and closed by its shutdown.
//
// For implicit TLS behind a balancer (listen_proxy_tls), serve TLS on the
// returned listener: the header comes first, then the handshake.
func proxyProtocolListener(ln net.Listener, trusted []netip.Prefix, headerTimeout time.Duration, log *zap.Logger) (net.Listener, error) {
	if len(trusted) == 0 {
		return nil, errors.New("PROXY protocol listener: no trusted load balancer addresses")
	}
	if headerTimeout <= 0 {
		return nil, fmt.Errorf("PROXY protocol listener: header timeout %v must be positive", headerTimeout)
	}
	if log == nil {
		log = zap.NewNop()
	}
	p := &peerPolicy{
		trusted: append([]netip.Prefix(nil), trusted...),
		log:     log.With(zap.String("listener", ln.Addr().String())),
		refused: make(map[netip.Addr]struct{}),
	}
	return headerListener{&proxyproto.Listener{
		Listener:          ln,
		ConnPolicy:        p.decide,
		ValidateHeader:    validateHeader,
		ReadHeaderTimeout: headerTimeout,
	}}, nil
}

// peerPolicy admits trusted load balancers only.
type peerPolicy struct {
	trusted []netip.Prefix
	log     *zap.Logger

	mu      sync.Mutex
	refused map[netip.Addr]struct{} // untrusted peers already logged
}

// decide requires a header from a trusted peer. Refusals wrap
// ErrInvalidUpstream, which makes Accept close the connection and go on
// listening instead of failing.
func (p *peerPolicy) decide(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
	ap, err := netip.ParseAddrPort(o.Upstream.String())
	ip := ap.Addr().Unmap() // the zero Addr when unparsable
	if err == nil {
		for _, pre := range p.trusted {
			if pre.Contains(ip) {
				return proxyproto.REQUIRE, nil
			}
		}
	}
	p.mu.Lock()
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
type headerListener struct{ *proxyproto.Listener }

func (l headerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if pc, ok := c.(*proxyproto.Conn); ok {
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
