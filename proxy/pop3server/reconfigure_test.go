package pop3server_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"go.uber.org/zap/zaptest"
)

// A connection keeps the options it was accepted with, logged in or not:
// its greeting, backend and limits. Connections accepted after Reconfigure
// get the new ones, and the replaced options are released once, when the
// last connection that uses them has ended.
func TestReconfigureKeepsOpenConnections(t *testing.T) {
	oldBE, newBE := &fakeBackend{}, &fakeBackend{}
	var oldReleased, newReleased atomic.Int32
	ts := startServer(t, pop3server.Options{
		Backend:        oldBE,
		Greeting:       "old config",
		MaxBadCommands: 1,
		OnRelease:      func() { oldReleased.Add(1) },
	})
	in := ts.login(t)
	waiting := dial(t, ts.addr)
	waiting.Expect("+OK old config")

	err := ts.Reconfigure(pop3server.Options{
		Backend:        newBE,
		Logger:         zaptest.NewLogger(t),
		Greeting:       "new config",
		MaxBadCommands: 3,
		OnRelease:      func() { newReleased.Add(1) },
	})
	if err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
	if n := oldReleased.Load(); n != 0 {
		t.Fatalf("old options released %d times while two connections use them", n)
	}

	fresh := ts.login(t)
	// A connection that had not logged in yet logs in with the backend it
	// was accepted with.
	waiting.Cmd("USER bob", "+OK *")
	waiting.Cmd("PASS secret", "+OK *")
	if got, want := len(oldBE.loginCalls()), 2; got != want {
		t.Errorf("old backend: %d logins, want %d (the connections accepted before)", got, want)
	}
	if got, want := len(newBE.loginCalls()), 1; got != want {
		t.Errorf("new backend: %d logins, want %d (the connection accepted after)", got, want)
	}

	// MaxBadCommands 1 still holds for the old connection: its second bad
	// command in a row closes it. The new one may send three.
	in.Cmd("BOGUS", "-ERR *")
	in.Cmd("BOGUS", "-ERR too many bad commands")
	in.ExpectClosed()
	for range 3 {
		fresh.Cmd("BOGUS", "-ERR *")
	}
	fresh.Cmd("NOOP", "+OK*")
	if n := oldReleased.Load(); n != 0 {
		t.Fatalf("old options released while a connection still uses them")
	}

	waiting.Cmd("QUIT", "+OK *")
	waiting.ExpectClosed()
	waitFor(t, "the old options to be released", func() bool { return oldReleased.Load() == 1 })
	fresh.Cmd("QUIT", "+OK *")
	fresh.ExpectClosed()
	time.Sleep(50 * time.Millisecond)
	if n, m := oldReleased.Load(), newReleased.Load(); n != 1 || m != 0 {
		t.Errorf("released: old %d times, new %d times; want 1 and 0 (current options are never released)", n, m)
	}
}

// Options Reconfigure refuses change nothing: every problem is reported,
// and new connections get the old options.
func TestReconfigureInvalidChangesNothing(t *testing.T) {
	be := &fakeBackend{}
	var released atomic.Int32
	ts := startServer(t, pop3server.Options{Backend: be, Greeting: "still here", OnRelease: func() { released.Add(1) }})

	err := ts.Reconfigure(pop3server.Options{Greeting: "bad\r\ngreeting", MaxLineLength: 10})
	if err == nil {
		t.Fatal("Reconfigure accepted options without a Backend")
	}
	for _, want := range []string{"Backend is required", "Greeting", "MaxLineLength"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	c := ts.login(t)
	c.Cmd("CAPA", "+OK*")
	c.Multi()
	c.Cmd("QUIT", "+OK *")
	if got := len(be.loginCalls()); got != 1 {
		t.Errorf("backend has %d logins, want 1", got)
	}
	d := dial(t, ts.addr)
	d.Expect("+OK still here")
	if released.Load() != 0 {
		t.Error("options released although they were not replaced")
	}

	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	ts.Shutdown(ctx)
	if err := ts.Reconfigure(pop3server.Options{Backend: be}); !errors.Is(err, pop3server.ErrServerClosed) {
		t.Errorf("Reconfigure after Shutdown = %v, want ErrServerClosed", err)
	}
}

// The connection limits take their new values at once, counting the
// connections that were open before.
func TestReconfigureConnectionLimits(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be, MaxConnections: 2})
	const refused = "-ERR [SYS/TEMP] too many connections"
	for range 2 {
		dial(t, ts.addr).Expect("+OK *")
	}
	over := dial(t, ts.addr)
	over.Expect(refused)
	over.ExpectClosed()

	if err := ts.Reconfigure(pop3server.Options{Backend: be, MaxConnections: 3}); err != nil {
		t.Fatal(err)
	}
	dial(t, ts.addr).Expect("+OK *")
	// Had the count started over, this would be the second of three.
	over = dial(t, ts.addr)
	over.Expect(refused)
	over.ExpectClosed()
}

// The failed-login table keeps its counts across Reconfigure and applies
// the new delay to them.
func TestReconfigureFailedLoginDelay(t *testing.T) {
	be := &fakeBackend{}
	const base = 150 * time.Millisecond
	ts := startServer(t, pop3server.Options{Backend: be, FailedLoginDelay: base, MaxFailedLoginDelay: 10 * base})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Cmd("USER alice", "+OK *")
	c.Cmd("PASS wrong", "-ERR *")

	if err := ts.Reconfigure(pop3server.Options{Backend: be, FailedLoginDelay: 2 * base, MaxFailedLoginDelay: 10 * base}); err != nil {
		t.Fatal(err)
	}
	d := dial(t, ts.addr)
	d.Expect("+OK *")
	d.Cmd("USER alice", "+OK *")
	start := time.Now()
	d.Cmd("PASS wrong", "-ERR *")
	// The second failure of this address at the new base: 2 × 2 × base.
	// Forgetting the first would give 2 × base; the old base, 2 × base.
	if took := time.Since(start); took < 4*base-base/2 {
		t.Errorf("second failed login answered after %v, want at least %v", took, 4*base)
	}
}

// A TLS listener left running after Reconfigure removed TLSConfig closes
// its new connections instead of handshaking without a configuration.
func TestReconfigureWithoutTLSClosesTLSListenerConnections(t *testing.T) {
	pki := newTestPKI(t)
	be := &fakeBackend{}
	ts := startTLSServer(t, pop3server.Options{Backend: be, TLSConfig: pki.server}, true)
	// ServeTLS is running once a client is served.
	c := pop3servertest.DialTLS(t, ts.addr, pki.client)
	c.Expect("+OK *")
	if err := ts.Reconfigure(pop3server.Options{Backend: be}); err != nil {
		t.Fatal(err)
	}
	nc, err := net.DialTimeout("tcp", ts.addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	pop3servertest.New(t, nc).ExpectClosed()
	c.Cmd("CAPA", "+OK*") // the connection from before keeps its TLS
	c.Multi()
}
