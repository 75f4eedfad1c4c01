package pop3server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Two clients on loopback: 127.0.0.1 and 127.0.0.2.
const (
	ip1 = "127.0.0.1"
	ip2 = "127.0.0.2"
)

func TestConnectionLimits(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var connects atomic.Int32
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{
		Backend:             be,
		Logger:              zap.New(core),
		MaxConnections:      3,
		MaxConnectionsPerIP: 2,
		OnConnect:           func(*pop3server.ConnInfo) error { connects.Add(1); return nil },
	})
	const (
		perIP = "-ERR [SYS/TEMP] too many connections from your address"
		total = "-ERR [SYS/TEMP] too many connections"
	)

	a1 := dialFrom(t, ip1, ts.addr)
	a1.Expect("+OK *")
	a2 := dialFrom(t, ip1, ts.addr)
	a2.Expect("+OK *")
	for i := 0; i < 3; i++ {
		c := dialFrom(t, ip1, ts.addr)
		c.Expect(perIP)
		c.ExpectClosed()
	}
	b1 := dialFrom(t, ip2, ts.addr)
	b1.Expect("+OK *")
	for i := 0; i < 3; i++ {
		c := dialFrom(t, ip2, ts.addr)
		c.Expect(total)
		c.ExpectClosed()
	}
	if n := connects.Load(); n != 3 {
		t.Errorf("OnConnect called %d times, want 3 (refused connections must not get that far)", n)
	}

	// A slot freed is a slot taken again.
	a1.Cmd("QUIT", "+OK *")
	a1.ExpectClosed()
	waitFor(t, "the freed slot", func() bool {
		c := dialFrom(t, ip2, ts.addr)
		line, err := c.ReadLine()
		return err == nil && line != total
	})
	if got := be.loginCalls(); len(got) != 0 {
		t.Errorf("backend called: %q", got)
	}

	// Each limit is logged on its first hit only (per address for the
	// per-address limit), not for every refused connection.
	perIPLogs := logs.FilterMessage("connection refused: too many connections from one address")
	if perIPLogs.Len() != 1 {
		t.Errorf("per-address limit logged %d times, want once", perIPLogs.Len())
	}
	totalLogs := logs.FilterMessage("connection refused: too many connections")
	if totalLogs.Len() != 1 {
		t.Errorf("total limit logged %d times, want once", totalLogs.Len())
	}
	for _, e := range append(perIPLogs.All(), totalLogs.All()...) {
		if e.Level != zapcore.WarnLevel || e.ContextMap()["limit"] == nil {
			t.Errorf("limit log %q at %v with %v, want a warning naming the limit", e.Message, e.Level, e.ContextMap())
		}
	}
	if n := logs.FilterMessage("connect").Len(); n != 4 {
		t.Errorf("%d connect entries, want one per accepted connection", n)
	}
}

// TestConnectionLimitLogPerAddress checks that the first refusal of a
// second address is logged too.
func TestConnectionLimitLogPerAddress(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, Logger: zap.New(core), MaxConnectionsPerIP: 1})
	for _, ip := range []string{ip1, ip2} {
		keep := dialFrom(t, ip, ts.addr)
		keep.Expect("+OK *")
		for i := 0; i < 4; i++ {
			c := dialFrom(t, ip, ts.addr)
			c.Expect("-ERR [SYS/TEMP] too many connections from your address")
		}
	}
	if n := logs.FilterMessage("connection refused: too many connections from one address").Len(); n != 2 {
		t.Errorf("per-address limit logged %d times, want once per address (2)", n)
	}
}

func TestUnlimitedConnections(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxConnections: -1, MaxConnectionsPerIP: -1})
	for i := 0; i < pop3server.DefaultMaxConnectionsPerIP+5; i++ {
		c := dial(t, ts.addr)
		c.Expect("+OK *")
	}
}

// failLogin returns how long the answer to a failed PASS or AUTH took.
func failLogin(t *testing.T, c *client, auth bool) time.Duration {
	t.Helper()
	start := time.Now()
	if auth {
		c.Send("AUTH PLAIN " + b64("\x00alice\x00wrong") + "\r\n")
	} else {
		c.Send("PASS wrong\r\n")
	}
	c.Expect("-ERR [AUTH] *")
	d := time.Since(start)
	c.Cmd("USER alice", "+OK *")
	return d
}

