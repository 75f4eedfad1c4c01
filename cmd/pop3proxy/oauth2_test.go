package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// testToken is alice's OAuth 2.0 access token in the shape of Google's.
const testToken = "ya29.a0AfB_byTestToken-alice.1234567890"

// oauthMailbox starts Dovecot with the tricky messages for alice, taking
// testToken for her through Dovecot's oauth2 passdb and a token
// introspection stub.
func oauthMailbox(t *testing.T) *upstreamtest.Dovecot {
	t.Helper()
	ts := upstreamtest.StartTokenServer(t)
	ts.Add(testToken, testUser)
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{
		Users:  map[string]string{testUser: testPass},
		OAuth2: &upstreamtest.OAuth2Options{IntrospectionURL: ts.URL},
	})
	for _, m := range trickyMessages() {
		d.Deliver(t, testUser, m)
	}
	return d
}

// checkTokenNotLogged fails if the proxy's log, at debug level, holds the
// token or anything that carries it.
func checkTokenNotLogged(t *testing.T, p *proxyProcess) {
	t.Helper()
	logs := p.logs.String()
	for _, s := range []string{testToken, "TestToken", "Bearer"} {
		if strings.Contains(logs, s) {
			t.Errorf("the proxy's log contains %q", s)
		}
	}
}

// curl with --oauth2-bearer picks OAUTHBEARER from the proxy's CAPA,
// sends the initial response after the empty challenge, or on the AUTH
// line with --sasl-ir, and fetches every message as it does directly from
// Dovecot (docs/clients.md, curl).
func TestCurlOAuth2(t *testing.T) {
	curl := testinfra.NeedBinary(t, "curl")
	d := oauthMailbox(t)
	p := startProxy(t, relayConfig())
	for _, tc := range []struct {
		name, mech string
		args       []string
	}{
		{"default", "OAUTHBEARER", nil},
		{"sasl-ir", "OAUTHBEARER", []string{"--sasl-ir"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(p.logs.String(), `"method": "AUTH `+tc.mech+`"`)
			for n := 1; n <= len(trickyMessages()); n++ {
				fetch := func(server, login string) []byte {
					u := url.URL{Scheme: "pop3", Host: server, Path: fmt.Sprintf("/%d", n), User: url.User(login)}
					args := append([]string{"-sS", "--max-time", "20", "--oauth2-bearer", testToken}, tc.args...)
					return runTool(t, 30*time.Second, curl, append(args, u.String())...)
				}
				via, direct := fetch(p.Addr, proxyLogin("%", d.Addr)), fetch(d.Addr, testUser)
				if len(direct) == 0 || !bytes.Equal(via, direct) {
					t.Errorf("message %d: curl through the proxy %q, direct %q", n, clip(via), clip(direct))
				}
			}
			if got := strings.Count(p.logs.String(), `"method": "AUTH `+tc.mech+`"`) - before; got != len(trickyMessages()) {
				t.Errorf("%d logins with %s logged, want %d", got, tc.mech, len(trickyMessages()))
			}
		})
	}
	checkTokenNotLogged(t, p)
}

// mpop with "auth oauthbearer" (the initial response on the AUTH line)
// and "auth xoauth2" (after the empty challenge), the token from
// passwordeval, delivers through the proxy what it delivers directly
// (docs/clients.md, mpop).
func TestMpopOAuth2(t *testing.T) {
	mpop := testinfra.NeedBinary(t, "mpop")
	d := oauthMailbox(t)
	p := startProxy(t, relayConfig())
	for _, mech := range []string{"oauthbearer", "xoauth2"} {
		t.Run(mech, func(t *testing.T) {
			run := func(server, login string) [][]byte {
				dir := t.TempDir()
				md := newMaildir(t, dir)
				host, port := splitAddr(t, server)
				rc := filepath.Join(dir, "mpoprc")
				conf := fmt.Sprintf("account default\nhost %s\nport %s\nuser %s\nauth %s\npasswordeval \"echo %s\"\ntls off\n"+
					"keep on\nonly_new off\nreceived_header off\ndelivery maildir %s\n", host, port, login, mech, testToken, md)
				if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
					t.Fatal(err)
				}
				runTool(t, 60*time.Second, mpop, "-C", rc, "--uidls-file", filepath.Join(dir, "uidls"), "-q")
				return readDeliveries(t, filepath.Join(md, "new"), "")
			}
			before := strings.Count(p.logs.String(), `"method": "AUTH `+strings.ToUpper(mech)+`"`)
			direct := run(d.Addr, testUser)
			via := run(p.Addr, proxyLogin("%", d.Addr))
			compareDeliveries(t, "mpop", via, direct, len(trickyMessages()))
			if got := strings.Count(p.logs.String(), `"method": "AUTH `+strings.ToUpper(mech)+`"`) - before; got != 1 {
				t.Errorf("%d logins with %s logged, want 1", got, mech)
			}
		})
	}
	checkTokenNotLogged(t, p)
}

// A token Dovecot refuses: curl reports the failure, and neither the
// proxy's log nor its answer to curl carries the token.
func TestCurlOAuth2Refused(t *testing.T) {
	curl := testinfra.NeedBinary(t, "curl")
	d := oauthMailbox(t)
	p := startProxy(t, relayConfig())
	u := url.URL{Scheme: "pop3", Host: p.Addr, Path: "/1", User: url.User(proxyLogin("%", d.Addr))}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, curl, "-sS", "-v", "--max-time", "30", "--oauth2-bearer", "ya29.Expired-token", u.String()).CombinedOutput()
	if err == nil {
		t.Fatalf("curl succeeded with a refused token:\n%s", out)
	}
	if !bytes.Contains(out, []byte("-ERR [AUTH]")) {
		t.Errorf("curl did not see the upstream's -ERR [AUTH]:\n%s", out)
	}
	if strings.Contains(p.logs.String(), "Expired") {
		t.Error("the proxy's log contains the refused token")
	}
	checkTokenNotLogged(t, p)
}
