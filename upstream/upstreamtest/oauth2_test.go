package upstreamtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// oauthDovecot starts a Dovecot that takes the tokens of a TokenServer,
// with alice's tok-alice valid.
func oauthDovecot(t *testing.T) (*Dovecot, *TokenServer) {
	t.Helper()
	ts := StartTokenServer(t)
	ts.Add("tok-alice", "alice")
	d := StartDovecot(t, DovecotOptions{OAuth2: &OAuth2Options{IntrospectionURL: ts.URL}})
	return d, ts
}

// Dovecot with OAuth2Options offers both token mechanisms and accepts a
// valid token in either, in the initial response and after the empty
// challenge; passwords still work.
func TestDovecotOAuth2(t *testing.T) {
	t.Parallel()
	d, ts := oauthDovecot(t)
	d.Deliver(t, "alice", testMessages[0])

	p := dialPOP3(t, d.Addr)
	p.ok("CAPA")
	if caps := string(p.multi()); !strings.Contains(caps, "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER\r\n") {
		t.Fatalf("CAPA = %q, want SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER", caps)
	}
	p.ok("AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer tok-alice\x01\x01"))
	if got := p.ok("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
		t.Errorf("STAT = %q", got)
	}
	p.ok("QUIT")

	p = dialPOP3(t, d.Addr)
	if got := p.send("AUTH OAUTHBEARER"); got != "+ " && got != "+" {
		t.Fatalf("AUTH OAUTHBEARER = %q, want the empty challenge", got)
	}
	p.ok(b64("n,a=alice,\x01host=127.0.0.1\x01port=110\x01auth=Bearer tok-alice\x01\x01"))
	p.ok("QUIT")

	p = dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	p.ok("QUIT")
	if ts.Requests() != 2 {
		t.Errorf("%d introspection requests, want 2", ts.Requests())
	}
}

// A refused token gets RFC 7628 §3.2.2's error challenge, and the answer
// to it -ERR; so does a valid token for another user than the message
// names. A routed login ("alice%host:port") is refused at once, which is
// why a relay must rewrite the user name. Each failure comes from a
// loopback address of its own (auth penalty, see the package doc).
func TestDovecotOAuth2Refused(t *testing.T) {
	t.Parallel()
	d, _ := oauthDovecot(t)
	for i, tc := range []struct{ name, cmd, answer string }{
		{"XOAUTH2 unknown token", "AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer tok-bad\x01\x01"), ""},
		{"OAUTHBEARER unknown token", "AUTH OAUTHBEARER " + b64("n,a=alice,\x01auth=Bearer tok-bad\x01\x01"), "AQ=="},
		{"XOAUTH2 token of another user", "AUTH XOAUTH2 " + b64("user=bob\x01auth=Bearer tok-alice\x01\x01"), ""},
		{"XOAUTH2 routed user name", "AUTH XOAUTH2 " + b64("user=alice%127.0.0.1:110\x01auth=Bearer tok-alice\x01\x01"), "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := dialPOP3From(t, d.Addr, fmt.Sprintf("127.0.0.%d", 2+i))
			ch := p.send(tc.cmd)
			if tc.answer == "-" {
				if !strings.HasPrefix(ch, "-ERR") {
					t.Errorf("%s = %q, want -ERR", tc.cmd[:12], ch)
				}
				return
			}
			data, ok := strings.CutPrefix(ch, "+ ")
			if !ok {
				t.Fatalf("%s = %q, want an error challenge", tc.cmd[:13], ch)
			}
			raw, err := base64.StdEncoding.DecodeString(data)
			var js map[string]any
			if err != nil || json.Unmarshal(raw, &js) != nil || js["status"] == nil {
				t.Fatalf("challenge %q is not a JSON error", raw)
			}
			if got := p.send(tc.answer); !strings.HasPrefix(got, "-ERR") {
				t.Errorf("answer to the challenge: %q, want -ERR", got)
			}
		})
	}
}
