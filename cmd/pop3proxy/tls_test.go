package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
)

// testPKI is a throwaway CA and a server certificate for 127.0.0.1.
type testPKI = testinfra.PKI

func newTestPKI(t *testing.T, name string) testPKI { return testinfra.NewPKI(t, name) }

// tlsProxyConfig is the configuration of a proxy with the certificate of
// pki in front of one Dovecot; extra is appended.
func tlsProxyConfig(pki testPKI, extra string) string {
	return fmt.Sprintf("tls:\n  cert: %q\n  key: %q\n%s%s", pki.Cert, pki.Key, extra, relayConfig())
}

// startTLSProxy runs a proxy with a fresh certificate, its plain listener
// offering STLS and a POP3S listener at tlsAddr.
func startTLSProxy(t *testing.T) (p *proxyProcess, pki testPKI, tlsAddr string) {
	t.Helper()
	pki = newTestPKI(t, "pop3proxy")
	tlsAddr = testinfra.FreeAddr(t)
	p = startProxy(t, tlsProxyConfig(pki, fmt.Sprintf("listen_tls: %q\n", tlsAddr)))
	waitListening(t, tlsAddr)
	return p, pki, tlsAddr
}

// curlResult is the outcome of one curl run.
type curlResult struct {
	out    []byte
	stderr string
	code   int // exit status; 0 on success
}

