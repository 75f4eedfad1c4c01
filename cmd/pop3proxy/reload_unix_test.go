//go:build unix

package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
)

// The summary line of a reload that was applied, and of one that was not.
const (
	reloadedLog = "configuration reloaded"
	refusedLog  = "configuration reload refused"
)

// headerConfig relays to Dovecot through one header filter that adds
// X-Reload with value.
func headerConfig(value string) string {
	return relayConfig() + fmt.Sprintf("filters:\n  - type: header\n    add: {X-Reload: %s}\n", value)
}

// retrHeader retrieves message n and reports whether it carries the
// X-Reload field with value.
func retrHeader(t *testing.T, c *pop3servertest.Client, n int, value string) bool {
	t.Helper()
	c.Cmd(fmt.Sprintf("RETR %d", n), "+OK*")
	return bytes.Contains(c.Multi(), []byte("X-Reload: "+value+"\r\n"))
}

// SIGHUP gives the next session the new filter chain, while a session that
// was open keeps the chain it started with, and QUITs normally.
func TestReloadSwitchesFilterForNewSessions(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, headerConfig("before"))
	open := loggedIn(t, "open", p, d)
	if !retrHeader(t, open, 1, "before") {
		t.Fatal("the first session's message lacks X-Reload: before")
	}

	p.writeConfig(t, headerConfig("after"))
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, reloadedLog, 1)

	fresh := loggedIn(t, "fresh", p, d)
	if !retrHeader(t, fresh, 1, "after") {
		t.Error("a session that started after the reload did not get the new filter value")
	}
	if !retrHeader(t, open, 2, "before") {
		t.Error("the session open across the reload did not keep its filter chain")
	}
	open.Cmd("QUIT", "+OK*")
	fresh.Cmd("QUIT", "+OK*")
	if !open.Closed(5 * time.Second) {
		t.Error("the old session's connection stayed open after QUIT")
	}
	if !p.running() {
		t.Fatal("pop3proxy exited after SIGHUP")
	}
	if logs := p.logs.String(); !strings.Contains(logs, `"changed": ["filters"]`) {
		t.Errorf("the reload line does not say that the filters changed:\n%s", logs)
	}
}

// A reload keeps the spool, and with it the one memory budget, unless
// spool_dir or limits.buffer_memory changed. Then new sessions get a new
// spool, and the old one is closed (its private directory removed) when
// the last session using it has ended.
func TestReloadSpool(t *testing.T) {
	d := mailbox(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the proxy makes its private spool directories
	spools := func() []string {
		dirs, _ := filepath.Glob(filepath.Join(tmp, "pop3proxy-spool-*"))
		return dirs
	}
	config := func(memory string) string {
		return headerConfig("x") + "limits:\n  buffer_memory: " + memory + "\n"
	}
	p := startProxy(t, config("1MiB"))
	if got := spools(); len(got) != 1 {
		t.Fatalf("spool directories at start: %v", got)
	}
	open := loggedIn(t, "open", p, d)

	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, reloadedLog, 1)
	if got := spools(); len(got) != 1 {
		t.Errorf("a reload with the same spool settings made a new spool: %v", got)
	}

	p.writeConfig(t, config("2MiB"))
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, reloadedLog, 2)
	if got := spools(); len(got) != 2 {
		t.Errorf("spool directories after buffer_memory changed: %v, want the old and a new one", got)
	}
	if !retrHeader(t, open, 1, "x") {
		t.Error("the session open across the reloads lost its message")
	}
	open.Cmd("QUIT", "+OK*")
	eventually(t, "the old spool to close", func() bool { return len(spools()) == 1 })
}

