package proxy_test

import (
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// tokenGreeting is an upstream that offers the token mechanisms the way
// Gmail does (docs/clients.md, Upstream servers).
const tokenGreeting = `
S: +OK Gpop ready
C: CAPA
S: +OK Capability list follows
S: USER
S: RESP-CODES
S: EXPIRE 0
S: LOGIN-DELAY 300
S: TOP
S: UIDL
S: X-GOOGLE-RICO
S: SASL PLAIN XOAUTH2 OAUTHBEARER
S: .
`

const tokenCapa = `
C: CAPA
S: +OK
S: TOP
S: UIDL
S: .
`

// gmailError is the error challenge's JSON on Google's XOAUTH2 page.
const gmailError = `{"status":"401","schemes":"bearer mac","scope":"https://mail.google.com/"}`

// listen reserves the upstream's port before its script is written, since
// OAUTHBEARER's "port" must name it.
func listen(t *testing.T) (net.Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// The routed login is rewritten to the upstream's user name, and in
// OAUTHBEARER "host" and "port" to the upstream's, escaping included; the
// same mechanism runs upstream, with the initial response as the client
// sent it or after the empty challenge, whichever RFC 5034 §4's 255 octets
// allow.
func TestTokenRewrite(t *testing.T) {
	long := "ya29." + strings.Repeat("L", 300)
	for _, tc := range []struct {
		name     string
		client   func(port string) string // the client's lines, "\n"-separated
		upstream func(port string) string
	}{
		{"XOAUTH2 initial response",
			func(port string) string {
				return "AUTH XOAUTH2 " + b64("user=alice%127.0.0.1:"+port+"\x01auth=Bearer tok\x01\x01")
			},
			func(string) string {
				return "C: AUTH XOAUTH2 " + b64("user=alice\x01auth=Bearer tok\x01\x01")
			}},
		{"XOAUTH2 on the next line, token too long for the AUTH line",
			func(port string) string {
				return "AUTH XOAUTH2\n" + b64("user=alice%127.0.0.1:"+port+"\x01auth=Bearer "+long+"\x01\x01")
			},
			func(string) string {
				return "C: AUTH XOAUTH2\nS: + \nC: " + b64("user=alice\x01auth=Bearer "+long+"\x01\x01")
			}},
		{"OAUTHBEARER, escaped user name, host and port replaced, extension kept",
			func(port string) string {
				return "AUTH OAUTHBEARER " + b64("n,a=a=2Cb=3Dc%127.0.0.1:"+port+",\x01host=proxy.example\x01port=1110\x01mfa=otp 1\x01auth=Bearer tok\x01\x01")
			},
			func(port string) string {
				return "C: AUTH OAUTHBEARER " + b64("n,a=a=2Cb=3Dc,\x01host=127.0.0.1\x01port="+port+"\x01mfa=otp 1\x01auth=Bearer tok\x01\x01")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, port := listen(t)
			up := pop3test.NewServer(t, tokenGreeting+tc.upstream(port)+"\nS: +OK Welcome."+tokenCapa+`
C: STAT
S: +OK 2 320
C: QUIT
S: +OK Farewell.`, pop3test.WithListener(ln))
			c := pop3servertest.Dial(t, startGateway(t, 5*time.Second))
			c.Expect("+OK *")
			lines := strings.Split(tc.client(port), "\n")
			for i, l := range lines {
				want := "+OK *"
				if i < len(lines)-1 {
					want = "+ "
				}
				c.Cmd(l, want)
			}
			c.Cmd("STAT", "+OK 2 320")
			c.Cmd("QUIT", "+OK *")
			up.Wait(t)
		})
	}
}

// A refused token: the upstream's error challenge reaches the client, the
// client's answer reaches the upstream, the upstream's -ERR with its code
// reaches the client, and the upstream connection is closed without QUIT
// (the script ends there). A good token then works on the same client
// connection.
func TestTokenErrorChallengeRelayed(t *testing.T) {
	ln, port := listen(t)
	up := pop3test.NewServer(t, tokenGreeting+`
C: AUTH XOAUTH2 `+b64("user=alice\x01auth=Bearer expired\x01\x01")+`
S: + `+b64(gmailError)+`
C: AQ==
S: -ERR [AUTH] Invalid credentials.
S!next
`+tokenGreeting+`
C: AUTH OAUTHBEARER `+b64("n,a=alice,\x01host=127.0.0.1\x01port="+port+"\x01auth=Bearer fresh\x01\x01")+`
S: +OK Welcome.`+tokenCapa+`
C: QUIT
S: +OK bye`, pop3test.WithListener(ln), pop3test.WithTimeout(5*time.Second))
	c := pop3servertest.Dial(t, startGateway(t, 5*time.Second))
	c.Script(`
		S: +OK *
		C: AUTH XOAUTH2 ` + b64("user=alice%127.0.0.1:"+port+"\x01auth=Bearer expired\x01\x01") + `
		S: + ` + b64(gmailError) + `
		C: AQ==
		S: -ERR [AUTH] Invalid credentials.
		C: AUTH OAUTHBEARER ` + b64("n,a=alice%127.0.0.1:"+port+",\x01auth=Bearer fresh\x01\x01") + `
		S: +OK *
		C: QUIT
		S: +OK *`)
	up.Wait(t)
}

// A client that cancels at the error challenge, or goes away, leaves no
// upstream connection behind: the upstream sees the connection closed
// without another byte.
func TestTokenChallengeAbandoned(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(c *pop3servertest.Client)
	}{
		{"cancel", func(c *pop3servertest.Client) { c.Cmd("*", "-ERR authentication cancelled") }},
		{"disconnect", func(c *pop3servertest.Client) { c.Conn.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := pop3test.NewServer(t, tokenGreeting+`
C: AUTH XOAUTH2 `+b64("user=alice\x01auth=Bearer expired\x01\x01")+`
S: + `+b64(gmailError), pop3test.WithTimeout(5*time.Second))
			c := pop3servertest.Dial(t, startGateway(t, 5*time.Second))
			c.Expect("+OK *")
			c.Cmd("AUTH XOAUTH2 "+b64("user=alice%"+up.Addr()+"\x01auth=Bearer expired\x01\x01"), "+ "+b64(gmailError))
			tc.end(c)
			up.Wait(t)
		})
	}
}

// An upstream whose CAPA lacks the client's mechanism gets no AUTH: the
// client is told so with [SYS/PERM] (no other token would help), and the
// connection is closed without a word.
func TestTokenMechanismNotOffered(t *testing.T) {
	up := pop3test.NewServer(t, `
S: +OK ready
C: CAPA
S: +OK
S: USER
S: SASL PLAIN XOAUTH2
S: .
S!next
S: +OK ready
C: CAPA
S: -ERR what?`)
	var failures atomic.Int32
	addr := serve(t, proxy.Options{Upstream: upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second},
		Observer: failObserver(func(s proxy.UpstreamStage, r proxy.UpstreamReason) {
			if s == proxy.StageLogin && r == proxy.ReasonMechanism {
				failures.Add(1)
			}
		})})
	c := pop3servertest.Dial(t, addr)
	c.Script(`
		S: +OK *
		C: AUTH OAUTHBEARER ` + b64("n,a=alice%"+up.Addr()+",\x01auth=Bearer tok\x01\x01") + `
		S: -ERR [SYS/PERM] upstream server does not offer OAUTHBEARER
		C: AUTH XOAUTH2 ` + b64("user=alice%"+up.Addr()+"\x01auth=Bearer tok\x01\x01") + `
		S: -ERR [SYS/PERM] upstream server does not offer XOAUTH2`)
	up.Wait(t)
	if n := failures.Load(); n != 2 {
		t.Errorf("%d upstream failures with reason mechanism, want 2", n)
	}
}

