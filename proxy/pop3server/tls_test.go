package pop3server_test

import (
	"context"
	"crypto/tls"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testPKI is a throwaway CA and its certificate for localhost, 127.0.0.1.
type testPKI struct {
	server *tls.Config // for pop3server.Options.TLSConfig
	client *tls.Config // trusts only the CA
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	server, roots := testinfra.NewTLS(t, "localhost", "127.0.0.1")
	return testPKI{server: server, client: &tls.Config{RootCAs: roots, ServerName: "localhost"}}
}

// tlsBackend is a fakeBackend that records the ConnInfo.TLS of each login.
type tlsBackend struct {
	*fakeBackend
	mu  sync.Mutex
	tls []*tls.ConnectionState
}

func (b *tlsBackend) Login(ctx context.Context, c *pop3server.ConnInfo, user, pass string) (pop3server.Session, error) {
	b.mu.Lock()
	b.tls = append(b.tls, c.TLS)
	b.mu.Unlock()
	return b.fakeBackend.Login(ctx, c, user, pass)
}

func (b *tlsBackend) loginTLS(t *testing.T) []*tls.ConnectionState {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tls
}

// startTLSServer runs a server on loopback, with Serve or ServeTLS.
func startTLSServer(t *testing.T, opts pop3server.Options, implicit bool) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if !implicit {
		return serveOn(t, opts, ln)
	}
	return serveOn(t, opts, &implicitTLSListener{ln})
}

// implicitTLSListener makes serveOn call ServeTLS instead of Serve.
type implicitTLSListener struct{ net.Listener }

func TestSTLS(t *testing.T) {
	p := newTestPKI(t)
	be := &tlsBackend{fakeBackend: &fakeBackend{}}
	ts := startServer(t, pop3server.Options{Backend: be, TLSConfig: p.server})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	want := []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "STLS", "TOP", "UIDL"}
	if got := c.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA before TLS = %q, want %q", got, want)
	}
	// RFC 2595 §4: USER given before TLS is forgotten.
	c.Cmd("USER alice", "+OK *")
	c.StartTLS(p.client)
	want = []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL"}
	if got := c.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA after TLS = %q, want %q", got, want)
	}
	c.Script(`
		C: STLS
		S: -ERR Command not permitted when TLS active
		C: PASS secret
		S: -ERR send USER first
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *`)
	if got := c.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA after login = %q, want %q", got, want)
	}
	c.Script(`
		C: STLS
		S: -ERR Command not permitted when TLS active
		C: STAT
		S: +OK 3 *
		C: QUIT
		S: +OK *`)
	states := be.loginTLS(t)
	if len(states) != 1 || states[0] == nil || !states[0].HandshakeComplete {
		t.Fatalf("ConnInfo.TLS at login = %v, want the handshake's state", states)
	}
	if states[0].Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want at least 1.2", states[0].Version)
	}
}

func TestSTLSNotOffered(t *testing.T) {
	p := newTestPKI(t)
	t.Run("without TLSConfig", func(t *testing.T) {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}})
		c := dial(t, ts.addr)
		c.Expect("+OK *")
		for _, capa := range c.Capa() {
			if capa == "STLS" {
				t.Error("CAPA announces STLS without TLSConfig")
			}
		}
		c.Cmd("STLS", "-ERR unknown command")
	})
	t.Run("after login", func(t *testing.T) {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, TLSConfig: p.server})
		c := ts.login(t)
		for _, capa := range c.Capa() {
			if capa == "STLS" {
				t.Error("CAPA announces STLS in the TRANSACTION state")
			}
		}
		c.Script(`
			C: STLS
			S: -ERR command not valid in this state
			C: STAT
			S: +OK 3 *`)
	})
	t.Run("with arguments", func(t *testing.T) {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, TLSConfig: p.server})
		c := dial(t, ts.addr)
		c.Script(`
			S: +OK *
			C: STLS now
			S: -ERR syntax error
			C: CAPA
			S: +OK *`)
	})
}

