package upstream

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// saslOnly is a greeting from a server whose CAPA offers SASL PLAIN but
// not USER (RFC 2449 §6.2: USER/PASS may then be refused).
const saslOnly = `
	S: +OK fake ready
	C: CAPA
	S: +OK
	S: SASL PLAIN XOAUTH2
	S: UIDL
	S: .
`

// afterLogin is the capability refresh after a successful login.
const afterLogin = `
	C: CAPA
	S: +OK
	S: TOP
	S: UIDL
	S: .
`

// A server without USER gets AUTH PLAIN with the initial response (RFC
// 4616 §2: empty authzid, authcid, password), whether the client logged
// in to the proxy with USER/PASS or with AUTH PLAIN.
func TestLoginAuthPlain(t *testing.T) {
	srv := pop3test.NewServer(t, saslOnly+`
		C: AUTH PLAIN `+b64("\x00alice\x00pass word")+`
		S: +OK logged in`+afterLogin+`
		C: QUIT
		S: +OK bye`)
	c := dial(t, srv.Addr(), Options{})
	if err := c.Login("alice", "pass word"); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.HasCapability("TOP"); !ok {
		t.Error("capabilities not re-read after AUTH PLAIN")
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}

// An AUTH PLAIN line that would pass 255 octets (RFC 5034 §4) goes
// without the initial response, which follows the empty challenge; "+"
// without its space counts as empty.
func TestLoginAuthPlainLong(t *testing.T) {
	pass := strings.Repeat("p", 200)
	srv := pop3test.NewServer(t, saslOnly+`
		C: AUTH PLAIN
		S: +
		C: `+b64("\x00alice\x00"+pass)+`
		S: +OK`+afterLogin)
	c := dial(t, srv.Addr(), Options{})
	if err := c.Login("alice", pass); err != nil {
		t.Fatal(err)
	}
	c.Abort()
	srv.Wait(t)
}

// A refused AUTH PLAIN is a *ServerError that keeps the code.
func TestLoginAuthPlainRefused(t *testing.T) {
	srv := pop3test.NewServer(t, saslOnly+`
		C: AUTH PLAIN `+b64("\x00alice\x00wrong")+`
		S: -ERR [AUTH] Authentication failed.`)
	c := dial(t, srv.Addr(), Options{})
	err := c.Login("alice", "wrong")
	var se *ServerError
	if !errors.As(err, &se) || se.Code != "AUTH" || c.Broken() {
		t.Fatalf("Login = %v (broken %v), want a *ServerError [AUTH] on a usable connection", err, c.Broken())
	}
	if strings.Contains(err.Error(), b64("\x00alice\x00wrong")) || strings.Contains(err.Error(), "wrong") {
		t.Errorf("error %q carries the credentials", err)
	}
	c.Abort()
	srv.Wait(t)
}

// CAPA with USER keeps USER/PASS even if SASL PLAIN is offered; a server
// without CAPA gets USER/PASS too.
func TestLoginPrefersUser(t *testing.T) {
	srv := pop3test.NewServer(t, `
		S: +OK fake ready
		C: CAPA
		S: +OK
		S: USER
		S: SASL PLAIN
		S: .
		C: USER alice
		S: +OK
		C: PASS secret
		S: +OK`+afterLogin+`
		S!next
		S: +OK old server
		C: CAPA
		S: -ERR unknown command
		C: USER alice
		S: +OK
		C: PASS secret
		S: +OK
		C: CAPA
		S: -ERR unknown command`)
	for range 2 {
		c := dial(t, srv.Addr(), Options{})
		if err := c.Login("alice", "secret"); err != nil {
			t.Fatal(err)
		}
		c.Abort()
	}
	srv.Wait(t)
}

// CR, LF and NUL are refused before anything is sent, on the AUTH PLAIN
// path as on USER/PASS: the script ends after CAPA, so any byte fails it.
func TestLoginAuthPlainBadArguments(t *testing.T) {
	srv := pop3test.NewServer(t, saslOnly)
	c := dial(t, srv.Addr(), Options{})
	for _, up := range [][2]string{{"alice", "a\r\nQUIT"}, {"alice", "a\x00b"}, {"al\nice", "x"}, {"", "x"}} {
		if err := c.Login(up[0], up[1]); !errors.Is(err, ErrBadArgument) {
			t.Errorf("Login(%q, %q) = %v, want ErrBadArgument", up[0], up[1], err)
		}
	}
	for _, m := range []string{"", "X OAUTH", "XOAUTH2\r\nQUIT", "lower", strings.Repeat("A", 21)} {
		if _, err := c.Auth(m, []byte("x")); !errors.Is(err, ErrBadArgument) {
			t.Errorf("Auth(%q) = %v, want ErrBadArgument", m, err)
		}
	}
	if _, err := c.Auth("XOAUTH2", nil); !errors.Is(err, ErrBadArgument) {
		t.Errorf("Auth with an empty initial response = %v, want ErrBadArgument", err)
	}
	c.Abort()
	srv.Wait(t)
}

// A token refused with an error challenge: Auth returns the decoded
// challenge, other commands wait for the answer, and AuthResponse sends
// it and returns the -ERR.
func TestAuthChallenge(t *testing.T) {
	ir := "user=alice\x01auth=Bearer tok\x01\x01"
	srv := pop3test.NewServer(t, saslOnly+`
		C: AUTH XOAUTH2 `+b64(ir)+`
		S: + `+b64(`{"status":"400"}`)+`
		C: `+`
		S: -ERR [AUTH] Invalid credentials.
		C: AUTH XOAUTH2 `+b64(ir)+`
		S: +OK welcome`+afterLogin)
	c := dial(t, srv.Addr(), Options{})
	if !c.OffersSASL("xoauth2") || c.OffersSASL("OAUTHBEARER") {
		t.Errorf("OffersSASL wrong for %q", c.Capabilities())
	}
	ch, err := c.Auth("XOAUTH2", []byte(ir))
	if err != nil || ch == nil || string(ch.Data) != `{"status":"400"}` {
		t.Fatalf("Auth = %+v, %v; want the challenge", ch, err)
	}
	if _, _, err := c.Stat(); !errors.Is(err, errSASLPending) {
		t.Errorf("Stat during the exchange = %v, want errSASLPending", err)
	}
	ch, err = c.AuthResponse(nil)
	var se *ServerError
	if ch != nil || !errors.As(err, &se) || se.Code != "AUTH" {
		t.Fatalf("AuthResponse = %+v, %v; want -ERR [AUTH]", ch, err)
	}
	if _, err := c.AuthResponse(nil); !errors.Is(err, errNoSASL) {
		t.Errorf("a second AuthResponse = %v, want errNoSASL", err)
	}
	if ch, err := c.Auth("XOAUTH2", []byte(ir)); ch != nil || err != nil {
		t.Fatalf("second Auth = %+v, %v; want success", ch, err)
	}
	c.Abort()
	srv.Wait(t)
}

// A challenge that is no base64, a status line that is neither, and a
// PLAIN challenge after the initial response break the connection.
func TestAuthProtocolErrors(t *testing.T) {
	for _, tc := range []struct{ name, reply string }{
		{"challenge not base64", "S: + %%%"},
		{"garbage", "S: +OKAY"},
		{"challenge after PLAIN", "S: + " + b64("more?")},
		{"continuation without space", "S: +abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := pop3test.NewServer(t, saslOnly+`
				C: AUTH PLAIN `+b64("\x00alice\x00secret")+`
				`+tc.reply)
			c := dial(t, srv.Addr(), Options{})
			err := c.Login("alice", "secret")
			wantConnErr(t, c, err)
			srv.Wait(t)
		})
	}
}

// A "+ " line is a protocol violation outside an AUTH exchange.
func TestContinuationOutsideAuth(t *testing.T) {
	srv := pop3test.NewServer(t, greeting+login+`
		C: STAT
		S: + `)
	c := dial(t, srv.Addr(), Options{})
	if err := c.Login("alice", "secret"); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Stat()
	wantConnErr(t, c, err)
	srv.Wait(t)
}