// TestFailedLoginDelay checks that the delay doubles per failure from one
// address, across connections and for PASS and AUTH alike, up to the cap.
func TestFailedLoginDelay(t *testing.T) {
	const (
		base = 100 * time.Millisecond
		cap  = 400 * time.Millisecond
	)
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServer(t, pop3server.Options{
		Backend: &fakeBackend{}, Logger: zap.New(core),
		FailedLoginDelay: base, MaxFailedLoginDelay: cap, MaxBadCommands: 100,
	})
	newClient := func(ip string) *client {
		c := dialFrom(t, ip, ts.addr)
		c.Expect("+OK *")
		c.Cmd("USER alice", "+OK *")
		return c
	}
	c1, c2 := newClient(ip1), newClient(ip1)

	nominal := []time.Duration{base, 2 * base, cap, cap, cap}
	var got []time.Duration
	for i := range nominal {
		got = append(got, failLogin(t, []*client{c1, c2}[i%2], i%3 == 1))
	}
	t.Logf("delays %v", got)
	for i, d := range got {
		if d < nominal[i] {
			t.Errorf("failure %d answered after %v, want at least %v", i+1, d, nominal[i])
		}
		if i > 0 && d < got[i-1]-base/2 {
			t.Errorf("failure %d answered after %v, faster than failure %d (%v)", i+1, d, i, got[i-1])
		}
	}
	// Doubling without the cap would make the fifth failure wait 1.6s.
	if got[4] >= 2*cap {
		t.Errorf("fifth failure answered after %v, want the %v cap", got[4], cap)
	}
	if n := logs.FilterMessage("failed-login delay at its maximum").Len(); n != 1 {
		t.Errorf("delay cap logged %d times, want once", n)
	}

	// Another address starts from the beginning.
	other := newClient(ip2)
	if d := failLogin(t, other, false); d >= 2*base {
		t.Errorf("first failure from %s answered after %v, want about %v", ip2, d, base)
	}
}

// TestFailedLoginDelayAfterSuccess checks that a successful login does not
// reset the delay of its address: a client could otherwise log in to an
// account of its own after each guess and guess at full speed.
func TestFailedLoginDelayAfterSuccess(t *testing.T) {
	const base = 100 * time.Millisecond
	ts := startServer(t, pop3server.Options{
		Backend: &fakeBackend{}, FailedLoginDelay: base, MaxFailedLoginDelay: 16 * base, MaxBadCommands: 100,
	})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Cmd("USER alice", "+OK *")
	failLogin(t, c, false)
	failLogin(t, c, true)

	ok := ts.login(t)
	ok.Cmd("QUIT", "+OK *")

	// The third failure from the address waits 4*base, success or not.
	if d := failLogin(t, c, false); d < 4*base {
		t.Errorf("failure after a success answered after %v, want at least %v", d, 4*base)
	}
}

// TestFailedLoginDelayInterrupted checks that Close and Shutdown cut the
// delay short.
func TestFailedLoginDelayInterrupted(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			be := &fakeBackend{}
			ts := startServer(t, pop3server.Options{Backend: be, FailedLoginDelay: time.Minute, MaxFailedLoginDelay: time.Minute})
			c := dial(t, ts.addr)
			c.Script(`
				S: +OK *
				C: USER alice
				S: +OK *
				C: PASS wrong`)
			waitFor(t, "the login attempt", func() bool { return len(be.loginCalls()) == 1 })
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			if how == "Close" {
				ts.Close()
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				defer cancel()
				if err := ts.Shutdown(ctx); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			}
			if !c.Closed(ioTimeout) {
				t.Fatal("connection not closed")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("closed %v after %s, want at once", d, how)
			}
		})
	}
}

func TestLimitOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    pop3server.Options
		wantErr string
	}{
		{"cap below delay", pop3server.Options{FailedLoginDelay: time.Minute}, "MaxFailedLoginDelay 30s is below FailedLoginDelay 1m0s"},
		{"negative cap", pop3server.Options{MaxFailedLoginDelay: -1}, "MaxFailedLoginDelay must not be negative"},
		{"no delay", pop3server.Options{FailedLoginDelay: -1}, ""},
		{"unlimited", pop3server.Options{MaxConnections: -1, MaxConnectionsPerIP: -1}, ""},
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

// TestFailedLoginDelayOnlyForCredentials checks that [IN-USE] and
// [SYS/TEMP], which say nothing about the password, are not delayed.
func TestFailedLoginDelayOnlyForCredentials(t *testing.T) {
	const delay = 500 * time.Millisecond
	for _, tc := range []struct {
		name    string
		err     error
		delayed bool
	}{
		{"wrong password", pop3server.ErrAuthFailed, true},
		{"in use", pop3server.ErrInUse, false},
		{"upstream down", pop3server.ErrTemporary, false},
		{"internal error", errors.New("database gone"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, pop3server.Options{Backend: &fakeBackend{loginErr: tc.err},
				FailedLoginDelay: delay, MaxFailedLoginDelay: delay})
			c := dial(t, ts.addr)
			c.Expect("+OK *")
			c.Cmd("USER alice", "+OK*")
			start := time.Now()
			c.Cmd("PASS secret", "-ERR*")
			if got := time.Since(start) >= delay; got != tc.delayed {
				t.Errorf("answer took %v; delayed = %v, want %v", time.Since(start), got, tc.delayed)
			}
		})
	}
}

