package pop3server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// errorJSON is the error challenge of RFC 7628 §3.2.2's example.
const errorJSON = `{"status":"invalid_token","scope":"example_scope","openid-configuration":"https://example.com/.well-known/openid-configuration"}`

// tokenBackend is a fakeBackend that also takes tokens: "good" logs in,
// "bad" is refused with an error challenge whose answer is recorded,
// "temp" fails with [SYS/TEMP].
type tokenBackend struct {
	*fakeBackend

	mu      sync.Mutex
	creds   []string // "mechanism user token"
	full    []pop3server.TokenCredentials
	answers [][]byte
	aborts  int
}

func (b *tokenBackend) LoginToken(ctx context.Context, c *pop3server.ConnInfo, mech string, cred pop3server.TokenCredentials) (pop3server.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.creds = append(b.creds, mech+" "+cred.User+" "+cred.Token)
	b.full = append(b.full, cred)
	switch cred.Token {
	case "good":
		return newFakeSession(), nil
	case "temp":
		return nil, pop3server.ErrTemporary
	}
	return nil, &pop3server.Challenge{
		Data: []byte(errorJSON),
		Answer: func(ctx context.Context, response []byte) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.answers = append(b.answers, response)
			return &pop3server.Error{Code: "AUTH", Message: "invalid token"}
		},
		Abort: func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.aborts++
		},
	}
}

func (b *tokenBackend) state() (creds []string, answers [][]byte, aborts int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.creds...), append([][]byte(nil), b.answers...), b.aborts
}

func newTokenBackend() *tokenBackend { return &tokenBackend{fakeBackend: &fakeBackend{}} }

func xoauth2(user, token string) string {
	return b64("user=" + user + "\x01auth=Bearer " + token + "\x01\x01")
}

func oauthbearer(gs2, token string) string {
	return b64(gs2 + "\x01host=proxy.example\x01port=110\x01auth=Bearer " + token + "\x01\x01")
}

var challengeLine = "+ " + base64.StdEncoding.EncodeToString([]byte(errorJSON))

