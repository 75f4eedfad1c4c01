package pop3server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"go.uber.org/zap/zaptest"
)

// ioTimeout bounds every read and write of a test client, so a broken
// server fails a test in seconds instead of hanging it.
const ioTimeout = pop3servertest.DefaultTimeout

// client is a scripted POP3 client that logs the exchange through t.Log.
type client = pop3servertest.Client

func dial(t *testing.T, addr string) *client { return pop3servertest.Dial(t, addr) }

type testServer struct {
	*pop3server.Server
	addr     string
	served   chan struct{} // closed when Serve has returned
	serveErr error
}

// startServer runs a server with opts on loopback; a nil Logger logs to t.
func startServer(t *testing.T, opts pop3server.Options) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, opts, ln)
}

func serveOn(t *testing.T, opts pop3server.Options, ln net.Listener) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t)
	}
	// The failed-login delay runs in every test, but briefly; its own
	// tests set both.
	if opts.FailedLoginDelay == 0 && opts.MaxFailedLoginDelay == 0 {
		opts.FailedLoginDelay, opts.MaxFailedLoginDelay = time.Millisecond, 4*time.Millisecond
	}
	srv, err := pop3server.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ts := &testServer{Server: srv, addr: ln.Addr().String(), served: make(chan struct{})}
	go func() {
		if l, ok := ln.(*implicitTLSListener); ok {
			ts.serveErr = srv.ServeTLS(l.Listener)
		} else {
			ts.serveErr = srv.Serve(ln)
		}
		close(ts.served)
	}()
	t.Cleanup(func() {
		srv.Close()
		// Wait for every connection goroutine, so none logs after the test.
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("connections still running after Close: %v", err)
		}
		ts.checkServed(t)
	})
	return ts
}

func (ts *testServer) checkServed(t *testing.T) {
	t.Helper()
	select {
	case <-ts.served:
		if !errors.Is(ts.serveErr, pop3server.ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", ts.serveErr)
		}
	case <-time.After(ioTimeout):
		t.Error("Serve did not return")
	}
}

