package pop3server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// loginCalls returns the "user:password" pairs the backend was called with.
func (b *fakeBackend) loginCalls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.logins...)
}

// TestAuth plays one AUTH exchange per case on a fresh connection and
// checks the backend calls it caused.
func TestAuth(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		logins []string // backend calls, "user:password"
	}{
		{"PLAIN initial response", `
			C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
			S: +OK maildrop locked and ready
			C: STAT
			S: +OK 3 *`, []string{"alice:secret"}},
		{"PLAIN after empty challenge", `
			C: AUTH PLAIN
			S: +` + " " + `
			C: ` + b64("\x00alice\x00secret") + `
			S: +OK maildrop locked and ready`, []string{"alice:secret"}},
		{"PLAIN lower-case, authzid equal to authcid", `
			C: auth plain ` + b64("alice\x00alice\x00secret") + `
			S: +OK *`, []string{"alice:secret"}},
		{"PLAIN password with spaces", `
			C: AUTH PLAIN ` + b64("\x00alice\x00pass word") + `
			S: -ERR [AUTH] authentication failed`, []string{"alice:pass word"}},
		{"PLAIN wrong password", `
			C: AUTH PLAIN ` + b64("\x00alice\x00wrong") + `
			S: -ERR [AUTH] authentication failed
			C: STAT
			S: -ERR command not valid in this state`, []string{"alice:wrong"}},
		{"PLAIN zero-length initial response", `
			C: AUTH PLAIN =
			S: -ERR malformed authentication data`, nil},
		{"PLAIN authzid mismatch", `
			C: AUTH PLAIN ` + b64("bob\x00alice\x00secret") + `
			S: -ERR [AUTH] authorization identity must be empty or the authentication identity`, nil},
		{"PLAIN CRLF in password", `
			C: AUTH PLAIN ` + b64("\x00alice\x00sec\r\nDELE 1") + `
			S: -ERR malformed authentication data`, nil},
		{"PLAIN LF in user", `
			C: AUTH PLAIN ` + b64("\x00ali\nce\x00secret") + `
			S: -ERR malformed authentication data`, nil},
		{"PLAIN CR in authzid", `
			C: AUTH PLAIN ` + b64("a\rb\x00alice\x00secret") + `
			S: -ERR malformed authentication data`, nil},
		{"PLAIN NUL in password", `
			C: AUTH PLAIN ` + b64("\x00alice\x00sec\x00ret") + `
			S: -ERR malformed authentication data`, nil},
		{"PLAIN two fields", `
			C: AUTH PLAIN ` + b64("alice\x00secret") + `
			S: -ERR malformed authentication data`, nil},
		{"PLAIN empty password", `
			C: AUTH PLAIN ` + b64("\x00alice\x00") + `
			S: -ERR malformed authentication data`, nil},
		{"PLAIN invalid UTF-8", `
			C: AUTH PLAIN ` + b64("\x00alice\x00\xff\xfe") + `
			S: -ERR malformed authentication data`, nil},
		{"PLAIN cancelled", `
			C: AUTH PLAIN
			S: +` + " " + `
			C: *
			S: -ERR authentication cancelled
			C: CAPA
			S: +OK *`, nil},
		{"PLAIN bad base64 initial response", `
			C: AUTH PLAIN %%%
			S: -ERR invalid base64 data`, nil},
		{"PLAIN bad base64 response", `
			C: AUTH PLAIN
			S: +` + " " + `
			C: AGFsaWNlAHNlY3JldA
			S: -ERR invalid base64 data`, nil},
		{"LOGIN", `
			C: AUTH LOGIN
			S: + VXNlcm5hbWU6
			C: ` + b64("alice") + `
			S: + UGFzc3dvcmQ6
			C: ` + b64("secret") + `
			S: +OK maildrop locked and ready`, []string{"alice:secret"}},
		{"LOGIN user name as initial response", `
			C: AUTH LOGIN ` + b64("alice") + `
			S: + UGFzc3dvcmQ6
			C: ` + b64("secret") + `
			S: +OK maildrop locked and ready`, []string{"alice:secret"}},
		{"LOGIN cancelled at the password", `
			C: AUTH LOGIN ` + b64("alice") + `
			S: + UGFzc3dvcmQ6
			C: *
			S: -ERR authentication cancelled`, nil},
		{"LOGIN CRLF in user", `
			C: AUTH LOGIN ` + b64("alice\r\nRETR 1") + `
			S: -ERR malformed authentication data`, nil},
		{"LOGIN NUL in password", `
			C: AUTH LOGIN
			S: + VXNlcm5hbWU6
			C: ` + b64("alice") + `
			S: + UGFzc3dvcmQ6
			C: ` + b64("sec\x00ret") + `
			S: -ERR malformed authentication data`, nil},
		{"LOGIN zero-length initial response", `
			C: AUTH LOGIN =
			S: -ERR malformed authentication data`, nil},
		{"bare AUTH lists mechanisms", `
			C: AUTH
			S: +OK
			S: PLAIN
			S: LOGIN
			S: .`, nil},
		{"unknown mechanism", `
			C: AUTH CRAM-MD5
			S: -ERR unsupported authentication mechanism
			C: AUTH XOAUTH2 ` + b64("user=alice\x01auth=Bearer x\x01\x01") + `
			S: -ERR unsupported authentication mechanism`, nil},
		{"too many arguments", `
			C: AUTH PLAIN a b
			S: -ERR syntax error`, nil},
		{"pending USER forgotten", `
			C: USER alice
			S: +OK *
			C: AUTH PLAIN =
			S: -ERR *
			C: PASS secret
			S: -ERR send USER first`, nil},
		{"AUTH after login", `
			C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
			S: +OK *
			C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
			S: -ERR command not valid in this state
			C: AUTH
			S: -ERR command not valid in this state`, []string{"alice:secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &fakeBackend{}
			ts := startServer(t, pop3server.Options{Backend: be})
			c := dial(t, ts.addr)
			c.Expect("+OK *")
			c.Script(tc.script)
			if got := be.loginCalls(); !reflect.DeepEqual(got, tc.logins) {
				t.Errorf("backend logins %q, want %q", got, tc.logins)
			}
		})
	}
}