// TestTokenAuth plays one exchange per case on a fresh connection and
// checks what the backend was called with and what Challenge.Answer got.
func TestTokenAuth(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		creds   []string // "mechanism user token"
		answers []string
		aborts  int
	}{
		{"XOAUTH2 initial response", `
			C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example:995", "good") + `
			S: +OK maildrop locked and ready
			C: STAT
			S: +OK 3 *`, []string{"XOAUTH2 alice%pop.example:995 good"}, nil, 0},
		{"XOAUTH2 after the empty challenge (Exchange clients, Thunderbird)", `
			C: AUTH XOAUTH2
			S: +` + " " + `
			C: ` + xoauth2("alice@pop.example", "good") + `
			S: +OK maildrop locked and ready`, []string{"XOAUTH2 alice@pop.example good"}, nil, 0},
		{"XOAUTH2 lower case, pairs swapped, scheme in lower case", `
			C: auth xoauth2 ` + b64("auth=bearer good\x01user=alice#pop.example\x01\x01") + `
			S: +OK *`, []string{"XOAUTH2 alice#pop.example good"}, nil, 0},
		{"OAUTHBEARER initial response", `
			C: AUTH OAUTHBEARER ` + oauthbearer("n,a=alice%pop.example:110,", "good") + `
			S: +OK *`, []string{"OAUTHBEARER alice%pop.example:110 good"}, nil, 0},
		{"OAUTHBEARER after the empty challenge, escaped authzid", `
			C: AUTH OAUTHBEARER
			S: +` + " " + `
			C: ` + oauthbearer("y,a=a=2Cb=3Dc@pop.example,", "good") + `
			S: +OK *`, []string{"OAUTHBEARER a,b=c@pop.example good"}, nil, 0},
		{"XOAUTH2 refused token, empty answer (Gmail's XOAUTH2)", `
			C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "bad") + `
			S: ` + challengeLine + `
			C: ` + `
			S: -ERR [AUTH] invalid token
			C: STAT
			S: -ERR command not valid in this state`, []string{"XOAUTH2 alice%pop.example bad"}, []string{""}, 0},
		{"OAUTHBEARER refused token, answered %x01 (RFC 7628 §3.2.3)", `
			C: AUTH OAUTHBEARER
			S: +` + " " + `
			C: ` + oauthbearer("n,a=alice%pop.example,", "bad") + `
			S: ` + challengeLine + `
			C: AQ==
			S: -ERR [AUTH] invalid token`, []string{"OAUTHBEARER alice%pop.example bad"}, []string{"\x01"}, 0},
		{"refused token, then a good one on the same connection", `
			C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "bad") + `
			S: ` + challengeLine + `
			C: AQ==
			S: -ERR [AUTH] invalid token
			C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "good") + `
			S: +OK *`, []string{"XOAUTH2 alice%pop.example bad", "XOAUTH2 alice%pop.example good"}, []string{"\x01"}, 0},
		{"cancelled at the error challenge", `
			C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "bad") + `
			S: ` + challengeLine + `
			C: *
			S: -ERR authentication cancelled
			C: STAT
			S: -ERR command not valid in this state`, []string{"XOAUTH2 alice%pop.example bad"}, nil, 1},
		{"malformed answer to the error challenge", `
			C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "bad") + `
			S: ` + challengeLine + `
			C: %%%
			S: -ERR invalid base64 data`, []string{"XOAUTH2 alice%pop.example bad"}, nil, 1},
		{"backend failure", `
			C: AUTH OAUTHBEARER ` + oauthbearer("n,a=alice%pop.example,", "temp") + `
			S: -ERR [SYS/TEMP] *`, []string{"OAUTHBEARER alice%pop.example temp"}, nil, 0},
		{"cancelled at the empty challenge", `
			C: AUTH XOAUTH2
			S: +` + " " + `
			C: *
			S: -ERR authentication cancelled`, nil, nil, 0},
		{"bad base64 initial response", `
			C: AUTH XOAUTH2 dXNlcj1h%%%
			S: -ERR invalid base64 data`, nil, nil, 0},
		{"bad base64 response", `
			C: AUTH OAUTHBEARER
			S: +` + " " + `
			C: bi==,
			S: -ERR invalid base64 data`, nil, nil, 0},
		{"zero-length initial response", `
			C: AUTH XOAUTH2 =
			S: -ERR malformed authentication data`, nil, nil, 0},
		{"XOAUTH2 without user", `
			C: AUTH XOAUTH2 ` + b64("auth=Bearer good\x01\x01") + `
			S: -ERR malformed authentication data`, nil, nil, 0},
		{"XOAUTH2 token with a CRLF", `
			C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "go\r\nDELE 1") + `
			S: -ERR malformed authentication data`, nil, nil, 0},
		{"XOAUTH2 user with a LF", `
			C: AUTH XOAUTH2 ` + xoauth2("ali\nce%pop.example", "good") + `
			S: -ERR malformed authentication data`, nil, nil, 0},
		{"OAUTHBEARER with channel binding", `
			C: AUTH OAUTHBEARER ` + oauthbearer("p=tls-unique,a=alice%pop.example,", "good") + `
			S: -ERR malformed authentication data`, nil, nil, 0},
		{"OAUTHBEARER with a bad escape", `
			C: AUTH OAUTHBEARER ` + oauthbearer("n,a=alice=2Xpop.example,", "good") + `
			S: -ERR malformed authentication data`, nil, nil, 0},
		{"OAUTHBEARER as an answer, not a login", `
			C: AUTH OAUTHBEARER AQ==
			S: -ERR malformed authentication data`, nil, nil, 0},
		{"PLAIN still works", `
			C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
			S: +OK *`, nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newTokenBackend()
			ts := startServer(t, pop3server.Options{Backend: be})
			c := dial(t, ts.addr)
			c.Expect("+OK *")
			c.Script(tc.script)
			c.Cmd("QUIT", "+OK *")
			c.ExpectClosed()
			creds, answers, aborts := be.state()
			if !reflect.DeepEqual(creds, tc.creds) {
				t.Errorf("LoginToken calls %q, want %q", creds, tc.creds)
			}
			var got []string
			for _, a := range answers {
				got = append(got, string(a))
			}
			if !reflect.DeepEqual(got, tc.answers) {
				t.Errorf("Challenge.Answer calls %q, want %q", got, tc.answers)
			}
			if aborts != tc.aborts {
				t.Errorf("Challenge.Abort called %d times, want %d", aborts, tc.aborts)
			}
		})
	}
}

// The OAUTHBEARER message reaches the backend whole: host, port, extra
// pairs in order, the channel-binding flag.
func TestTokenCredentialsPassed(t *testing.T) {
	be := newTokenBackend()
	ts := startServer(t, pop3server.Options{Backend: be})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Cmd("AUTH OAUTHBEARER "+b64("n,a=alice%pop.example,\x01host=proxy.example\x01port=1110\x01mfa=x y\x01auth=Bearer good\x01\x01"), "+OK *")
	want := pop3server.TokenCredentials{User: "alice%pop.example", Token: "good", Host: "proxy.example", Port: "1110", CBFlag: "n",
		Extra: []pop3server.KeyValue{{Key: "mfa", Value: "x y"}}}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.full) != 1 || !reflect.DeepEqual(be.full[0], want) {
		t.Errorf("LoginToken got %+v, want %+v", be.full, want)
	}
}

// A client that disconnects at the error challenge leaves nothing open in
// the backend: Abort is called.
func TestTokenChallengeDisconnect(t *testing.T) {
	obs := newCountingObserver()
	be := newTokenBackend()
	ts := startServer(t, pop3server.Options{Backend: be, Observer: obs})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Cmd("AUTH XOAUTH2 "+xoauth2("alice%pop.example", "bad"), challengeLine)
	c.Conn.Close()
	_, ended, logins := obs.waitEnded(t, 1)
	if _, _, aborts := be.state(); aborts != 1 {
		t.Errorf("Challenge.Abort called %d times, want 1", aborts)
	}
	if !maps.Equal(ended, map[string]int{"disconnect": 1}) || !maps.Equal(logins, map[string]int{"xoauth2/failed": 1}) {
		t.Errorf("ended %v, logins %v; want a disconnect and a failed xoauth2 login", ended, logins)
	}
}

// Token mechanisms are offered only by a TokenBackend, in CAPA and in the
// bare AUTH listing, and never where RequireTLS refuses logins.
func TestTokenCapabilities(t *testing.T) {
	p := newTestPKI(t)
	ts := startServer(t, pop3server.Options{Backend: newTokenBackend(), TLSConfig: p.server, RequireTLS: true})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	if got := strings.Join(c.Capa(), "|"); strings.Contains(got, "SASL") || strings.Contains(got, "USER") {
		t.Errorf("CAPA before TLS = %q, offers logins", got)
	}
	c.Cmd("AUTH XOAUTH2 "+xoauth2("alice%pop.example", "good"), "-ERR [AUTH] Plaintext authentication disallowed*")
	c.Cmd("AUTH OAUTHBEARER", "-ERR [AUTH] Plaintext authentication disallowed*")
	c.StartTLS(p.client)
	want := []string{"USER", "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER", "RESP-CODES", "PIPELINING", "TOP", "UIDL"}
	if got := c.Capa(); !reflect.DeepEqual(got, want) {
		t.Errorf("CAPA after STLS = %q, want %q", got, want)
	}
	c.Script(`
		C: AUTH
		S: +OK
		S: PLAIN
		S: LOGIN
		S: XOAUTH2
		S: OAUTHBEARER
		S: .
		C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "good") + `
		S: +OK *`)

	// A plain Backend does not offer them.
	plain := startServer(t, pop3server.Options{Backend: &fakeBackend{}})
	c = dial(t, plain.addr)
	c.Expect("+OK *")
	if got := strings.Join(c.Capa(), "|"); !strings.Contains(got, "|SASL PLAIN LOGIN|") {
		t.Errorf("CAPA without TokenBackend = %q", got)
	}
	c.Cmd("AUTH OAUTHBEARER "+oauthbearer("n,a=alice,", "good"), "-ERR unsupported authentication mechanism")
}

