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

// proxyProtocolListener wraps ln, a listener used only by load balancers
// (listen_proxy, listen_proxy_tls), for the PROXY protocol (v1 and v2,
// github.com/pires/go-proxyproto):
//
//   - Only peers whose address is in trusted may connect. Others are closed
//     as soon as they are accepted; each refused address is logged once.
//   - Every connection must start with a PROXY header within headerTimeout.
//     A connection without one, with a malformed one, or with one for a
//     transport other than TCP is closed without a word; whether a header
//     is present is never guessed.
//   - Accept returns a connection only after its header has been read, so
//     the server's greeting is written after the header, its deadlines are
//     its own, and RemoteAddr is the client's address from the header
//     (logs, per-IP limits and shutdown.allow_from see the real client). For
//     the LOCAL command (load-balancer health checks) and for the UNKNOWN
//     or unspecified family it is the peer's own address. Headers are read
//     concurrently: a slow or silent peer never holds up Accept.
//
// For implicit TLS behind a balancer (listen_proxy_tls), serve TLS on the
// returned listener: the header comes first, then the TLS handshake.
//
// Closing the returned listener closes ln and every connection whose header
// is still being read. On error (no trusted prefix, a timeout that is not
// positive) ln is left open.
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
	l := &proxyListener{
		ln:            ln,
		trusted:       append([]netip.Prefix(nil), trusted...),
		headerTimeout: headerTimeout,
		log:           log.With(zap.String("listener", ln.Addr().String())),
		ready:         make(chan net.Conn),
		done:          make(chan struct{}),
		failed:        make(chan struct{}),
		pending:       make(map[net.Conn]struct{}),
		refused:       make(map[netip.Addr]struct{}),
	}
	go l.acceptLoop()
	return l, nil
}

// proxyListener is the listener proxyProtocolListener returns.
type proxyListener struct {
	ln            net.Listener
	trusted       []netip.Prefix
	headerTimeout time.Duration
	log           *zap.Logger

	ready     chan net.Conn // connections whose header has been read
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
	failed    chan struct{} // closed when ln.Accept failed for good
	acceptErr error         // why; set before failed is closed

	mu      sync.Mutex
	pending map[net.Conn]struct{}   // raw connections whose header is being read
	refused map[netip.Addr]struct{} // untrusted peers already logged
}

// Accept returns the next connection whose PROXY header has been read.
func (l *proxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		if l.closed() {
			c.Close()
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.ln.Addr(), Err: net.ErrClosed}
		}
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.ln.Addr(), Err: net.ErrClosed}
	case <-l.failed:
		return nil, l.acceptErr
	}
}

// Close closes the underlying listener and the connections whose header
// has not arrived yet.
func (l *proxyListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.ln.Close()
		l.mu.Lock()
		for c := range l.pending {
			c.Close()
		}
		l.mu.Unlock()
	})
	return l.closeErr
}

// Addr is the underlying listener's address.
func (l *proxyListener) Addr() net.Addr { return l.ln.Addr() }

func (l *proxyListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// acceptLoop accepts raw connections, refuses untrusted peers and starts a
// header read for each trusted one.
func (l *proxyListener) acceptLoop() {
	var backoff time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if l.closed() {
				return
			}
			// Out of file descriptors and similar: wait and retry, as
			// net/http does.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.log.Warn("accept failed, retrying", zap.Error(err), zap.Duration("delay", backoff))
				select {
				case <-time.After(backoff):
				case <-l.done:
					return
				}
				continue
			}
			l.acceptErr = err
			close(l.failed)
			return
		}
		backoff = 0
		if !l.trustedPeer(raw.RemoteAddr()) {
			raw.Close()
			continue
		}
		if !l.addPending(raw) {
			raw.Close()
			return
		}
		go l.readHeader(raw)
	}
}

// trustedPeer reports whether addr may send PROXY headers, logging the first
// refusal of each address.
func (l *proxyListener) trustedPeer(addr net.Addr) bool {
	ap, err := netip.ParseAddrPort(addr.String())
	if err == nil {
		ip := ap.Addr().Unmap()
		for _, p := range l.trusted {
			if p.Contains(ip) {
				return true
			}
		}
	}
	ip := ap.Addr().Unmap() // the zero Addr when unparsable
	l.mu.Lock()
	_, seen := l.refused[ip]
	if !seen {
		if len(l.refused) >= maxRefusedPeersLogged {
			clear(l.refused)
		}
		l.refused[ip] = struct{}{}
	}
	l.mu.Unlock()
	if !seen {
		l.log.Warn("connection refused: peer is not in proxy_protocol.trusted (logged once per address)",
			zap.String("peer", addr.String()))
	}
	return false
}

// addPending registers a connection whose header is being read, unless the
// listener is closed.
func (l *proxyListener) addPending(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed() {
		return false
	}
	l.pending[c] = struct{}{}
	return true
}

func (l *proxyListener) removePending(c net.Conn) {
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
}

// readHeader reads the PROXY header of raw and hands the connection to
// Accept, or closes it.
func (l *proxyListener) readHeader(raw net.Conn) {
	defer l.removePending(raw)
	pc := proxyproto.NewConn(raw,
		proxyproto.WithPolicy(proxyproto.REQUIRE),
		proxyproto.SetReadHeaderTimeout(l.headerTimeout),
		proxyproto.ValidateHeader(validateHeader))
	// A zero-length Read processes the header and returns its error (the
	// same error every later Read and Write would return) without
	// consuming any data.
	if _, err := pc.Read(nil); err != nil {
		if !l.closed() {
			l.log.Info("connection closed: no valid PROXY header",
				zap.String("peer", raw.RemoteAddr().String()), zap.Error(err))
		}
		raw.Close()
		return
	}
	select {
	case l.ready <- pc:
	case <-l.done:
		raw.Close()
	}
}

// validateHeader accepts LOCAL headers and PROXY headers for TCP over IPv4
// or IPv6 or for an unspecified transport (whose RemoteAddr is the peer's);
// a UDP or UNIX source address cannot stand for a POP3 client.
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
