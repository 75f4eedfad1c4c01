package main

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// The proxy reaches a real Dovecot over implicit TLS and over STLS with the
// certificate verified against upstream.ca_file, and refuses, before the
// password is sent, a server whose certificate it cannot verify.
func TestUpstreamTLSToDovecot(t *testing.T) {
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: map[string]string{testUser: testPass}, TLS: true})
	d.Deliver(t, testUser, []byte("Subject: over TLS\r\n\r\nsecret body\r\n"))
	for _, tc := range []struct {
		name, mode, addr, caFile, reply string
	}{
		{"implicit", "implicit", d.TLSAddr, d.CAFile, "+OK*"},
		{"starttls", "starttls", d.Addr, d.CAFile, "+OK*"},
		{"auto upgrades with STLS", "auto", d.Addr, d.CAFile, "+OK*"},
		{"untrusted implicit", "implicit", d.TLSAddr, "", "-ERR [SYS/PERM]*"},
		{"untrusted starttls", "starttls", d.Addr, "", "-ERR [SYS/PERM]*"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fmt.Sprintf("upstream:\n  allow: [\"127.0.0.1:*\"]\n  tls: %s\n", tc.mode)
			if tc.caFile != "" {
				cfg += fmt.Sprintf("  ca_file: %q\n", tc.caFile)
			}
			p := startProxy(t, cfg)
			c := dialPOP(t, "client", p.Addr)
			c.Cmd("USER "+proxyLogin("%", tc.addr), "+OK*")
			c.Cmd("PASS "+testPass, tc.reply)
			if tc.reply != "+OK*" {
				return
			}
			c.Cmd("RETR 1", "+OK*")
			if got := string(c.Multi()); got != "Subject: over TLS\r\n\r\nsecret body\r\n" {
				t.Errorf("RETR over TLS = %q", got)
			}
			c.Cmd("QUIT", "+OK*")
		})
	}
}

// An AUTH PLAIN whose password carries CRLF and a command is refused, and
// nothing reaches the upstream: Dovecot logs no login and keeps the mail.
func TestAuthPlainInjectionRefused(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	c := dialPOP(t, "client", p.Addr)
	payload := "\x00" + proxyLogin("%", d.Addr) + "\x00" + testPass + "\r\nDELE 1\r\nQUIT"
	c.Cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte(payload)), "-ERR*")
	c.Cmd("QUIT", "+OK*")
	stableCount(t, d, 4)
	if logs := d.Log(t); strings.Contains(logs, "Login: user=<"+testUser+">") {
		t.Errorf("Dovecot saw a login:\n%s", logs)
	}
}