// Tokens of kilobytes fit AUTH lines and SASL responses up to
// MaxAuthLineLength; other lines keep MaxLineLength, and after login so
// does AUTH.
func TestTokenLongLines(t *testing.T) {
	be := newTokenBackend()
	ts := startServer(t, pop3server.Options{Backend: be, MaxLineLength: 1024, MaxAuthLineLength: 12000})
	token := "good" + strings.Repeat("A", 8000)
	long := xoauth2("alice%pop.example", token)
	if len(long) < 10000 {
		t.Fatalf("response is only %d octets", len(long))
	}

	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Cmd("NOOP "+strings.Repeat("x", 2000), "-ERR line too long")
	c.Cmd("AUTH XOAUTH2 "+long, challengeLine) // "goodAAA..." is not "good"
	c.Cmd("", "-ERR [AUTH] invalid token")
	c.Conn.Close()

	c = dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: AUTH XOAUTH2
		S: +` + " " + `
		C: ` + long + `
		S: ` + challengeLine + `
		C: ` + `
		S: -ERR [AUTH] invalid token
		C: AUTH XOAUTH2
		S: +` + " " + `
		C: ` + xoauth2("alice%pop.example", strings.Repeat("A", 12000)) + `
		S: -ERR line too long
		C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", strings.Repeat("A", 12000)) + `
		S: -ERR line too long
		C: AUTH XOAUTH2 ` + xoauth2("alice%pop.example", "good") + `
		S: +OK *
		C: AUTH ` + strings.Repeat("A", 2000) + `
		S: -ERR line too long
		C: STAT
		S: +OK 3 *`)
	creds, _, _ := be.state()
	if len(creds) != 3 || creds[0] != "XOAUTH2 alice%pop.example "+token || creds[1] != creds[0] {
		t.Errorf("LoginToken calls: %d, first %.40q", len(creds), creds)
	}
}

// A malformed token message and a refused token are failed logins: counted
// by the Observer and delayed like a wrong password, so that garbage and
// cancelling at the error challenge are no faster way to guess.
func TestTokenFailuresDelayed(t *testing.T) {
	obs := newCountingObserver()
	const delay = 150 * time.Millisecond
	ts := startServer(t, pop3server.Options{Backend: newTokenBackend(), Observer: obs,
		FailedLoginDelay: delay, MaxFailedLoginDelay: delay, MaxBadCommands: 100})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	for _, step := range []struct{ send, want string }{
		{"AUTH XOAUTH2 " + b64("user=alice\x01\x01"), "-ERR malformed authentication data"},
		{"AUTH OAUTHBEARER %%%", "-ERR invalid base64 data"},
		{"AUTH XOAUTH2 " + xoauth2("alice%pop.example", "bad"), challengeLine},
		{"*", "-ERR authentication cancelled"},
		{"AUTH OAUTHBEARER " + oauthbearer("n,a=alice,", "bad"), challengeLine},
		{"AQ==", "-ERR [AUTH] invalid token"},
	} {
		start := time.Now()
		c.Cmd(step.send, step.want)
		if d := time.Since(start); strings.HasPrefix(step.want, "-ERR") && d < delay {
			t.Errorf("%q answered after %v, before the failed-login delay of %v", step.want, d, delay)
		}
	}
	c.Cmd("QUIT", "+OK *")
	_, _, logins := obs.waitEnded(t, 1)
	if want := map[string]int{"xoauth2/failed": 2, "oauthbearer/failed": 2}; !maps.Equal(logins, want) {
		t.Errorf("logins %v, want %v", logins, want)
	}
}

// Neither a token nor anything carrying one (the SASL message, its base64,
// the answer to a challenge) reaches the log, at any level.
func TestTokenNotLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServer(t, pop3server.Options{Backend: newTokenBackend(), Logger: zap.New(core)})
	const tok = "ya29.SECRETtoken-1234"
	msgs := []string{
		xoauth2("alice%pop.example", tok), oauthbearer("n,a=alice%pop.example,", tok),
		xoauth2("alice%pop.example", "bad"), "QU5TV0VS",
	}
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: AUTH XOAUTH2 ` + msgs[0] + `
		S: ` + challengeLine + `
		C: ` + msgs[3] + `
		S: -ERR *
		C: AUTH OAUTHBEARER
		S: +` + " " + `
		C: ` + msgs[1] + `
		S: ` + challengeLine + `
		C: *
		S: -ERR *
		C: AUTH XOAUTH2 ` + msgs[2] + tok + `
		S: -ERR *
		C: AUTH XOAUTH2 ` + msgs[2] + `
		S: +*
		C: QUIT
		S: -ERR *
		C: QUIT
		S: +OK *`)
	c.ExpectClosed()
	waitFor(t, "disconnect log", func() bool { return logs.FilterMessage("disconnect").Len() == 1 })
	if n := logs.FilterMessage("login failed").Len(); n != 4 {
		t.Errorf("%d failed logins logged, want 4", n)
	}
	for _, e := range logs.All() {
		text := fmt.Sprint(e.Message, " ", e.ContextMap())
		for _, s := range append(msgs, "SECRET", "ANSWER") {
			if strings.Contains(text, s) {
				t.Errorf("%q logged: %s", s, text)
			}
		}
	}
}

