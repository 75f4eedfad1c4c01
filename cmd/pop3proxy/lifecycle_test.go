package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// loggedIn opens a proxied session for alice.
func loggedIn(t *testing.T, name string, p *proxyProcess, d *upstreamtest.Dovecot) *pop3servertest.Client {
	t.Helper()
	c := dialPOP(t, name, p.Addr)
	c.Cmd("USER "+proxyLogin("%", d.Addr), "+OK*")
	c.Cmd("PASS "+testPass, "+OK*")
	return c
}

// eventually polls cond for up to 10 s; Dovecot finishes a session
// asynchronously after the proxy closed it.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stableCount asserts that the maildrop keeps n messages while Dovecot has
// had time to act on the closed session.
func stableCount(t *testing.T, d *upstreamtest.Dovecot, n int) {
	t.Helper()
	for range 10 {
		if got := d.Count(t, testUser); got != n {
			t.Fatalf("maildrop has %d messages, want %d", got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDeleThenDisconnectKeepsMail(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	c := loggedIn(t, "client", p, d)
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("DELE 2", "+OK*")
	c.Conn.Close() // no QUIT
	eventually(t, "the proxy to log the dropped session", func() bool {
		return strings.Contains(p.logs.String(), "closing upstream without QUIT")
	})
	stableCount(t, d, 4)
}

func TestDeleQuitDeletes(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	c := loggedIn(t, "client", p, d)
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("STAT", "+OK 3 *")
	c.Cmd("RETR 1", "-ERR*")
	c.Cmd("QUIT", "+OK*")
	eventually(t, "Dovecot to delete message 1", func() bool { return d.Count(t, testUser) == 3 })
}

func TestRsetUndoesDele(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	c := loggedIn(t, "client", p, d)
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("RSET", "+OK*")
	c.Cmd("QUIT", "+OK*")
	stableCount(t, d, 4)
}

// A killed proxy leaves the upstream maildrop untouched.
func TestKilledProxyKeepsMail(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	c := loggedIn(t, "client", p, d)
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("DELE 3", "+OK*")
	p.signal(t, syscall.SIGKILL)
	p.waitExit(t, 10*time.Second)
	if !c.Closed(5 * time.Second) {
		t.Fatal("client connection still open after the proxy was killed")
	}
	stableCount(t, d, 4)
}

// SHUTDOWN from loopback drains: no new sessions, the logged-in one keeps
// working and its QUIT commits, then the proxy exits by itself.
func TestShutdownCommandDrains(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig()+"shutdown:\n  drain_timeout: 20s\n")
	busy := loggedIn(t, "busy", p, d)
	idle := dialPOP(t, "idle", p.Addr)

	admin := dialPOP(t, "admin", p.Addr)
	admin.Cmd("SHUTDOWN", "+OK*")
	if !admin.Closed(5 * time.Second) {
		t.Fatal("SHUTDOWN did not close the admin connection")
	}
	if !idle.Closed(5 * time.Second) {
		t.Fatal("an idle connection in AUTHORIZATION was not closed by the drain")
	}
	eventually(t, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	busy.Cmd("DELE 2", "+OK*")
	busy.Cmd("RETR 1", "+OK*")
	busy.Multi()
	busy.Cmd("QUIT", "+OK*")
	if err := p.waitExit(t, 15*time.Second); err != nil {
		t.Fatalf("pop3proxy exited with %v after draining", err)
	}
	if got := d.Count(t, testUser); got != 3 {
		t.Fatalf("maildrop has %d messages after the drained session's QUIT, want 3", got)
	}
}

// SHUTDOWN is refused from addresses outside shutdown.allow_from, and after
// login.
func TestShutdownRefused(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig()+"shutdown:\n  allow_from: [\"192.0.2.0/24\"]\n")
	c := dialPOP(t, "client", p.Addr)
	c.Cmd("SHUTDOWN", "-ERR*")
	c.Cmd("NOOP", "-ERR*") // still AUTHORIZATION, still connected

	p2 := startProxy(t, relayConfig())
	in := loggedIn(t, "in", p2, d)
	in.Cmd("SHUTDOWN", "-ERR*")
	in.Cmd("QUIT", "+OK*")

	time.Sleep(300 * time.Millisecond)
	if !p.running() || !p2.running() {
		t.Fatal("a refused SHUTDOWN stopped the proxy")
	}
}

// SIGTERM drains the same way; a session that does not QUIT within
// drain_timeout is closed without committing its deletions.
func TestSIGTERMDrainTimeout(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig()+"shutdown:\n  drain_timeout: 1s\n")
	c := loggedIn(t, "client", p, d)
	c.Cmd("DELE 1", "+OK*")
	p.signal(t, syscall.SIGTERM)
	if err := p.waitExit(t, 15*time.Second); err != nil {
		t.Fatalf("pop3proxy exited with %v", err)
	}
	if !c.Closed(5 * time.Second) {
		t.Fatal("session still open after the drain timeout")
	}
	if !strings.Contains(p.logs.String(), "drain incomplete") {
		t.Error("the forced end of the drain was not logged")
	}
	stableCount(t, d, 4)
}

// A second signal during the drain closes what is left at once, without
// committing deletions, long before drain_timeout.
func TestSecondSignal(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig()+"shutdown:\n  drain_timeout: 60s\n")
	c := loggedIn(t, "client", p, d)
	c.Cmd("DELE 1", "+OK*")
	p.signal(t, syscall.SIGTERM)
	eventually(t, "the drain", func() bool { return strings.Contains(p.logs.String(), "draining") })
	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	if err := p.waitExit(t, 15*time.Second); err != nil {
		t.Fatalf("pop3proxy exited with %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("exit took %v after the second signal", d)
	}
	if !c.Closed(5 * time.Second) {
		t.Fatal("session still open after the second signal")
	}
	if !strings.Contains(p.logs.String(), "second signal") {
		t.Error("the second signal was not logged")
	}
	stableCount(t, d, 4)
}

// A destination outside upstream.allow is refused at USER and never dialled.
func TestDestinationNotAllowed(t *testing.T) {
	var dialled atomic.Bool
	addr := testinfra.ServeLoopback(t, time.Second, func(net.Conn) { dialled.Store(true) })
	p := startProxy(t, "upstream:\n  allow: [\"pop.example.com:995\"]\n")
	c := dialPOP(t, "client", p.Addr)
	c.Cmd("USER alice%"+addr, "-ERR*")
	c.Cmd("PASS x", "-ERR*")
	c.Cmd("USER alice%"+addr+"\x00", "-ERR*")
	if dialled.Load() {
		t.Fatal("the proxy connected to a destination outside upstream.allow")
	}
}

// Bad credentials: the upstream's -ERR [AUTH] reaches the client, and the
// password never reaches the log.
func TestWrongPassword(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	c := dialPOP(t, "client", p.Addr)
	c.Cmd("USER "+proxyLogin("%", d.Addr), "+OK*")
	c.Cmd("PASS wrong-horse-battery", "-ERR [AUTH]*")
	c.Cmd("USER "+proxyLogin("%", d.Addr), "+OK*")
	c.Cmd("PASS "+testPass, "+OK*")
	c.Cmd("QUIT", "+OK*")
	eventually(t, "the log to show the session", func() bool { return strings.Contains(p.logs.String(), "logged in") })
	if logs := p.logs.String(); strings.Contains(logs, "wrong-horse-battery") || strings.Contains(logs, testPass) {
		t.Fatal("a password appeared in the log")
	}
}

// An unreachable upstream is a temporary failure.
func TestUpstreamDown(t *testing.T) {
	dead := testinfra.FreeAddr(t)
	p := startProxy(t, "upstream:\n  allow: [\"127.0.0.1:*\"]\n  dial_timeout: 2s\n")
	c := dialPOP(t, "client", p.Addr)
	c.Cmd("USER alice%"+dead, "+OK*")
	c.Cmd("PASS x", "-ERR [SYS/TEMP]*")
}

// A broken configuration stops the proxy before it listens, with every
// problem named.
func TestBadConfigExits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("listen: \"0.0.0.0:1\"\nmax_size: huge\nlog:\n  level: chatty\n"), 0o600)
	out, err := exec.Command(proxyBin, "-config", path).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2; output:\n%s", err, out)
	}
	for _, want := range []string{"max_size", "log.level", "upstream.allow"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not name %s:\n%s", want, out)
		}
	}
}

// With upstream.default, a login without a separator goes there; one with a
// separator is still routed by it.
func TestDefaultUpstream(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, fmt.Sprintf("upstream:\n  default: %q\n  allow: [\"127.0.0.1:*\"]\n  separators: \"%%\"\n", d.Addr))
	c := dialPOP(t, "default", p.Addr)
	c.Cmd("USER "+testUser, "+OK*")
	c.Cmd("PASS "+testPass, "+OK*")
	c.Cmd("STAT", "+OK 4 *")
	c.Cmd("QUIT", "+OK*")
	routed := loggedIn(t, "routed", p, d)
	routed.Cmd("STAT", "+OK 4 *")
	routed.Cmd("QUIT", "+OK*")
}