// login connects and logs in as alice with the fake backend's password.
func (ts *testServer) login(t *testing.T) *client {
	t.Helper()
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *`)
	return c
}

// waitFor polls cond until it holds or fails the test after ioTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Test messages: msg1 has a dot-leading line; sizes are their lengths.
const (
	msg1 = "From: a@example.org\r\nSubject: one\r\n\r\nline 1\r\n.dot line\r\nline 3\r\n"
	msg2 = "Subject: two\r\n\r\nbody\r\n"
	msg3 = "Subject: three\r\n\r\n3a\r\n3b\r\n"
)

// testMailbox is an in-memory pop3server.Mailbox that records its use.
type testMailbox struct {
	msgs []string
	uids []string // nil: "uid-<n>"

	mu          sync.Mutex
	deleteCalls [][]int
	closes      int
	bodiesOpen  int // opened minus closed
	bodyCloses  int
}

func (m *testMailbox) Messages() []pop3server.MessageInfo {
	list := make([]pop3server.MessageInfo, len(m.msgs))
	for i, msg := range m.msgs {
		uid := fmt.Sprintf("uid-%d", i+1)
		if m.uids != nil {
			uid = m.uids[i]
		}
		list[i] = pop3server.MessageInfo{Size: int64(len(msg)), UID: uid}
	}
	return list
}

func (m *testMailbox) Open(n int) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bodiesOpen++
	return &trackedBody{Reader: strings.NewReader(m.msgs[n-1]), mb: m}, nil
}

func (m *testMailbox) Delete(numbers []int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.deleteCalls = append(m.deleteCalls, numbers)
	return nil
}

func (m *testMailbox) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closes++
	return nil
}

func (m *testMailbox) stats() (deletes [][]int, closes, bodiesOpen, bodyCloses int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.deleteCalls, m.closes, m.bodiesOpen, m.bodyCloses
}

type trackedBody struct {
	io.Reader
	mb *testMailbox
}

func (b *trackedBody) Close() error {
	b.mb.mu.Lock()
	defer b.mb.mu.Unlock()
	b.mb.bodiesOpen--
	b.mb.bodyCloses++
	return nil
}

var _ pop3server.Mailbox = (*testMailbox)(nil)

// fakeBackend accepts any user with password "secret" and gives each a
// fakeSession over msg1, msg2 and msg3.
type fakeBackend struct {
	loginErr error
	// configure adjusts each new session; wrap chooses the add-ons the
	// server sees (default: all of fakeSession's).
	configure func(*fakeSession)
	wrap      func(*fakeSession) pop3server.Session

	mu       sync.Mutex
	sessions []*fakeSession
	logins   []string
}

func (b *fakeBackend) Login(ctx context.Context, c *pop3server.ConnInfo, user, pass string) (pop3server.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.logins = append(b.logins, user+":"+pass)
	if b.loginErr != nil {
		return nil, b.loginErr
	}
	if pass != "secret" {
		return nil, pop3server.ErrAuthFailed
	}
	s := newFakeSession()
	if b.configure != nil {
		b.configure(s)
	}
	b.sessions = append(b.sessions, s)
	if b.wrap != nil {
		return b.wrap(s), nil
	}
	return s, nil
}

func (b *fakeBackend) session(t *testing.T, i int) *fakeSession {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if i >= len(b.sessions) {
		t.Fatalf("session %d not created (%d logins)", i, len(b.sessions))
	}
	return b.sessions[i]
}

// fakeSession is a full session (TOP, UIDL) over a testMailbox, with error
// knobs and call counters.
type fakeSession struct {
	mb    *testMailbox
	inner pop3server.Session

	noopErr     error
	updateErr   error
	noopPanic   bool
	noopHook    func(ctx context.Context)       // runs inside Noop
	retrBody    io.ReadCloser                   // replaces the body of RETR
	retrStuffed bool                            // retrBody is dot-stuffed already
	retrHook    func(ctx context.Context) error // runs inside Retr first; an error fails it
	slowClose   time.Duration                   // Close sleeps this long before counting

	updates atomic.Int32
	closes  atomic.Int32
}

func newFakeSession() *fakeSession {
	mb := &testMailbox{msgs: []string{msg1, msg2, msg3}}
	return &fakeSession{mb: mb, inner: pop3server.NewMailboxSession(mb)}
}

func (s *fakeSession) Stat(ctx context.Context) (int, int64, error) { return s.inner.Stat(ctx) }
func (s *fakeSession) List(ctx context.Context, msg int) ([]pop3server.MessageInfo, error) {
	return s.inner.List(ctx, msg)
}
func (s *fakeSession) Uidl(ctx context.Context, msg int) ([]pop3server.MessageInfo, error) {
	return s.inner.(pop3server.UIDLSession).Uidl(ctx, msg)
}
func (s *fakeSession) Retr(ctx context.Context, msg int) (*pop3server.Message, error) {
	if s.retrHook != nil {
		if err := s.retrHook(ctx); err != nil {
			return nil, err
		}
	}
	if s.retrBody != nil {
		return &pop3server.Message{Size: -1, Body: s.retrBody, Stuffed: s.retrStuffed}, nil
	}
	return s.inner.Retr(ctx, msg)
}
func (s *fakeSession) Top(ctx context.Context, msg, lines int) (*pop3server.Message, error) {
	return s.inner.(pop3server.TopSession).Top(ctx, msg, lines)
}
func (s *fakeSession) Dele(ctx context.Context, msg int) error { return s.inner.Dele(ctx, msg) }
func (s *fakeSession) Rset(ctx context.Context) error          { return s.inner.Rset(ctx) }
func (s *fakeSession) Noop(ctx context.Context) error {
	if s.noopPanic {
		panic("noop exploded")
	}
	if s.noopHook != nil {
		s.noopHook(ctx)
	}
	return s.noopErr
}
func (s *fakeSession) Update(ctx context.Context) error {
	s.updates.Add(1)
	if s.updateErr != nil {
		return s.updateErr
	}
	return s.inner.Update(ctx)
}
func (s *fakeSession) Close() error {
	time.Sleep(s.slowClose)
	s.closes.Add(1)
	return s.inner.Close()
}

var (
	_ pop3server.Backend     = (*fakeBackend)(nil)
	_ pop3server.Session     = (*fakeSession)(nil)
	_ pop3server.TopSession  = (*fakeSession)(nil)
	_ pop3server.UIDLSession = (*fakeSession)(nil)
)

// plainSession hides the add-ons: only Session's methods are promoted.
type plainSession struct{ pop3server.Session }

// capSession has TOP but not UIDL, and lists its own capabilities.
type capSession struct {
	pop3server.Session
	pop3server.TopSession
	caps []string
}

func (s capSession) Capabilities() []string { return s.caps }

var _ pop3server.CapabilitySession = capSession{}

// preambleListener gives each connection a pop3server.PreambleConn whose
// preamble is a line naming the client's IP address, a stand-in for a
// PROXY protocol header that lets a test on loopback pose as any client,
// IPv6 ones included.
type preambleListener struct {
	net.Listener
	reads atomic.Int32 // ReadPreamble calls
}

func (l *preambleListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &preambleConn{Conn: nc, l: l}, nil
}

type preambleConn struct {
	net.Conn
	l      *preambleListener
	remote net.Addr // from the preamble
}

// ReadPreamble reads byte by byte, so as not to consume what follows.
func (c *preambleConn) ReadPreamble() error {
	c.l.reads.Add(1)
	c.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := c.Conn.Read(b); err != nil {
			return err
		}
		if b[0] == '\n' {
			ip, err := netip.ParseAddr(string(line))
			if err != nil {
				return err
			}
			c.remote = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 40000))
			return nil
		}
		line = append(line, b[0])
	}
	return errors.New("preamble too long")
}

func (c *preambleConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

var _ pop3server.PreambleConn = (*preambleConn)(nil)

// startPreambleServer runs a server behind a preambleListener, with
// ServeTLS if implicit.
func startPreambleServer(t *testing.T, opts pop3server.Options, implicit bool) (*testServer, *preambleListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &preambleListener{Listener: ln}
	if implicit {
		return serveOn(t, opts, &implicitTLSListener{pl}), pl
	}
	return serveOn(t, opts, pl), pl
}

// dialAs connects to addr and sends the preamble posing as ip.
func dialAs(t *testing.T, addr, ip string) *client {
	t.Helper()
	c := dial(t, addr)
	c.Name = ip
	c.Send(ip + "\n")
	return c
}