// A Challenge the server cannot send is an internal error, and its Abort
// still runs.
func TestTokenBadChallenge(t *testing.T) {
	aborted := make(chan struct{}, 1)
	be := tokenFunc(func(pop3server.TokenCredentials) (pop3server.Session, error) {
		return nil, &pop3server.Challenge{Data: make([]byte, pop3server.MaxChallengeData+1),
			Answer: func(context.Context, []byte) error { return nil }, Abort: func() { aborted <- struct{}{} }}
	})
	core, _ := observer.New(zapcore.ErrorLevel)
	ts := startServer(t, pop3server.Options{Backend: be, Logger: zap.New(core)})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Cmd("AUTH XOAUTH2 "+xoauth2("alice", "good"), "-ERR [SYS/TEMP] internal error")
	select {
	case <-aborted:
	case <-time.After(ioTimeout):
		t.Error("Abort not called")
	}
}

// tokenFunc is a TokenBackend made of a function; passwords always fail.
type tokenFunc func(pop3server.TokenCredentials) (pop3server.Session, error)

func (f tokenFunc) Login(context.Context, *pop3server.ConnInfo, string, string) (pop3server.Session, error) {
	return nil, pop3server.ErrAuthFailed
}

func (f tokenFunc) LoginToken(_ context.Context, _ *pop3server.ConnInfo, _ string, cred pop3server.TokenCredentials) (pop3server.Session, error) {
	return f(cred)
}

func TestMaxAuthLineLengthOption(t *testing.T) {
	_, err := pop3server.NewServer(pop3server.Options{Backend: newTokenBackend(), MaxLineLength: 8192, MaxAuthLineLength: 4096})
	if err == nil || !strings.Contains(err.Error(), "MaxAuthLineLength 4096 is below MaxLineLength 8192") {
		t.Errorf("NewServer = %v, want the MaxAuthLineLength error", err)
	}
}
