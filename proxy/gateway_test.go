package proxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// loginScript is the upstream side of a successful login; its CAPA after
// login offers much the proxy must not pass on.
const loginScript = `
S: +OK fake upstream ready
C: CAPA
S: +OK
S: TOP
S: UIDL
S: .
C: USER alice
S: +OK
C: PASS secret
S: +OK logged in
C: CAPA
S: +OK
S: TOP
S: UIDL
S: EXPIRE 0
S: LOGIN-DELAY 300
S: SASL PLAIN XOAUTH2
S: STLS
S: PIPELINING
S: X-GOOGLE-RICO
S: IMPLEMENTATION FakeServer 1.0
S: .
`

// startGateway serves a gateway that may reach any 127.0.0.1 port.
func startGateway(t *testing.T, timeout time.Duration) string {
	t.Helper()
	return startGatewayWith(t, upstream.Options{DialTimeout: 2 * time.Second, Timeout: timeout})
}

func startGatewayWith(t *testing.T, opts upstream.Options) string {
	t.Helper()
	return serve(t, proxy.Options{Upstream: opts})
}

// serve runs a gateway with opts on loopback and returns its address. It
// fills in what every test wants: "%" routing, any port on 127.0.0.1 and
// localhost allowed, logs to t unless opts.Logger is set, no delay after
// a failed login.
func serve(t *testing.T, opts proxy.Options) string {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	log := opts.Logger
	allow, err := upstream.NewAllowList([]string{"127.0.0.1:*", "localhost:*"})
	if err != nil {
		t.Fatal(err)
	}
	opts.Separators, opts.Allow = "%", allow
	// The failed-login delay is pop3server's to test; here it only slows
	// refused logins.
	srv, err := pop3server.NewServer(pop3server.Options{Backend: proxy.New(opts), Logger: log, FailedLoginDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

func login(t *testing.T, gw, up string) *pop3servertest.Client {
	t.Helper()
	c := pop3servertest.Dial(t, gw)
	c.Script(`
		S: +OK *
		C: USER alice%` + up + `
		S: +OK *
		C: PASS secret
		S: +OK *`)
	return c
}

// CAPA is rebuilt: after login it lists the upstream's TOP, UIDL, EXPIRE
// and LOGIN-DELAY, and nothing the proxy does not relay end to end.
func TestCapaAfterLogin(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: QUIT
S: +OK bye`)
	c := login(t, startGateway(t, 5*time.Second), up.Addr())
	caps := strings.Join(c.Capa(), "|")
	// The SASL line is the proxy's own, not the upstream's "SASL PLAIN
	// XOAUTH2".
	for _, want := range []string{"TOP", "UIDL", "EXPIRE 0", "LOGIN-DELAY 300", "USER", "RESP-CODES", "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER"} {
		if !strings.Contains("|"+caps+"|", "|"+want+"|") {
			t.Errorf("CAPA %q lacks %q", caps, want)
		}
	}
	for _, banned := range []string{"SASL PLAIN XOAUTH2", "STLS", "X-GOOGLE-RICO", "FakeServer"} {
		if strings.Contains(caps, banned) {
			t.Errorf("CAPA %q passes on the upstream's %q", caps, banned)
		}
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// [IN-USE] means the password was right: clients then stop asking for it
// (RFC 2449 §8.1.2), so the code must reach them. Nothing more is sent
// upstream, in particular no QUIT.
func TestInUsePassedThrough(t *testing.T) {
	up := pop3test.NewServer(t, `
S: +OK ready
C: CAPA
S: -ERR no CAPA here
C: USER alice
S: +OK
C: PASS secret
S: -ERR [IN-USE] Maildrop locked by another session`)
	c := pop3servertest.Dial(t, startGateway(t, 5*time.Second))
	c.Script(`
		S: +OK *
		C: USER alice%` + up.Addr() + `
		S: +OK *
		C: PASS secret
		S: -ERR [IN-USE] Maildrop locked by another session`)
	up.Wait(t)
}

// An upstream that dies in the middle of a RETR must not look like a short
// message: the client's connection closes without the terminating dot.
func TestUpstreamDiesMidRetr(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: RETR 1
S: +OK 5000 octets
S: Subject: cut short
S:
S: first line
S!close`)
	c := login(t, startGateway(t, 5*time.Second), up.Addr())
	c.Send("RETR 1\r\n")
	c.Expect("+OK*")
	var last string
	for {
		line, err := c.ReadLine()
		if err != nil {
			break
		}
		last = line
	}
	if last == "." {
		t.Fatal("the truncated message was terminated as if complete")
	}
	up.Wait(t)
}

// A stalled upstream costs at most upstream.timeout, then the client gets
// a temporary error and the session ends.
func TestUpstreamStall(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: STAT
S!sleep 3s`)
	c := login(t, startGateway(t, 300*time.Millisecond), up.Addr())
	start := time.Now()
	c.Cmd("STAT", "-ERR [SYS/TEMP] upstream connection lost")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stalled STAT took %v, want about the 300ms upstream timeout", d)
	}
	c.ExpectClosed()
}

// DELE is relayed at once; a client that disconnects afterwards commits
// nothing: the upstream sees no QUIT (the script would fail on one).
func TestDisconnectSendsNoQuit(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: DELE 1
S: +OK message 1 deleted
C: DELE 9
S: -ERR no such message`)
	c := login(t, startGateway(t, 5*time.Second), up.Addr())
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("DELE 9", "-ERR no such message")
	c.Conn.Close()
	up.Wait(t)
}

// QUIT is relayed and the upstream's verdict reported truthfully.
func TestQuitFailureIsReported(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: DELE 1
S: +OK
C: QUIT
S: -ERR [SYS/TEMP] some deleted messages not removed`)
	c := login(t, startGateway(t, 5*time.Second), up.Addr())
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("QUIT", "-ERR [SYS/TEMP] some deleted messages not removed")
	up.Wait(t)
}

// Upstream error text is relayed, but never as a forged response code and
// never longer than a POP3 response line may be (RFC 1939 §3: 512 octets).
func TestUpstreamErrorSanitised(t *testing.T) {
	// Over 512 octets, within the 1024 the guard accepts from servers that
	// overshoot; a longer line ends the session (TestHostileResponses).
	long := strings.Repeat("x", 1000)
	up := pop3test.NewServer(t, loginScript+`
C: LIST 7
S: -ERR [not a code no such message
C: RETR 8
S: -ERR `+long+`
C: QUIT
S: +OK`)
	c := login(t, startGateway(t, 5*time.Second), up.Addr())
	got := c.Cmd("LIST 7", "-ERR *")
	if strings.HasPrefix(got, "-ERR [") {
		t.Errorf("relayed %q: a malformed code reached the client as one", got)
	}
	got = c.Cmd("RETR 8", "-ERR x*")
	if len(got)+2 > 512 {
		t.Errorf("relayed a %d-octet response line", len(got)+2)
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// noDialListener is an upstream address that records whether the gateway
// ever connected to it.
func noDialListener(t *testing.T) (addr string, dialled *atomic.Bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dialled = new(atomic.Bool)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialled.Store(true)
			c.Close()
		}
	}()
	return ln.Addr().String(), dialled
}

// A password with CR, LF or NUL never reaches the upstream: it could end
// PASS early and inject a command (RFC 1939 §3). pop3server refuses such
// command lines, but SASL logins decode to arbitrary bytes.
func TestPasswordInjectionRefused(t *testing.T) {
	addr, dialled := noDialListener(t)
	g := proxy.New(proxy.Options{Separators: "%"})
	conn := &pop3server.ConnInfo{Logger: zaptest.NewLogger(t)}
	for _, pass := range []string{"secret\r\nDELE 1", "a\x00b", "x\nQUIT"} {
		_, err := g.Login(context.Background(), conn, "alice%"+addr, pass)
		var pe *pop3server.Error
		if !errors.As(err, &pe) || pe.Code != "AUTH" {
			t.Errorf("Login with password %q = %v, want an [AUTH] *pop3server.Error", pass, err)
		}
	}
	if dialled.Load() {
		t.Fatal("the gateway connected upstream with a password it cannot relay")
	}
}

// Destinations outside the allow list are refused at USER, before a
// password is asked for, and never dialled.
func TestAllowListChecked(t *testing.T) {
	addr, dialled := noDialListener(t)
	allow, _ := upstream.NewAllowList([]string{"pop.example.com:995"})
	g := proxy.New(proxy.Options{Separators: "%@", Allow: allow})
	conn := &pop3server.ConnInfo{Logger: zaptest.NewLogger(t)}
	for _, login := range []string{"alice%" + addr, "alice@" + addr, "alice", "%" + addr, "alice%pop.example.com:110"} {
		if err := g.CheckUser(context.Background(), conn, login); err == nil {
			t.Errorf("CheckUser(%q) accepted a login it cannot route", login)
		}
		if _, err := g.Login(context.Background(), conn, login, "pw"); err == nil {
			t.Errorf("Login(%q) succeeded", login)
		}
	}
	if err := g.CheckUser(context.Background(), conn, "me@example.com@POP.example.com:995"); err != nil {
		t.Errorf("CheckUser of an allowed destination: %v", err)
	}
	if dialled.Load() {
		t.Fatal("the gateway connected to a destination outside the allow list")
	}
}

// Upstream TLS is verified against the host named in the login: a trusted
// CA works, an unknown one is refused with [SYS/PERM] (an administrator
// must act) before any credential is sent.
func TestUpstreamCertificateVerified(t *testing.T) {
	serverTLS, roots := testinfra.NewTLS(t, "127.0.0.1")
	trusted := pop3test.NewServer(t, loginScript+`
C: QUIT
S: +OK bye`, pop3test.WithImplicitTLS(serverTLS))
	gw := startGatewayWith(t, upstream.Options{DialTimeout: 2 * time.Second, TLS: upstream.TLSImplicit,
		TLSConfig: &tls.Config{RootCAs: roots}})
	c := login(t, gw, trusted.Addr())
	c.Cmd("QUIT", "+OK*")
	trusted.Wait(t)

	untrusted := pop3test.NewServer(t, `S: +OK never seen: the handshake fails first`, pop3test.WithImplicitTLS(serverTLS))
	gw = startGatewayWith(t, upstream.Options{DialTimeout: 2 * time.Second, TLS: upstream.TLSImplicit})
	c = pop3servertest.Dial(t, gw)
	c.Script(`
		S: +OK *
		C: USER alice%` + untrusted.Addr() + `
		S: +OK *
		C: PASS secret
		S: -ERR [SYS/PERM] upstream certificate not trusted`)
}
