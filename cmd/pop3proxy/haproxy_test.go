package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
)

// clientIP is the loopback address the test's clients connect from, so that
// the proxies' logs can tell them from HAProxy (127.0.0.1).
const clientIP = "127.0.0.2"

// dialFrom connects to addr from the local address ip.
func dialFrom(t *testing.T, ip, addr string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// balancedRelayConfig relays to the test's Dovecot from behind a load
// balancer. A PROXY listener serves remote clients wherever it listens, so
// the loopback Dovecot must be allowed explicitly, and without a
// certificate so must plaintext passwords.
func balancedRelayConfig(withCert bool) string {
	c := "upstream:\n  allow: [\"127.0.0.1:*\"]\n  allow_private: true\n"
	if !withCert {
		c += "tls:\n  require: false\n"
	}
	return c
}

// startHAProxy runs HAProxy in the foreground (mode tcp) with a frontend on
// a free loopback port balancing round robin over servers, to which it
// sends a PROXY v2 header. It is stopped when the test ends.
func startHAProxy(t *testing.T, servers ...string) string {
	t.Helper()
	bin := testinfra.NeedBinary(t, "haproxy")
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	front := ""
	launch := testinfra.Launch{
		Name:    "haproxy",
		Ports:   1,
		OutPath: filepath.Join(dir, "haproxy.out"),
		Prepare: func(ports []int) (*exec.Cmd, error) {
			front = fmt.Sprintf("127.0.0.1:%d", ports[0])
			var cfg strings.Builder
			cfg.WriteString(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend pop3
    bind ` + front + `
    default_backend pop3proxies
backend pop3proxies
    balance roundrobin
`)
			for i, s := range servers {
				fmt.Fprintf(&cfg, "    server p%d %s send-proxy-v2\n", i+1, s)
			}
			return exec.Command(bin, "-f", path, "-db"), os.WriteFile(path, []byte(cfg.String()), 0o600)
		},
		// A bare connection that is closed at once: HAProxy may or may not
		// pass it on, so the round robin is only shifted, never skewed.
		Ready: func([]int) error {
			c, err := net.DialTimeout("tcp", front, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		},
		StartTimeout: 10 * time.Second,
	}
	launch.Start(t)
	return front
}

// Two pop3proxy instances behind a real HAProxy that sends PROXY v2
// headers: clients get their mail byte-identically, the proxies see the
// client's address instead of HAProxy's, and the round robin reaches both.
func TestHAProxyRoundRobin(t *testing.T) {
	d := mailbox(t)
	login := proxyLogin("%", d.Addr)
	direct := dialPOP(t, "direct", d.Addr)
	direct.Cmd("USER "+testUser, "+OK*")
	direct.Cmd("PASS "+testPass, "+OK*")
	var want [][]byte
	for n := 1; n <= len(trickyMessages()); n++ {
		direct.Cmd(fmt.Sprintf("RETR %d", n), "+OK*")
		want = append(want, direct.Multi())
	}
	direct.Cmd("QUIT", "+OK*")

	var proxies []*proxyProcess
	var backends []string
	for range 2 {
		addr := testinfra.FreeAddr(t)
		p := startProxy(t, fmt.Sprintf("listen_proxy: %q\nproxy_protocol:\n  trusted: [\"127.0.0.1/32\"]\n  header_timeout: 1s\n%s", addr, balancedRelayConfig(false)))
		proxies = append(proxies, p)
		backends = append(backends, addr)
	}
	front := startHAProxy(t, backends...)

	const sessions = 4
	for i := range sessions {
		nc, err := dialFrom(t, clientIP, front)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		c := &pop3servertest.Client{T: t, Conn: nc, R: bufio.NewReaderSize(nc, 64<<10), Name: fmt.Sprintf("session %d", i), Timeout: 30 * time.Second}
		c.Expect("+OK*")
		c.Cmd("USER "+login, "+OK*")
		c.Cmd("PASS "+testPass, "+OK*")
		for n := range want {
			c.Cmd(fmt.Sprintf("RETR %d", n+1), "+OK*")
			if got := c.Multi(); !bytes.Equal(got, want[n]) {
				t.Errorf("session %d message %d: %q, want %q", i, n+1, clip(got), clip(want[n]))
			}
		}
		c.Cmd("QUIT", "+OK*")
		c.ExpectClosed()
	}

	// Every login a proxy logged came from the client's address, not
	// HAProxy's, and both proxies served some.
	waitFor(t, "all logins logged", func() bool {
		return len(loginRe.FindAllString(proxies[0].logs.String(), -1))+len(loginRe.FindAllString(proxies[1].logs.String(), -1)) >= sessions
	})
	total := 0
	for i, p := range proxies {
		var hosts []string
		for _, m := range loginRe.FindAllStringSubmatch(p.logs.String(), -1) {
			host, _, err := net.SplitHostPort(m[1])
			if err != nil || host != clientIP {
				t.Errorf("proxy %d logged a login from %q, want %s:<port>", i+1, m[1], clientIP)
			}
			hosts = append(hosts, m[1])
		}
		if len(hosts) == 0 {
			t.Errorf("proxy %d served no login: the round robin did not reach it", i+1)
		}
		t.Logf("proxy %d: logins from %v", i+1, hosts)
		total += len(hosts)
	}
	if total != sessions {
		t.Errorf("the proxies logged %d logins, want %d", total, sessions)
	}
}

// loginRe matches the framework's log line for a successful login and
// captures the client address it was logged with.
var loginRe = regexp.MustCompile(`\tlogin\t\{[^}\n]*"remote": "([^"]+)"`)

// A listen_proxy port speaks only to trusted load balancers, and only after
// their PROXY header: a direct client gets nothing, not even a greeting.
func TestHAProxyDirectConnectionRefused(t *testing.T) {
	addr := testinfra.FreeAddr(t)
	p := startProxy(t, fmt.Sprintf("listen_proxy: %q\nproxy_protocol:\n  trusted: [\"127.0.0.1/32\"]\n  header_timeout: 1s\n%s", addr, balancedRelayConfig(false)))
	for _, tc := range []struct {
		name, from string
		speak      bool // the client sends a command first
		min, max   time.Duration
	}{
		// Trusted, but no header: refused after header_timeout (1s).
		{"silent", "127.0.0.1", false, 800 * time.Millisecond, 5 * time.Second},
		// Trusted, but POP3 instead of a header: refused at once.
		{"speaks first", "127.0.0.1", true, 0, 500 * time.Millisecond},
		// Not trusted: closed at once, header or not.
		{"untrusted", "127.0.0.3", false, 0, 500 * time.Millisecond},
	} {
		var c net.Conn
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for {
			if c, err = dialFrom(t, tc.from, addr); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // listen_proxy may open after listen
		}
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.SetReadDeadline(start.Add(10 * time.Second))
		if tc.speak {
			io.WriteString(c, "CAPA\r\n")
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		elapsed := time.Since(start)
		var ne net.Error
		switch {
		case n > 0:
			t.Errorf("%s: the proxy sent %q without a PROXY header", tc.name, buf[:n])
		case errors.As(err, &ne) && ne.Timeout():
			t.Errorf("%s: connection still open after 10s", tc.name)
		case elapsed < tc.min || elapsed > tc.max:
			t.Errorf("%s: closed after %v, want between %v and %v", tc.name, elapsed, tc.min, tc.max)
		}
	}
	refusal := regexp.MustCompile(`not in proxy_protocol.trusted.*"peer": "127\.0\.0\.3:`)
	waitFor(t, "the refusal of the untrusted peer 127.0.0.3 logged", func() bool { return refusal.MatchString(p.logs.String()) })
	logs := p.logs.String()
	if strings.Contains(logs, `"remote": "127.0.0.3`) {
		t.Errorf("the untrusted peer reached the POP3 server:\n%s", logs)
	}
}

// waitFor polls cond for up to 5 s: a process's log lines reach the test
// through a pipe, after the client may have seen the response.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("not within 5s: %s", what)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listen_proxy_tls behind HAProxy: the PROXY header comes first, then the
// client's TLS handshake, which HAProxy (mode tcp) passes through. curl,
// connecting from 127.0.0.2, fetches a message over POP3S byte-identically,
// and the proxy logs the client's address.
func TestHAProxyImplicitTLS(t *testing.T) {
	curl := testinfra.NeedBinary(t, "curl")
	d := mailbox(t)
	pki := newTestPKI(t, "pop3proxy")
	addr := testinfra.FreeAddr(t)
	p := startProxy(t, fmt.Sprintf("tls:\n  cert: %q\n  key: %q\nlisten_proxy_tls: %q\nproxy_protocol:\n  trusted: [\"127.0.0.1/32\"]\n%s",
		pki.Cert, pki.Key, addr, balancedRelayConfig(true)))
	front := startHAProxy(t, addr)

	direct := runCurl(t, curl, popURL("pop3", d.Addr, testUser, testPass, 2))
	if direct.code != 0 {
		t.Fatalf("direct fetch: exit %d: %s", direct.code, direct.stderr)
	}
	via := runCurl(t, curl, "--interface", clientIP, "--cacert", pki.CA, popURL("pop3s", front, proxyLogin("%", d.Addr), testPass, 2))
	if via.code != 0 {
		t.Fatalf("curl through HAProxy: exit %d: %s", via.code, via.stderr)
	}
	if !bytes.Equal(via.out, direct.out) {
		t.Errorf("through HAProxy %q, direct %q", clip(via.out), clip(direct.out))
	}
	waitFor(t, "the login logged", func() bool { return loginRe.MatchString(p.logs.String()) })
	for _, m := range loginRe.FindAllStringSubmatch(p.logs.String(), -1) {
		if host, _, _ := net.SplitHostPort(m[1]); host != clientIP {
			t.Errorf("login logged from %q, want %s:<port>", m[1], clientIP)
		}
	}
}