// TestSTLSInjection checks that commands pipelined behind STLS
// (CVE-2011-0411) drop the connection without TLS and without running them.
func TestSTLSInjection(t *testing.T) {
	p := newTestPKI(t)
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be, TLSConfig: p.server})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Send("STLS\r\nUSER alice\r\nPASS secret\r\n")
	c.Expect("+OK Begin TLS negotiation")
	c.ExpectClosed()
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.logins) != 0 {
		t.Errorf("injected commands ran: logins %q", be.logins)
	}
}

func TestImplicitTLS(t *testing.T) {
	p := newTestPKI(t)
	be := &tlsBackend{fakeBackend: &fakeBackend{}}
	ts := startTLSServer(t, pop3server.Options{Backend: be, TLSConfig: p.server}, true)
	c := pop3servertest.DialTLS(t, ts.addr, p.client)
	c.Expect("+OK *")
	want := []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL"}
	if got := c.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA = %q, want %q", got, want)
	}
	c.Script(`
		C: STLS
		S: -ERR Command not permitted when TLS active
		C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
		S: +OK *
		C: STAT
		S: +OK 3 *`)
	if states := be.loginTLS(t); len(states) != 1 || states[0] == nil {
		t.Fatalf("ConnInfo.TLS at login = %v, want the handshake's state", states)
	}

	// A plain client gets no greeting: it fails the handshake, which is
	// logged at debug level only.
	core, logs := observer.New(zapcore.DebugLevel)
	ts2 := startTLSServer(t, pop3server.Options{Backend: be, TLSConfig: p.server, Logger: zap.New(core)}, true)
	plain := dial(t, ts2.addr)
	plain.Send("CAPA\r\n")
	if !plain.Closed(ioTimeout) {
		t.Fatal("plain client on the implicit TLS listener not closed")
	}
	waitFor(t, "handshake failure log", func() bool { return logs.FilterMessage("TLS handshake failed").Len() == 1 })
	for _, e := range logs.All() {
		if e.Level > zapcore.DebugLevel {
			t.Errorf("failed handshake logged %q at %v", e.Message, e.Level)
		}
	}
}