// failObserver reports UpstreamFailed and ignores the rest.
type failObserver func(proxy.UpstreamStage, proxy.UpstreamReason)

func (f failObserver) MessageSent(bool, int64, bool)                                {}
func (f failObserver) Downloaded(time.Duration)                                     {}
func (f failObserver) Oversize()                                                    {}
func (f failObserver) TempFailed()                                                  {}
func (f failObserver) UpstreamFailed(s proxy.UpstreamStage, r proxy.UpstreamReason) { f(s, r) }

// An upstream that accepts the answer to its own error challenge breaks
// RFC 7628 §3.2.3 and gets no session.
func TestTokenUpstreamAcceptsAfterError(t *testing.T) {
	up := pop3test.NewServer(t, tokenGreeting+`
C: AUTH XOAUTH2 `+b64("user=alice\x01auth=Bearer tok\x01\x01")+`
S: + `+b64(gmailError)+`
C: `+`
S: +OK Welcome anyway.`+tokenCapa)
	c := pop3servertest.Dial(t, startGateway(t, 5*time.Second))
	c.Script(`
		S: +OK *
		C: AUTH XOAUTH2 ` + b64("user=alice%"+up.Addr()+"\x01auth=Bearer tok\x01\x01") + `
		S: + ` + b64(gmailError) + `
		C: ` + `
		S: -ERR [SYS/TEMP] upstream server broke the authentication exchange`)
	up.Wait(t)
}