// TestAuthLongLine checks that AUTH lines may exceed the 255 octets of
// RFC 2449 §4, up to MaxLineLength.
func TestAuthLongLine(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be, MaxLineLength: 1024})
	user := strings.Repeat("u", 600)
	line := "AUTH PLAIN " + b64("\x00"+user+"\x00secret")
	if len(line) < 800 {
		t.Fatalf("line is only %d octets", len(line))
	}
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: ` + line + `
		S: +OK *`)
	if got := be.loginCalls(); len(got) != 1 || got[0] != user+":secret" {
		t.Errorf("backend logins %q", got)
	}

	// Beyond MaxLineLength, in a response as in the command.
	c = dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: AUTH PLAIN
		S: +` + " " + `
		C: ` + strings.Repeat("QUFB", 300) + `
		S: -ERR line too long
		C: CAPA
		S: +OK *`)
}

// TestAuthPipelined checks that a SASL exchange sent in one write is
// answered in order.
func TestAuthPipelined(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Send("AUTH LOGIN\r\n" + b64("alice") + "\r\n" + b64("secret") + "\r\nSTAT\r\n")
	c.Script(`
		S: + VXNlcm5hbWU6
		S: + UGFzc3dvcmQ6
		S: +OK maildrop locked and ready
		S: +OK 3 *`)
}

// TestAuthFailuresCount checks that a failed AUTH is a bad command, like a
// failed PASS.
func TestAuthFailuresCount(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxBadCommands: 2})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: AUTH PLAIN ` + b64("\x00alice\x00wrong") + `
		S: -ERR [AUTH] *
		C: AUTH PLAIN
		S: +` + " " + `
		C: *
		S: -ERR authentication cancelled
		C: AUTH LOGIN ` + b64("alice") + `
		S: + UGFzc3dvcmQ6
		C: ` + b64("wrong") + `
		S: -ERR too many bad commands`)
	c.ExpectClosed()
}

// checkingBackend refuses the user name "mallory" in CheckUser.
type checkingBackend struct{ *fakeBackend }

func (b checkingBackend) CheckUser(ctx context.Context, c *pop3server.ConnInfo, name string) error {
	if name == "mallory" {
		return &pop3server.Error{Message: "no such route"}
	}
	return nil
}

// TestAuthCheckUser checks that the UserChecker sees AUTH's user names as
// it sees USER's, and that LOGIN asks for no password after a refused name.
func TestAuthCheckUser(t *testing.T) {
	be := checkingBackend{&fakeBackend{}}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: AUTH LOGIN ` + b64("mallory") + `
		S: -ERR no such route
		C: AUTH PLAIN ` + b64("\x00mallory\x00secret") + `
		S: -ERR no such route
		C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
		S: +OK *`)
	if got := be.loginCalls(); !reflect.DeepEqual(got, []string{"alice:secret"}) {
		t.Errorf("backend logins %q", got)
	}
}