func runCurl(t *testing.T, curl string, args ...string) curlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, append([]string{"-sS", "--max-time", "20"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	r := curlResult{out: out, stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return r
}

// popURL is a curl URL for message n with percent-encoded credentials.
func popURL(scheme, addr, login, pass string, n int) string {
	u := url.URL{Scheme: scheme, Host: addr, Path: fmt.Sprintf("/%d", n), User: url.UserPassword(login, pass)}
	return u.String()
}

// curl fetches every message through POP3S (implicit TLS), through STLS
// on the plain listener, and with SASL PLAIN instead of USER/PASS,
// byte-identically to a direct fetch from Dovecot.
func TestTLSCurl(t *testing.T) {
	curl := testinfra.NeedBinary(t, "curl")
	d := mailbox(t)
	p, pki, tlsAddr := startTLSProxy(t)
	login := proxyLogin("%", d.Addr)

	for n := 1; n <= len(trickyMessages()); n++ {
		direct := runCurl(t, curl, popURL("pop3", d.Addr, testUser, testPass, n))
		if direct.code != 0 || len(direct.out) == 0 {
			t.Fatalf("direct fetch of message %d: exit %d: %s", n, direct.code, direct.stderr)
		}
		for _, tc := range []struct {
			name string
			args []string
			sasl bool // curl must log in with AUTH PLAIN
		}{
			// Without --login-options, curl picks SASL PLAIN when CAPA
			// offers it (docs/clients.md, curl), and USER/PASS otherwise.
			{"POP3S", []string{"--cacert", pki.CA, popURL("pop3s", tlsAddr, login, testPass, n)}, false},
			{"STLS", []string{"--ssl-reqd", "--cacert", pki.CA, popURL("pop3", p.Addr, login, testPass, n)}, false},
			{"POP3S AUTH=PLAIN", []string{"--cacert", pki.CA, "--login-options", "AUTH=PLAIN", popURL("pop3s", tlsAddr, login, testPass, n)}, true},
			{"STLS AUTH=PLAIN", []string{"--ssl-reqd", "--cacert", pki.CA, "--login-options", "AUTH=PLAIN", popURL("pop3", p.Addr, login, testPass, n)}, true},
		} {
			via := runCurl(t, curl, append([]string{"-v"}, tc.args...)...)
			if via.code != 0 {
				t.Errorf("%s message %d: curl exit %d:\n%s", tc.name, n, via.code, via.stderr)
				continue
			}
			if !bytes.Equal(via.out, direct.out) {
				t.Errorf("%s message %d: through the proxy %q, direct %q", tc.name, n, clip(via.out), clip(direct.out))
			}
			if tc.sasl && !strings.Contains(via.stderr, "> AUTH PLAIN") {
				t.Errorf("%s: curl did not log in with AUTH PLAIN:\n%s", tc.name, via.stderr)
			}
			if strings.HasPrefix(tc.name, "STLS") && !strings.Contains(via.stderr, "> STLS") {
				t.Errorf("%s: curl did not send STLS:\n%s", tc.name, via.stderr)
			}
		}
	}

	// USER and PASS over implicit TLS, which curl does not use while CAPA
	// offers SASL.
	direct := dialPOP(t, "direct", d.Addr)
	direct.Cmd("USER "+testUser, "+OK*")
	direct.Cmd("PASS "+testPass, "+OK*")
	direct.Cmd("RETR 2", "+OK*")
	want := direct.Multi()
	direct.Cmd("QUIT", "+OK*")
	c := pop3servertest.DialTLS(t, tlsAddr, &tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"})
	c.Name, c.Timeout = "pop3s", 30*time.Second
	c.Expect("+OK*")
	c.Cmd("USER "+login, "+OK*")
	c.Cmd("PASS "+testPass, "+OK*")
	c.Cmd("RETR 2", "+OK*")
	if got := c.Multi(); !bytes.Equal(got, want) {
		t.Errorf("RETR 2 over POP3S with USER/PASS: %q, want %q", clip(got), clip(want))
	}
	c.Cmd("QUIT", "+OK*")
}

// A client that does not trust the proxy's CA refuses to talk to it.
func TestTLSUntrustedCertificate(t *testing.T) {
	curl := testinfra.NeedBinary(t, "curl")
	d := mailbox(t)
	p, _, tlsAddr := startTLSProxy(t)
	login := proxyLogin("%", d.Addr)

	// The same commands succeed with --cacert (TestTLSCurl); without it
	// curl fails certificate verification (exit 60, CURLE_PEER_FAILED_VERIFICATION).
	for name, args := range map[string][]string{
		"POP3S": {popURL("pop3s", tlsAddr, login, testPass, 1)},
		"STLS":  {"--ssl-reqd", popURL("pop3", p.Addr, login, testPass, 1)},
	} {
		r := runCurl(t, curl, args...)
		if r.code != 60 {
			t.Errorf("%s without --cacert: exit %d, want 60 (certificate not trusted); output %q\n%s", name, r.code, clip(r.out), r.stderr)
		}
		if len(r.out) != 0 {
			t.Errorf("%s without --cacert: got %q", name, clip(r.out))
		}
	}
}

// tls.require: without TLS, USER (and AUTH) are refused; after STLS the
// login and retrieval work. Loopback clients are exempt unless
// require_exempt_loopback is false.
func TestTLSRequire(t *testing.T) {
	d := mailbox(t)
	pki := newTestPKI(t, "pop3proxy")
	login := proxyLogin("%", d.Addr)
	direct := dialPOP(t, "direct", d.Addr)
	direct.Cmd("USER "+testUser, "+OK*")
	direct.Cmd("PASS "+testPass, "+OK*")
	direct.Cmd("RETR 2", "+OK*")
	want := direct.Multi()
	direct.Cmd("QUIT", "+OK*")

	p := startProxy(t, tlsProxyConfig(pki, "  require: true\n  require_exempt_loopback: false\n"))
	c := dialPOP(t, "required", p.Addr)
	caps := strings.Join(c.Capa(), "\n")
	if !strings.Contains(caps, "STLS") {
		t.Errorf("CAPA without TLS lacks STLS:\n%s", caps)
	}
	c.Cmd("USER "+login, "-ERR*")
	c.Cmd("AUTH PLAIN", "-ERR*")
	c.StartTLS(&tls.Config{RootCAs: pki.Pool, ServerName: "127.0.0.1"})
	c.Cmd("USER "+login, "+OK*")
	c.Cmd("PASS "+testPass, "+OK*")
	c.Cmd("RETR 2", "+OK*")
	if got := c.Multi(); !bytes.Equal(got, want) {
		t.Errorf("RETR 2 after STLS: %q, want %q", clip(got), clip(want))
	}
	c.Cmd("QUIT", "+OK*")

	// With the loopback exemption (the default), a local client may log in
	// without TLS.
	exempt := startProxy(t, tlsProxyConfig(pki, "  require: true\n"))
	e := dialPOP(t, "exempt", exempt.Addr)
	e.Cmd("USER "+login, "+OK*")
	e.Cmd("PASS "+testPass, "+OK*")
	e.Cmd("QUIT", "+OK*")
}

// The proxy picks up a replaced certificate without a restart.
func TestTLSCertificateReload(t *testing.T) {
	first, second := newTestPKI(t, "first"), newTestPKI(t, "second")
	// The proxy's files start as a copy of the first pair.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	install := func(pki testPKI) {
		for src, dst := range map[string]string{pki.Cert: certFile, pki.Key: keyFile} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst+".tmp", data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(dst+".tmp", dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(first)
	tlsAddr := testinfra.FreeAddr(t)
	p := startProxy(t, fmt.Sprintf("listen_tls: %q\ntls:\n  cert: %q\n  key: %q\n%s", tlsAddr, certFile, keyFile, relayConfig()))
	waitListening(t, tlsAddr)

	// servedBy reports which CA verifies the certificate served now.
	servedBy := func() string {
		c, err := net.DialTimeout("tcp", tlsAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		leaf := tc.ConnectionState().PeerCertificates[0]
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "+OK") {
			t.Fatalf("greeting over TLS = %q, %v", line, err)
		}
		for name, pool := range map[string]*x509.CertPool{"first": first.Pool, "second": second.Pool} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err == nil {
				return name
			}
		}
		return "unknown CA (" + leaf.Subject.CommonName + ")"
	}
	if got := servedBy(); got != "first" {
		t.Fatalf("served a certificate of the %s CA, want first", got)
	}
	install(second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := servedBy()
		if got == "second" {
			break
		}
		if got != "first" || time.Now().After(deadline) {
			t.Fatalf("served a certificate of the %s CA 10s after the files were replaced, want second", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(p.logs.String(), "TLS certificate reloaded") {
		t.Errorf("no reload in the proxy's log")
	}
}