// A client of USER/PASS or AUTH PLAIN reaches an upstream without USER
// through AUTH PLAIN.
func TestPlainToSASLOnlyUpstream(t *testing.T) {
	script := `
S: +OK ready
C: CAPA
S: +OK
S: SASL PLAIN
S: .
C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
S: +OK` + tokenCapa + `
C: QUIT
S: +OK bye`
	up := pop3test.NewServer(t, script+"\nS!next"+script)
	gw := startGateway(t, 5*time.Second)
	c := pop3servertest.Dial(t, gw)
	c.Script(`
		S: +OK *
		C: USER alice%` + up.Addr() + `
		S: +OK *
		C: PASS secret
		S: +OK *
		C: QUIT
		S: +OK *`)
	c = pop3servertest.Dial(t, gw)
	c.Script(`
		S: +OK *
		C: AUTH PLAIN ` + b64("\x00alice%"+up.Addr()+"\x00secret") + `
		S: +OK *
		C: QUIT
		S: +OK *`)
	up.Wait(t)
}

// longToken is the size of a Microsoft token with many claims: its AUTH
// line passes 8 KB, twice the proxy's usual line limit.
var longToken = "eyJ0eXAiOiJKV1Qi." + strings.Repeat("Zm9v", 1500) + ".sig"

// oauthDovecot starts a Dovecot that takes OAuth 2.0 tokens checked by a
// TokenServer, with alice's token (and longToken) valid and two messages
// for her.
func oauthDovecot(t *testing.T) (*upstreamtest.Dovecot, string, [][]byte) {
	t.Helper()
	ts := upstreamtest.StartTokenServer(t)
	const token = "ya29.a0AfB_byC-alice.token~1/x+y=="
	ts.Add(token, "alice")
	ts.Add(longToken, "alice")
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{OAuth2: &upstreamtest.OAuth2Options{IntrospectionURL: ts.URL}})
	msgs := [][]byte{
		[]byte("From: a@example.org\r\nSubject: one\r\n\r\n.leading dot\r\n.\r\nend\r\n"),
		[]byte("From: b@example.org\nSubject: two\n\nbare LF\n"),
	}
	for _, m := range msgs {
		d.Deliver(t, "alice", m)
	}
	return d, token, msgs
}

// capturingGateway serves a gateway whose log goes to t and to the
// returned observer, at debug level.
func capturingGateway(t *testing.T) (string, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	return serve(t, proxy.Options{Logger: log, Upstream: upstream.Options{DialTimeout: 5 * time.Second, Timeout: 10 * time.Second}}), logs
}

// checkNotLogged fails if any log entry holds one of secrets.
func checkNotLogged(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		text := fmt.Sprint(e.Message, " ", e.ContextMap())
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%q logged: %s", s, text)
			}
		}
	}
}