// TestAuthNotLogged checks that neither the password nor its base64
// reaches the log.
func TestAuthNotLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, Logger: zap.New(core)})
	const pass = "Tr0ub4dor"
	secrets := []string{pass, b64("\x00alice\x00" + pass), b64(pass)}
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: AUTH PLAIN ` + secrets[1] + `
		S: -ERR [AUTH] *
		C: AUTH LOGIN
		S: + *
		C: ` + b64("alice") + `
		S: + *
		C: ` + secrets[2] + `
		S: -ERR [AUTH] *
		C: QUIT
		S: +OK *`)
	c.ExpectClosed()
	waitFor(t, "disconnect log", func() bool { return logs.FilterMessage("disconnect").Len() == 1 })
	if logs.FilterMessage("login failed").Len() != 2 {
		t.Errorf("want 2 failed logins logged, got %d", logs.FilterMessage("login failed").Len())
	}
	for _, e := range logs.All() {
		text := fmt.Sprint(e.Message, e.ContextMap())
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("secret %q logged: %s", s, text)
			}
		}
	}
}

// TestCredentialsNotLogged checks that no part of a line that may carry a
// password reaches the log, even at debug level: a password sent with the
// wrong separator, on a line of its own, as a SASL mechanism, or pipelined
// behind a user name the server refused, which makes it a command line.
func TestCredentialsNotLogged(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	be := checkingBackend{&fakeBackend{}}
	ts := startServer(t, pop3server.Options{Backend: be, Logger: zap.New(core), MaxBadCommands: 100})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Send("PASS\tsecret\r\nsecret-as-a-line\r\nAUTH secret\r\nAUTH secretmech c2VjcmV0\r\n")
	c.Script(`
		S: -ERR unknown command
		S: -ERR unknown command
		S: -ERR unsupported authentication mechanism
		S: -ERR unsupported authentication mechanism`)
	c.Send("AUTH LOGIN\r\n" + b64("mallory") + "\r\nsecretAA\r\n")
	c.Script(`
		S: + VXNlcm5hbWU6
		S: -ERR no such route
		S: -ERR unknown command`)
	c.Send("AUTH LOGIN " + b64("mallory") + "\r\nc2VjcmV0secret==\r\n")
	c.Script(`
		S: -ERR no such route
		S: -ERR unknown command`)
	c.Send("AUTH PLAIN\r\n")
	c.Expect("+ ")
	c.Send("secret\r\n")
	c.Expect("-ERR invalid base64 data")
	c.Send("AUTH PLAIN\r\n")
	c.Expect("+ ")
	c.Send("\x00alice\x00secret\r\n")
	c.Expect("-ERR invalid base64 data")
	// A POP3 verb the server does not implement is logged by name.
	c.Cmd("LAST", "-ERR unknown command")
	c.Cmd("QUIT", "+OK *")
	c.ExpectClosed()
	waitFor(t, "disconnect log", func() bool { return logs.FilterMessage("disconnect").Len() == 1 })

	for _, e := range logs.All() {
		if text := fmt.Sprint(e.Message, " ", e.ContextMap()); strings.Contains(strings.ToLower(text), "secret") {
			t.Errorf("credential logged: %s", text)
		}
	}
	var named, unnamed int
	for _, e := range logs.FilterMessage("unknown command").All() {
		m := e.ContextMap()
		switch {
		case m["command"] == "LAST":
			named++
		case m["command"] == nil && m["length"] != nil:
			unnamed++
		default:
			t.Errorf("unknown command logged with %v", m)
		}
	}
	if named != 1 || unnamed != 4 {
		t.Errorf("%d unknown commands logged by name and %d by length, want 1 and 4", named, unnamed)
	}
}