// A file that fails validation on SIGHUP is refused with every problem
// logged, and the proxy goes on with the configuration it had.
func TestReloadBrokenConfigKeepsOld(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, headerConfig("kept"))
	p.writeConfig(t, headerConfig("lost")+"max_size: huge\nno_such_key: 1\n")
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, refusedLog, 1)

	logs := p.logs.String()
	var line string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, refusedLog) {
			line = l
		}
	}
	for _, want := range []string{"ERROR", "max_size", "no_such_key", `"problem_count": 2`} {
		if !strings.Contains(line, want) {
			t.Errorf("the refusal does not show %q: %s", want, line)
		}
	}
	if strings.Contains(logs, reloadedLog) {
		t.Error("a broken configuration was reported as reloaded")
	}
	c := loggedIn(t, "after", p, d)
	if !retrHeader(t, c, 1, "kept") {
		t.Error("after a refused reload, a new session does not get the previous filter")
	}
	c.Cmd("QUIT", "+OK*")
	if !p.running() {
		t.Fatal("pop3proxy exited after a broken configuration on SIGHUP")
	}
}

// A listener whose address changed is rebound: the new address serves and
// the old one is refused. The listener whose address stayed keeps
// accepting throughout and its open connection goes on.
func TestReloadRebindsChangedListener(t *testing.T) {
	pki := newTestPKI(t, "pop3proxy")
	oldTLS, newTLS := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	config := func(tlsAddr string) string {
		return fmt.Sprintf("listen_tls: %q\ntls:\n  cert: %q\n  key: %q\n", tlsAddr, pki.Cert, pki.Key)
	}
	clientTLS := &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"}
	p := startProxy(t, config(oldTLS))
	waitListening(t, oldTLS)
	plain := dialPOP(t, "plain", p.Addr)
	overTLS := pop3servertest.DialTLS(t, oldTLS, clientTLS)
	overTLS.Expect("+OK*")

	// Dial the unchanged listener all through the reload.
	var dials, failures atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", p.Addr, time.Second)
			dials.Add(1)
			if err != nil {
				failures.Add(1)
				t.Errorf("the unchanged listener refused a connection during the reload: %v", err)
			} else {
				c.Close()
			}
			time.Sleep(2 * time.Millisecond)
		}
	})

	p.writeConfig(t, config(newTLS))
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, reloadedLog, 1)
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if dials.Load() < 10 {
		t.Errorf("only %d dials during the reload", dials.Load())
	}

	moved := pop3servertest.DialTLS(t, newTLS, clientTLS)
	moved.Expect("+OK*")
	moved.Cmd("QUIT", "+OK*")
	if c, err := net.DialTimeout("tcp", oldTLS, time.Second); err == nil {
		c.Close()
		t.Errorf("the old listen_tls address %s still accepts connections", oldTLS)
	}
	plain.Cmd("CAPA", "+OK*")
	plain.Multi()
	plain.Cmd("QUIT", "+OK*")
	// A connection accepted by the closed listener is not cut off.
	overTLS.Cmd("NOOP", "-ERR*") // before login: refused, but answered
	overTLS.Cmd("QUIT", "+OK*")
	if logs := p.logs.String(); !strings.Contains(logs, "listen_tls "+newTLS) || !strings.Contains(logs, "listen_tls "+oldTLS) {
		t.Errorf("the reload line does not name the listener opened and the one closed")
	}
}

// SIGHUP never ends the process: not when the file is unchanged, not when
// it is gone, not several at once, and not during a drain, where it is
// ignored and the drain completes.
func TestSIGHUPNeverExits(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig()+"shutdown:\n  drain_timeout: 20s\n")
	for range 3 {
		p.signal(t, syscall.SIGHUP)
	}
	p.waitLog(t, reloadedLog, 1)
	if err := os.Remove(p.configPath); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, refusedLog, 1)
	c := loggedIn(t, "session", p, d)

	p.signal(t, syscall.SIGTERM)
	p.waitLog(t, "draining", 1)
	p.signal(t, syscall.SIGHUP)
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "reload ignored: draining", 1)
	time.Sleep(200 * time.Millisecond)
	if !p.running() {
		t.Fatalf("pop3proxy exited on SIGHUP during a drain: %v", p.err)
	}
	c.Cmd("STAT", "+OK*")
	c.Cmd("QUIT", "+OK*")
	if err := p.waitExit(t, 15*time.Second); err != nil {
		t.Fatalf("pop3proxy exited with %v after the drain", err)
	}
}