// End to end against Dovecot's oauth2 passdb: XOAUTH2 with the initial
// response, XOAUTH2 with the response on the next line (Thunderbird,
// Exchange clients), OAUTHBEARER both ways, and a token of kilobytes;
// each retrieves the messages exactly as Dovecot sends them. Dovecot refuses a token whose user is not the one
// in the message, so this also proves the user name was rewritten.
func TestTokenDovecot(t *testing.T) {
	t.Parallel()
	d, token, msgs := oauthDovecot(t)
	gw, logs := capturingGateway(t)
	login := "alice%" + d.Addr
	host, port, _ := net.SplitHostPort(d.Addr)
	for _, auth := range [][]string{
		{"AUTH XOAUTH2 " + b64("user="+login+"\x01auth=Bearer "+token+"\x01\x01")},
		{"AUTH XOAUTH2", b64("user=" + login + "\x01auth=Bearer " + token + "\x01\x01")},
		{"AUTH OAUTHBEARER " + b64("n,a="+login+",\x01host=127.0.0.1\x01port=1110\x01auth=Bearer "+token+"\x01\x01")},
		{"AUTH OAUTHBEARER", b64("n,a=" + login + ",\x01host=" + host + "\x01port=" + port + "\x01auth=Bearer " + token + "\x01\x01")},
		{"AUTH XOAUTH2 " + b64("user="+login+"\x01auth=Bearer "+longToken+"\x01\x01")},
	} {
		c := pop3servertest.Dial(t, gw)
		c.Expect("+OK *")
		if len(auth) == 2 {
			c.Cmd(auth[0], "+ ")
		}
		c.Cmd(auth[len(auth)-1], "+OK *")
		for i, m := range msgs {
			c.Cmd(fmt.Sprintf("RETR %d", i+1), "+OK *")
			if got, want := string(c.Multi()), string(upstreamtest.WireForm(m)); got != want {
				t.Errorf("%s: message %d = %q, want %q", auth[0], i+1, got, want)
			}
		}
		c.Cmd("QUIT", "+OK *")
		c.ExpectClosed()
	}
	if n := logs.FilterMessage("login").Len(); n != 5 {
		t.Errorf("%d logins logged, want 5", n)
	}
	checkNotLogged(t, logs, token, "ya29", b64("Bearer "+token), "Zm9vZm9v")
}

// A token Dovecot refuses: the client gets Dovecot's error challenge, its
// answer goes to Dovecot, and Dovecot's -ERR comes back; Dovecot's log
// shows the proxy closed that connection (nothing left open), and the
// client's next AUTH, with a good token, works. The bad token reaches no
// log of the proxy.
func TestTokenDovecotRefused(t *testing.T) {
	t.Parallel()
	d, token, _ := oauthDovecot(t)
	gw, logs := capturingGateway(t)
	const bad = "ya29.EXPIRED-token"
	login := "alice%" + d.Addr
	c := pop3servertest.Dial(t, gw)
	c.Timeout = 30 * time.Second // Dovecot's auth penalty delays the next login
	c.Expect("+OK *")
	ch := c.Cmd("AUTH XOAUTH2 "+b64("user="+login+"\x01auth=Bearer "+bad+"\x01\x01"), "+ *")
	data, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(ch, "+ "))
	if err != nil || !strings.Contains(string(data), `"status"`) {
		t.Fatalf("challenge %q is not Dovecot's JSON error", data)
	}
	c.Cmd("", "-ERR [AUTH] *")
	d.WaitLog(t, "Disconnected: Connection closed (auth failed, 1 attempts")

	c.Cmd("AUTH OAUTHBEARER", "+ ")
	c.Cmd(b64("n,a="+login+",\x01auth=Bearer "+token+"\x01\x01"), "+OK *")
	c.Cmd("STAT", "+OK 2 *")
	c.Cmd("QUIT", "+OK *")
	checkNotLogged(t, logs, bad, token, "EXPIRED")
}
