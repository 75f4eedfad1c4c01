package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// ppTestTimeout is the header timeout of the tests: long enough for a
// loaded CI machine to send a header in time, short enough to wait for.
const ppTestTimeout = 500 * time.Millisecond

// ppServer is a POP3 server behind proxyProtocolListener. Each greeted
// connection's addresses ("<RemoteAddr> <LocalAddr>", as the server sees
// them) go to accepted.
type ppServer struct {
	ln       net.Listener
	srv      *pop3server.Server
	accepted chan string
	logs     *observer.ObservedLogs
}

func startPPServer(t *testing.T, trusted ...string) *ppServer {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var prefixes []netip.Prefix
	for _, s := range trusted {
		prefixes = append(prefixes, netip.MustParsePrefix(s))
	}
	core, logs := observer.New(zap.DebugLevel)
	ln, err := proxyProtocolListener(raw, prefixes, ppTestTimeout, zap.New(core))
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	s := &ppServer{ln: ln, accepted: make(chan string, 100), logs: logs}
	s.srv, err = pop3server.NewServer(pop3server.Options{
		Backend: pop3server.BackendFunc(func(context.Context, *pop3server.ConnInfo, string, string) (pop3server.Session, error) {
			return nil, pop3server.ErrAuthFailed
		}),
		Logger: zap.New(core),
		OnConnect: func(c *pop3server.ConnInfo) error {
			s.accepted <- c.RemoteAddr.String() + " " + c.LocalAddr.String()
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(ln) }()
	t.Cleanup(func() {
		s.srv.Close()
		if err := <-done; !errors.Is(err, pop3server.ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed after Close", err)
		}
	})
	return s
}

// greeted reads the greeting and returns the addresses the server saw.
func (s *ppServer) greeted(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK ") {
		t.Fatalf("greeting = %q, %v", line, err)
	}
	select {
	case a := <-s.accepted:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("greeted, but OnConnect saw nothing")
		return ""
	}
}

func (s *ppServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// expectClosed checks that the server closes c without sending anything,
// and returns how long that took.
func expectClosed(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n > 0 {
		t.Fatalf("server sent %q, want the connection closed silently", buf[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after 5s")
	}
	if err == nil {
		t.Fatal("Read returned no data and no error")
	}
	return time.Since(start)
}

func (s *ppServer) expectNoneAccepted(t *testing.T) {
	t.Helper()
	select {
	case a := <-s.accepted:
		t.Fatalf("connection from %s was handed to the server", a)
	default:
	}
}

func tcpAddr(s string) *net.TCPAddr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

func TestProxyProtocolHeaders(t *testing.T) {
	for _, tc := range []struct {
		name     string
		version  byte
		src, dst string
	}{
		{"v1 IPv4", 1, "192.0.2.1:40000", "192.0.2.2:110"},
		{"v1 IPv6", 1, "[2001:db8::1]:40001", "[2001:db8::2]:995"},
		{"v2 IPv4", 2, "198.51.100.7:50000", "198.51.100.8:110"},
		{"v2 IPv6", 2, "[2001:db8::7]:50001", "[2001:db8::8]:110"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startPPServer(t, "127.0.0.1/32")
			c := s.dial(t)
			h := proxyproto.HeaderProxyFromAddrs(tc.version, tcpAddr(tc.src), tcpAddr(tc.dst))
			raw, err := h.Format()
			if err != nil {
				t.Fatal(err)
			}
			// The header and the first command in one segment: nothing
			// after the header may be lost.
			if _, err := c.Write(append(raw, "CAPA\r\n"...)); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(c)
			if got, want := s.greeted(t, r), tc.src+" "+tc.dst; got != want {
				t.Errorf("the server saw %q, want %q", got, want)
			}
			if capa, _ := r.ReadString('\n'); !strings.HasPrefix(capa, "+OK") {
				t.Errorf("CAPA answered %q; the line sent right after the header was lost", capa)
			}
		})
	}
}

func TestProxyProtocolNoGreetingBeforeHeader(t *testing.T) {
	s := startPPServer(t, "127.0.0.1/32")
	c := s.dial(t)
	c.SetReadDeadline(time.Now().Add(ppTestTimeout / 2))
	if n, err := c.Read(make([]byte, 64)); n > 0 || !isTimeout(err) {
		t.Fatalf("before the header: Read = %d, %v; want nothing (timeout)", n, err)
	}
	s.expectNoneAccepted(t)
	if _, err := proxyproto.HeaderProxyFromAddrs(1, tcpAddr("192.0.2.1:40000"), tcpAddr("192.0.2.2:110")).WriteTo(c); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got := s.greeted(t, bufio.NewReader(c)); !strings.HasPrefix(got, "192.0.2.1:40000 ") {
		t.Fatalf("the server saw %q", got)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyProtocolLocalUsesPeerAddress(t *testing.T) {
	s := startPPServer(t, "127.0.0.1/32")
	c := s.dial(t)
	local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if _, err := local.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	if got, want := s.greeted(t, bufio.NewReader(c)), c.LocalAddr().String()+" "+c.RemoteAddr().String(); got != want {
		t.Errorf("the server saw %q, want the peer's own addresses %q", got, want)
	}
}

func TestProxyProtocolV1UnknownUsesPeerAddress(t *testing.T) {
	s := startPPServer(t, "127.0.0.1/32")
	c := s.dial(t)
	io.WriteString(c, "PROXY UNKNOWN\r\n")
	if got, want := s.greeted(t, bufio.NewReader(c)), c.LocalAddr().String()+" "; !strings.HasPrefix(got, want) {
		t.Errorf("the server saw %q, want it to start with %q", got, want)
	}
}

func TestProxyProtocolUntrustedPeerClosed(t *testing.T) {
	// The test client connects from 127.0.0.1, which is not trusted.
	s := startPPServer(t, "10.0.0.0/8", "::1/128")
	for range 3 {
		c := s.dial(t)
		// Even with a valid header, the peer may not speak.
		proxyproto.HeaderProxyFromAddrs(1, tcpAddr("192.0.2.1:40000"), tcpAddr("192.0.2.2:110")).WriteTo(c)
		if d := expectClosed(t, c); d >= ppTestTimeout {
			t.Errorf("untrusted peer closed after %v, want at once (before the header timeout)", d)
		}
	}
	s.expectNoneAccepted(t)
	refusals := s.logs.FilterMessageSnippet("not in proxy_protocol.trusted").All()
	if len(refusals) != 1 {
		t.Fatalf("%d refusal log entries for 3 connections from one address, want 1", len(refusals))
	}
	if peer := refusals[0].ContextMap()["peer"]; !strings.HasPrefix(peer.(string), "127.0.0.1:") {
		t.Errorf("refusal logged peer %v", peer)
	}
}

func TestProxyProtocolMissingHeaderRefused(t *testing.T) {
	s := startPPServer(t, "127.0.0.1/32")
	c := s.dial(t)
	d := expectClosed(t, c)
	if d < ppTestTimeout*8/10 || d > ppTestTimeout+2*time.Second {
		t.Errorf("silent client closed after %v, want about the header timeout %v", d, ppTestTimeout)
	}
	s.expectNoneAccepted(t)
	if n := s.logs.FilterMessageSnippet("connection closed before the greeting").Len(); n != 1 {
		t.Errorf("%d log entries for the missing header, want 1", n)
	}
}

func TestProxyProtocolBadHeadersClosed(t *testing.T) {
	udp := proxyproto.HeaderProxyFromAddrs(2,
		&net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 40000}, &net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 110})
	udpRaw, err := udp.Format()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, data string }{
		{"POP3 command", "USER alice\r\n"},
		{"HTTP", "GET / HTTP/1.0\r\n\r\n"},
		{"v1 garbage", "PROXY TCP4 not an address\r\n"},
		{"v1 without CRLF", "PROXY TCP4 192.0.2.1 192.0.2.2 40000 110 and then some more text that never ends in a line break at all........\r\n"},
		{"v1 partial", "PROXY TCP4 192.0.2.1 "},
		{"v2 bad version", "\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + strings.Repeat("\x00", 12)},
		{"v2 UDP", string(udpRaw)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startPPServer(t, "127.0.0.1/32")
			c := s.dial(t)
			io.WriteString(c, tc.data)
			if d := expectClosed(t, c); d > ppTestTimeout+2*time.Second {
				t.Errorf("closed after %v", d)
			}
			s.expectNoneAccepted(t)
		})
	}
}

// A peer that never sends its header must not hold up other connections:
// headers are read concurrently, not in Accept.
func TestProxyProtocolSlowPeerDoesNotBlockAccept(t *testing.T) {
	s := startPPServer(t, "127.0.0.1/32")
	s.dial(t) // silent
	time.Sleep(50 * time.Millisecond)
	c := s.dial(t)
	start := time.Now()
	proxyproto.HeaderProxyFromAddrs(2, tcpAddr("192.0.2.9:1234"), tcpAddr("192.0.2.2:110")).WriteTo(c)
	if got := s.greeted(t, bufio.NewReader(c)); !strings.HasPrefix(got, "192.0.2.9:1234 ") {
		t.Fatalf("the server saw %q", got)
	}
	if d := time.Since(start); d >= ppTestTimeout/2 {
		t.Errorf("greeting took %v behind a silent peer", d)
	}
}

func TestProxyProtocolCloseClosesPending(t *testing.T) {
	s := startPPServer(t, "127.0.0.1/32")
	c := s.dial(t)
	time.Sleep(50 * time.Millisecond) // accepted, header being read
	start := time.Now()
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	if d := time.Since(start); d >= ppTestTimeout {
		t.Errorf("pending connection closed %v after Close, want at once", d)
	}
	if _, err := s.ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	if _, err := net.DialTimeout("tcp", s.ln.Addr().String(), time.Second); err == nil {
		t.Error("dial after Close succeeded")
	}
}

func TestProxyProtocolListenerArguments(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	lo := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	if _, err := proxyProtocolListener(raw, nil, time.Second, nil); err == nil {
		t.Error("no trusted prefixes accepted")
	}
	if _, err := proxyProtocolListener(raw, lo, 0, nil); err == nil {
		t.Error("zero header timeout accepted")
	}
}

// TestProxyListenerClientAddress checks, through the options the
// configuration produces, that behind a PROXY listener only a client
// address from the header counts: a client on the balancer's host is
// exempt from tls.require, while a LOCAL header (the balancer itself, here
// on loopback) is neither exempt nor allowed to send SHUTDOWN.
func TestProxyListenerClientAddress(t *testing.T) {
	pki := testinfra.NewPKI(t, "pop3proxy")
	cfg, err := ParseConfig([]byte(fmt.Sprintf("listen: \"\"\nlisten_proxy: \"127.0.0.1:1\"\ntls: {cert: %q, key: %q}\nupstream:\n  allow: [\"pop.example.com:110\"]\n", pki.Cert, pki.Key)))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.TLS.requireTLS() {
		t.Fatal("tls.require: auto with a certificate does not require TLS")
	}
	opts, _, err := serverOptions(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	opts.Backend = pop3server.BackendFunc(func(context.Context, *pop3server.ConnInfo, string, string) (pop3server.Session, error) {
		return nil, pop3server.ErrAuthFailed
	})
	srv, err := pop3server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := proxyProtocolListener(raw, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, time.Second, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for _, tc := range []struct {
		name      string
		header    *proxyproto.Header
		userReply string
	}{
		{"LOCAL from the balancer", &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}, "-ERR [AUTH] Plaintext authentication disallowed"},
		{"client on the balancer's host", proxyproto.HeaderProxyFromAddrs(2, tcpAddr("127.0.0.1:40000"), tcpAddr("192.0.2.2:110")), "+OK"},
		{"remote client", proxyproto.HeaderProxyFromAddrs(2, tcpAddr("192.0.2.1:40000"), tcpAddr("192.0.2.2:110")), "-ERR [AUTH] Plaintext authentication disallowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", raw.Addr().String(), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := tc.header.WriteTo(c); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(c)
			expectLine := func(cmd, prefix string) {
				t.Helper()
				if cmd != "" {
					io.WriteString(c, cmd+"\r\n")
				}
				if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, prefix) {
					t.Fatalf("%q answered %q, %v; want %q", cmd, line, err, prefix)
				}
			}
			expectLine("", "+OK")
			expectLine("USER alice%pop.example.com:110", tc.userReply)
			if tc.header.Command.IsLocal() {
				expectLine("SHUTDOWN", "-ERR")
			}
		})
	}
}

func TestBalancerAddrIsNoClient(t *testing.T) {
	lo := balancerAddr{tcpAddr("127.0.0.1:5000")}
	if isLoopbackAddr(lo) {
		t.Error("a balancer's own loopback address counts as a local client")
	}
	if addrAllowed(lo, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}) {
		t.Error("a balancer's own loopback address may send SHUTDOWN")
	}
	if !isLoopbackAddr(tcpAddr("127.0.0.1:5000")) || !addrAllowed(tcpAddr("127.0.0.1:5000"), []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}) {
		t.Error("a client's loopback address is not recognised")
	}
}
