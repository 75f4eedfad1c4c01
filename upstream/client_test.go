package upstream

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// greeting is the start of every plain session: Dial reads the greeting and
// asks for the capabilities.
const greeting = `
	S: +OK fake ready
	C: CAPA
	S: +OK capability list follows
	S: USER
	S: UIDL
	S: TOP
	S: .
`

// login is a successful USER/PASS followed by the capability refresh.
const login = `
	C: USER alice
	S: +OK
	C: PASS secret
	S: +OK maildrop locked and ready
	C: CAPA
	S: +OK
	S: TOP
	S: UIDL
	S: EXPIRE 0
	S: LOGIN-DELAY 300
	S: .
`

func dial(t *testing.T, addr string, opt Options) *Client {
	t.Helper()
	if opt.Timeout == 0 {
		opt.Timeout = 5 * time.Second
	}
	c, err := Dial(context.Background(), addr, "", opt)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Abort() })
	return c
}

// loggedIn starts a server with greeting+login+script and logs in.
func loggedIn(t *testing.T, script string, opt Options) (*Client, *pop3test.Server) {
	t.Helper()
	srv := pop3test.NewServer(t, greeting+login+script)
	c := dial(t, srv.Addr(), opt)
	if err := c.Login("alice", "secret"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	return c, srv
}

// wantConnErr checks that err is a transport/protocol failure and that it
// left the client broken.
func wantConnErr(t *testing.T, c *Client, err error) {
	t.Helper()
	if !errors.Is(err, ErrConnection) {
		t.Fatalf("err = %v, want ErrConnection", err)
	}
	if !c.Broken() {
		t.Errorf("Broken() = false after %v", err)
	}
}

func TestLoginAndCapabilities(t *testing.T) {
	srv := pop3test.NewServer(t, greeting+login+`
		C: QUIT
		S: +OK bye`)
	c := dial(t, srv.Addr(), Options{})
	if got, want := c.Capabilities(), []string{"USER", "UIDL", "TOP"}; !reflect.DeepEqual(got, want) {
		t.Errorf("capabilities before login = %q, want %q", got, want)
	}
	if c.Greeting() != "fake ready" {
		t.Errorf("Greeting() = %q", c.Greeting())
	}
	if err := c.Login("alice", "secret"); err != nil {
		t.Fatal(err)
	}
	// RFC 2449 §5: capabilities may change after login.
	if got, want := c.Capabilities(), []string{"TOP", "UIDL", "EXPIRE 0", "LOGIN-DELAY 300"}; !reflect.DeepEqual(got, want) {
		t.Errorf("capabilities after login = %q, want %q", got, want)
	}
	if args, ok := c.HasCapability("login-delay"); !ok || args != "300" {
		t.Errorf(`HasCapability("login-delay") = %q, %v`, args, ok)
	}
	if _, ok := c.HasCapability("USER"); ok {
		t.Error("USER still listed after the refresh")
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("Quit: %v", err)
	}
	srv.Wait(t)
}

func TestLoginServerErrors(t *testing.T) {
	tests := []struct {
		name, reply string
		want        ServerError
	}{
		{"in use", "-ERR [IN-USE] maildrop locked", ServerError{Code: "IN-USE", Text: "maildrop locked"}},
		{"login delay", "-ERR [LOGIN-DELAY] wait 5 minutes", ServerError{Code: "LOGIN-DELAY", Text: "wait 5 minutes"}},
		{"auth", "-ERR [AUTH] invalid password", ServerError{Code: "AUTH", Text: "invalid password"}},
		{"sys temp", "-ERR [SYS/TEMP] try later", ServerError{Code: "SYS/TEMP", Text: "try later"}},
		{"no code", "-ERR invalid password", ServerError{Text: "invalid password"}},
		{"bare", "-ERR", ServerError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := pop3test.NewServer(t, greeting+`
				C: USER alice
				S: +OK
				C: PASS secret
				S: `+tt.reply+`
				C: QUIT
				S: +OK`)
			c := dial(t, srv.Addr(), Options{})
			err := c.Login("alice", "secret")
			var se *ServerError
			if !errors.As(err, &se) {
				t.Fatalf("Login error %v is not a *ServerError", err)
			}
			if *se != tt.want {
				t.Errorf("ServerError = %+v, want %+v", *se, tt.want)
			}
			if errors.Is(err, ErrConnection) || c.Broken() {
				t.Errorf("a -ERR made the connection broken: %v", err)
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			srv.Wait(t)
		})
	}
}

// TestLoginErrorThenClose: a server may close the connection after -ERR to
// PASS (RFC 1939 §4), and the answer still counts.
func TestLoginErrorThenClose(t *testing.T) {
	srv := pop3test.NewServer(t, greeting+`
		C: USER alice
		S: +OK
		C: PASS secret
		S: -ERR [AUTH] no
		S!close`)
	c := dial(t, srv.Addr(), Options{})
	err := c.Login("alice", "secret")
	var se *ServerError
	if !errors.As(err, &se) || se.Code != "AUTH" {
		t.Fatalf("Login = %v, want [AUTH] ServerError", err)
	}
	wantConnErr(t, c, c.Noop())
	srv.Wait(t)
}

// TestLoginRefusesInjection checks that nothing is written when a credential
// contains CR, LF or NUL: the script ends after CAPA, so any command fails
// the test.
func TestLoginRefusesInjection(t *testing.T) {
	for _, cred := range []struct{ user, pass string }{
		{"alice", "secret\r\nDELE 1"},
		{"alice", "secret\nDELE 1"},
		{"alice", "secret\rx"},
		{"alice", "sec\x00ret"},
		{"ali\r\nce", "secret"},
		{"alice\x00", "secret"},
		{"", "secret"},
	} {
		srv := pop3test.NewServer(t, greeting)
		c := dial(t, srv.Addr(), Options{})
		err := c.Login(cred.user, cred.pass)
		if !errors.Is(err, ErrBadArgument) {
			t.Errorf("Login(%q, %q) = %v, want ErrBadArgument", cred.user, cred.pass, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q shows the password", err)
		}
		if c.Broken() {
			t.Error("refused argument broke the connection")
		}
		c.Abort()
		srv.Wait(t)
	}
}

func TestMalformedStatusLines(t *testing.T) {
	for _, reply := range []string{
		`"\r\n"`, // go-pop3 takes an empty line for +OK
		`"\n"`,
		`"+ok\r\n"`,
		`"OK\r\n"`,
		`"+OKAY\r\n"`,
		`"-ERROR\r\n"`,
		`"+OK\rX\r\n"`,
		`"* garbage that is long enough\r\n"`,
		`"HTTP/1.1 400 Bad Request\r\n"`,
	} {
		srv := pop3test.NewServer(t, greeting+`
			C: NOOP
			S!raw `+reply)
		c := dial(t, srv.Addr(), Options{})
		err := c.Noop()
		if !errors.Is(err, ErrConnection) || !c.Broken() {
			t.Errorf("NOOP answered %s: err = %v, broken = %v; want ErrConnection", reply, err, c.Broken())
		}
		srv.Wait(t)
	}
}

func TestEmptyGreetingRejected(t *testing.T) {
	srv := pop3test.NewServer(t, `S:`)
	_, err := Dial(context.Background(), srv.Addr(), "", Options{})
	if !errors.Is(err, ErrConnection) {
		t.Fatalf("Dial = %v, want ErrConnection", err)
	}
	srv.Wait(t)
}

func TestGreetingError(t *testing.T) {
	srv := pop3test.NewServer(t, `S: -ERR [SYS/TEMP] too many connections`)
	_, err := Dial(context.Background(), srv.Addr(), "", Options{})
	var se *ServerError
	if !errors.Is(err, ErrConnection) || !errors.As(err, &se) || se.Code != "SYS/TEMP" {
		t.Fatalf("Dial = %v, want ErrConnection and a SYS/TEMP ServerError", err)
	}
	srv.Wait(t) // Dial closed the connection go-pop3 would have leaked
}

func TestCapaUnsupported(t *testing.T) {
	srv := pop3test.NewServer(t, `
		S: +OK old server
		C: CAPA
		S: -ERR unknown command
		C: QUIT
		S: +OK`)
	c := dial(t, srv.Addr(), Options{})
	if c.Capabilities() != nil {
		t.Errorf("Capabilities() = %q, want nil", c.Capabilities())
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}

func TestStatListUidl(t *testing.T) {
	c, srv := loggedIn(t, `
		C: STAT
		S: +OK 2 320
		C: LIST
		S: +OK 2 messages (320 octets)
		S: 1 120
		S: 2 200
		S: .
		C: LIST 2
		S: +OK 2 200
		C: LIST 3
		S: -ERR no such message, only 2 messages in maildrop
		C: UIDL
		S: +OK
		S: 1 whqtswO00WBw418f9t5JxYwZ
		S: 2 QhdPYR:00WBw1Ph7x7
		S: .
		C: UIDL 1
		S: +OK 1 whqtswO00WBw418f9t5JxYwZ
		C: DELE 1
		S: +OK message 1 deleted
		C: STAT
		S: +OK 1 200
		C: RSET
		S: +OK
		C: NOOP
		S: +OK
		C: QUIT
		S: +OK bye`, Options{})
	if n, size, err := c.Stat(); err != nil || n != 2 || size != 320 {
		t.Errorf("Stat = %d, %d, %v", n, size, err)
	}
	list, err := c.List(0)
	if want := []MessageInfo{{Number: 1, Size: 120}, {Number: 2, Size: 200}}; err != nil || !reflect.DeepEqual(list, want) {
		t.Errorf("List(0) = %+v, %v", list, err)
	}
	list, err = c.List(2)
	if want := []MessageInfo{{Number: 2, Size: 200}}; err != nil || !reflect.DeepEqual(list, want) {
		t.Errorf("List(2) = %+v, %v", list, err)
	}
	_, err = c.List(3)
	var se *ServerError
	if !errors.As(err, &se) || c.Broken() {
		t.Errorf("List(3) = %v, want a ServerError", err)
	}
	uidl, err := c.Uidl(0)
	if want := []MessageInfo{{Number: 1, UID: "whqtswO00WBw418f9t5JxYwZ"}, {Number: 2, UID: "QhdPYR:00WBw1Ph7x7"}}; err != nil || !reflect.DeepEqual(uidl, want) {
		t.Errorf("Uidl(0) = %+v, %v", uidl, err)
	}
	uidl, err = c.Uidl(1)
	if want := []MessageInfo{{Number: 1, UID: "whqtswO00WBw418f9t5JxYwZ"}}; err != nil || !reflect.DeepEqual(uidl, want) {
		t.Errorf("Uidl(1) = %+v, %v", uidl, err)
	}
	if err := c.Dele(1); err != nil {
		t.Error(err)
	}
	if n, size, err := c.Stat(); err != nil || n != 1 || size != 200 {
		t.Errorf("Stat = %d, %d, %v", n, size, err)
	}
	if err := c.Rset(); err != nil {
		t.Error(err)
	}
	if err := c.Noop(); err != nil {
		t.Error(err)
	}
	for _, err := range []error{c.Dele(0), c.Dele(-1), func() error { _, err := c.List(-1); return err }()} {
		if !errors.Is(err, ErrBadArgument) {
			t.Errorf("bad message number: %v, want ErrBadArgument", err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}

func TestEmptyMaildrop(t *testing.T) {
	c, srv := loggedIn(t, `
		C: STAT
		S: +OK 0 0
		C: LIST
		S: +OK
		S: .
		C: QUIT
		S: +OK`, Options{})
	if n, size, err := c.Stat(); err != nil || n != 0 || size != 0 {
		t.Errorf("Stat = %d, %d, %v", n, size, err)
	}
	if list, err := c.List(0); err != nil || len(list) != 0 {
		t.Errorf("List = %v, %v", list, err)
	}
	c.Quit()
	srv.Wait(t)
}

func TestMalformedAnswers(t *testing.T) {
	tests := []struct {
		name, script string
		call         func(c *Client) error
	}{
		{"STAT without size", "C: STAT\nS: +OK 2", func(c *Client) error { _, _, err := c.Stat(); return err }},
		{"STAT not a number", "C: STAT\nS: +OK two 320", func(c *Client) error { _, _, err := c.Stat(); return err }},
		{"LIST line", "C: LIST\nS: +OK\nS: 1 120\nS: x y\nS: .", func(c *Client) error { _, err := c.List(0); return err }},
		{"LIST other number", "C: LIST 2\nS: +OK 3 120", func(c *Client) error { _, err := c.List(2); return err }},
		{"UIDL bad uid", "C: UIDL 1\nS: +OK 1 \x01bad", func(c *Client) error { _, err := c.Uidl(1); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, srv := loggedIn(t, tt.script, Options{})
			wantConnErr(t, c, tt.call(c))
			srv.Wait(t)
		})
	}
}

func TestDialErrors(t *testing.T) {
	for _, addr := range []string{"no-port", "host:", "host:99999", "host:x"} {
		if _, err := Dial(context.Background(), addr, "", Options{}); !errors.Is(err, ErrBadArgument) {
			t.Errorf("Dial(%q) = %v, want ErrBadArgument", addr, err)
		}
	}
	if _, err := Dial(context.Background(), "127.0.0.1:110", "", Options{TLS: TLSMode(42)}); !errors.Is(err, ErrBadArgument) {
		t.Errorf("Dial with TLS mode 42 = %v, want ErrBadArgument", err)
	}
	// A port nobody listens on.
	srv := pop3test.NewServer(t, "S: +OK")
	addr := srv.Addr()
	srv.Close()
	if _, err := Dial(context.Background(), addr, "", Options{}); !errors.Is(err, ErrConnection) {
		t.Errorf("Dial to a closed port = %v, want ErrConnection", err)
	}
}