func TestServeTLSWithoutConfig(t *testing.T) {
	srv, err := pop3server.NewServer(pop3server.Options{Backend: &fakeBackend{}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := srv.ServeTLS(ln); err == nil || !strings.Contains(err.Error(), "TLSConfig") {
		t.Errorf("ServeTLS without TLSConfig = %v, want an error naming TLSConfig", err)
	}
}

// TestHandshakeTimeout checks that a silent client is closed after about
// HandshakeTimeout, on the implicit TLS listener and after STLS.
func TestHandshakeTimeout(t *testing.T) {
	p := newTestPKI(t)
	const timeout = 300 * time.Millisecond
	for _, implicit := range []bool{true, false} {
		name := map[bool]string{true: "implicit", false: "STLS"}[implicit]
		t.Run(name, func(t *testing.T) {
			opts := pop3server.Options{Backend: &fakeBackend{}, TLSConfig: p.server, HandshakeTimeout: timeout, AuthTimeout: time.Minute}
			ts := startTLSServer(t, opts, implicit)
			c := dial(t, ts.addr)
			if !implicit {
				c.Expect("+OK *")
				c.Cmd("STLS", "+OK Begin TLS negotiation")
			}
			start := time.Now()
			if !c.Closed(ioTimeout) {
				t.Fatal("not closed")
			}
			if d := time.Since(start); d < timeout*3/4 || d > 10*timeout {
				t.Errorf("closed after %v, want about %v", d, timeout)
			}
		})
	}
}

// TestShutdownDuringHandshake checks that Shutdown does not wait for a
// handshake that is not coming.
func TestShutdownDuringHandshake(t *testing.T) {
	p := newTestPKI(t)
	ts := startTLSServer(t, pop3server.Options{Backend: &fakeBackend{}, TLSConfig: p.server, HandshakeTimeout: time.Minute}, true)
	c := dial(t, ts.addr)
	time.Sleep(50 * time.Millisecond) // let the handshake start
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	start := time.Now()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v with a handshake pending", d)
	}
	if !c.Closed(ioTimeout) {
		t.Error("connection not closed")
	}
}

func TestRequireTLS(t *testing.T) {
	p := newTestPKI(t)
	const refusal = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
	be := &apopBackend{fakeBackend: &fakeBackend{}}
	ts := startServer(t, pop3server.Options{
		Backend: be, TLSConfig: p.server, RequireTLS: true, MaxBadCommands: 100,
		// Exempt 127.0.0.2, so that 127.0.0.1 shows the refusals.
		TLSExempt: func(c *pop3server.ConnInfo) bool { return strings.HasPrefix(c.RemoteAddr.String(), "127.0.0.2:") },
	})

	c := dial(t, ts.addr)
	c.Expect("+OK *")
	want := []string{"RESP-CODES", "PIPELINING", "STLS", "TOP", "UIDL"}
	if got := c.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA on a plain connection = %q, want %q", got, want)
	}
	for _, cmd := range []string{"USER alice", "PASS secret", "APOP alice c4c9334bac560ecc979e58001b3e22fb", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN", "AUTH"} {
		c.Cmd(cmd, refusal)
	}
	c.StartTLS(p.client)
	want = []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "TOP", "UIDL"}
	if got := c.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA after STLS = %q, want %q", got, want)
	}
	c.Script(`
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *`)

	// The exempt address logs in in cleartext.
	ex := dialFrom(t, "127.0.0.2", ts.addr)
	ex.Expect("+OK *")
	want = []string{"USER", "SASL PLAIN LOGIN", "RESP-CODES", "PIPELINING", "STLS", "TOP", "UIDL"}
	if got := ex.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA for an exempt client = %q, want %q", got, want)
	}
	ex.Script(`
		C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
		S: +OK *`)

	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.logins) != 2 {
		t.Errorf("logins %q, want the two allowed ones", be.logins)
	}
}

func TestTLSOptions(t *testing.T) {
	p := newTestPKI(t)
	for _, tc := range []struct {
		name    string
		opts    pop3server.Options
		wantErr string
	}{
		{"require without TLS", pop3server.Options{RequireTLS: true}, "RequireTLS needs TLSConfig"},
		{"no certificate", pop3server.Options{TLSConfig: &tls.Config{}}, "no certificate"},
		{"handshake timeout", pop3server.Options{TLSConfig: p.server, HandshakeTimeout: -1}, "HandshakeTimeout"},
		{"GetCertificate", pop3server.Options{TLSConfig: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Backend = &fakeBackend{}
			_, err := pop3server.NewServer(tc.opts)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("NewServer = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestTLSMinVersion checks that TLS 1.2 is the minimum unless the caller
// chose another.
func TestTLSMinVersion(t *testing.T) {
	p := newTestPKI(t)
	old := p.client.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	for _, tc := range []struct {
		name     string
		min      uint16
		accepted bool
	}{
		{"default", 0, false},
		{"caller's choice", tls.VersionTLS10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := p.server.Clone()
			cfg.MinVersion = tc.min
			ts := startTLSServer(t, pop3server.Options{Backend: &fakeBackend{}, TLSConfig: cfg}, true)
			nc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", ts.addr, old)
			if err == nil {
				nc.Close()
			}
			if accepted := err == nil; accepted != tc.accepted {
				t.Errorf("TLS 1.1 handshake error = %v, want accepted = %v", err, tc.accepted)
			}
		})
	}
}

// dialFrom connects to addr from the local IP address ip, to act as a
// second client address on loopback (all of 127/8 is local on Linux).
func dialFrom(t *testing.T, ip, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s (not a local address here?): %v", ip, err)
	}
	return pop3servertest.New(t, nc)
}