// TestPerAddressLimitPrefix checks that IPv6 clients are counted per /64,
// which a single host or customer usually has whole, and IPv4 clients,
// IPv4-mapped IPv6 ones included, per address.
func TestPerAddressLimitPrefix(t *testing.T) {
	const refusal = "-ERR [SYS/TEMP] too many connections from your address"
	ts, _ := startPreambleServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxConnectionsPerIP: 2}, false)
	for _, group := range [][]string{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2:abcd::5"},
		{"192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7"},
	} {
		for _, ip := range group[:2] {
			dialAs(t, ts.addr, ip).Expect("+OK *")
		}
		c := dialAs(t, ts.addr, group[2])
		c.Expect(refusal)
		c.ExpectClosed()
	}
	// Neighbours are not affected.
	for _, ip := range []string{"2001:db8:1:3::1", "2001:db8:1:1:ffff:ffff:ffff:ffff", "192.0.2.8"} {
		dialAs(t, ts.addr, ip).Expect("+OK *")
	}
}

// TestFailedLoginDelayPrefix checks that the failed-login delay is shared
// by the addresses of one IPv6 /64.
func TestFailedLoginDelayPrefix(t *testing.T) {
	const base = 100 * time.Millisecond
	ts, _ := startPreambleServer(t, pop3server.Options{Backend: &fakeBackend{},
		FailedLoginDelay: base, MaxFailedLoginDelay: 16 * base}, false)
	fail := func(ip string) time.Duration {
		c := dialAs(t, ts.addr, ip)
		c.Expect("+OK *")
		c.Cmd("USER alice", "+OK *")
		return failLogin(t, c, false)
	}
	for i, ip := range []string{"2001:db8:5:6::1", "2001:db8:5:6::2", "2001:db8:5:6:1:2:3:4"} {
		want := base << i
		if d := fail(ip); d < want {
			t.Errorf("failure %d, from %s, answered after %v, want at least %v", i+1, ip, d, want)
		}
	}
	if d := fail("2001:db8:5:7::1"); d >= 2*base {
		t.Errorf("first failure from another /64 answered after %v, want about %v", d, base)
	}
}

// TestConnectionLimitBeforePreamble checks that a connection holds a slot
// of MaxConnections while its preamble is read, and that one over the
// limit is closed without reading it, so that clients that never send
// their preamble cannot pile up.
func TestConnectionLimitBeforePreamble(t *testing.T) {
	const n = 2
	ts, pl := startPreambleServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxConnections: n}, false)
	for i := 0; i < n; i++ {
		dial(t, ts.addr) // silent
	}
	waitFor(t, "the silent connections to be counted", func() bool {
		_, counted := pop3server.ConnCounts(ts.Server)
		return counted == n
	})
	start := time.Now()
	c := dial(t, ts.addr)
	c.ExpectClosed()
	if d := time.Since(start); d > time.Second {
		t.Errorf("connection over the limit closed after %v, want at once", d)
	}
	if got := pl.reads.Load(); got != n {
		t.Errorf("%d preambles read, want %d: none for the connection over the limit", got, n)
	}
}

// readCounter counts the bytes read from a connection.
type readCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// expectNoHandshake runs a TLS client handshake on nc and checks that the
// server closed the connection without sending a byte (no ServerHello).
func expectNoHandshake(t *testing.T, nc net.Conn, cfg *tls.Config) {
	t.Helper()
	rc := &readCounter{Conn: nc}
	tc := tls.Client(rc, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	err := tc.Handshake()
	var ne net.Error
	switch {
	case err == nil:
		t.Error("TLS handshake completed on a connection over the limit")
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("server neither answered nor closed: %v", err)
	case rc.n.Load() > 0:
		t.Errorf("server sent %d bytes (a ServerHello) to a connection over the limit: %v", rc.n.Load(), err)
	}
}

// TestLimitsBeforeTLS checks that on ServeTLS the connection limits are
// applied before the handshake: a connection over a limit is closed
// without one, and a connection is counted while it handshakes.
func TestLimitsBeforeTLS(t *testing.T) {
	p := newTestPKI(t)
	t.Run("MaxConnections", func(t *testing.T) {
		const n = 3
		ts := startTLSServer(t, pop3server.Options{Backend: &fakeBackend{}, TLSConfig: p.server,
			MaxConnections: n, HandshakeTimeout: time.Minute, AuthTimeout: time.Minute}, true)
		for i := 0; i < n; i++ {
			dial(t, ts.addr) // silent: no ClientHello
		}
		waitFor(t, "the silent connections to be counted", func() bool {
			_, counted := pop3server.ConnCounts(ts.Server)
			return counted == n
		})
		for i := 0; i < 3; i++ {
			expectNoHandshake(t, dial(t, ts.addr).Conn, p.client)
		}
		waitFor(t, "the refused connections to be gone", func() bool {
			tracked, counted := pop3server.ConnCounts(ts.Server)
			return tracked == n && counted == n
		})
	})
	t.Run("MaxConnectionsPerIP", func(t *testing.T) {
		ts, _ := startPreambleServer(t, pop3server.Options{Backend: &fakeBackend{}, TLSConfig: p.server,
			MaxConnectionsPerIP: 1}, true)
		first := dialAs(t, ts.addr, "2001:db8::1")
		tc := tls.Client(first.Conn, p.client)
		tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("first connection: %v", err)
		}
		pop3servertest.New(t, tc).Expect("+OK *")
		expectNoHandshake(t, dialAs(t, ts.addr, "2001:db8::2").Conn, p.client)
	})
}
