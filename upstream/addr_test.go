package upstream

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestParseLogin(t *testing.T) {
	const seps = "%#@"
	tests := []struct {
		login, seps, def string
		want             Route
		wantErr          string // substring of the error; "" for success
	}{
		{login: "alice%pop.example.com", want: Route{"alice", "pop.example.com", 110}},
		{login: "alice@pop.example.com:995", want: Route{"alice", "pop.example.com", 995}},
		{login: "alice#pop.example.com:1110", want: Route{"alice", "pop.example.com", 1110}},
		{login: "Alice%POP.Example.COM", want: Route{"Alice", "pop.example.com", 110}},
		{login: "alice%mail_1.example-host.org", want: Route{"alice", "mail_1.example-host.org", 110}},
		{login: "alice%localhost:1100", want: Route{"alice", "localhost", 1100}},
		// The last separator wins, so user names may contain the others.
		{login: "me@example.com@pop.example.com:995", want: Route{"me@example.com", "pop.example.com", 995}},
		{login: "a%b@host", want: Route{"a%b", "host", 110}},
		{login: "a@b%host:2", want: Route{"a@b", "host", 2}},
		{login: "a%b%c", want: Route{"a%b", "c", 110}},
		{login: "me@example.com@pop.example.com", seps: "@", want: Route{"me@example.com", "pop.example.com", 110}},
		{login: "a%b@host", seps: "%", want: Route{"a", "b@host", 0}, wantErr: "invalid upstream host name"},
		// IP literals.
		{login: "alice%192.0.2.1", want: Route{"alice", "192.0.2.1", 110}},
		{login: "alice%192.0.2.1:995", want: Route{"alice", "192.0.2.1", 995}},
		{login: "alice@[::1]:110", want: Route{"alice", "::1", 110}},
		{login: "alice@[2001:db8::1]", want: Route{"alice", "2001:db8::1", 110}},
		{login: "alice#[2001:DB8:0:0::1]:995", want: Route{"alice", "2001:db8::1", 995}},
		{login: "alice@[::1]:", wantErr: "invalid port"},
		{login: "alice@[::1]x", wantErr: "unexpected characters"},
		{login: "alice@[::1", wantErr: "missing ']'"},
		{login: "alice@[192.0.2.1]", wantErr: "invalid IPv6"},
		{login: "alice@[pop.example.com]", wantErr: "invalid IPv6"},
		{login: "alice#[fe80::1%eth0]", seps: "#", wantErr: "invalid IPv6"},
		{login: "alice@::1", wantErr: "brackets"},
		{login: "alice@2001:db8::1:110", wantErr: "brackets"},
		// Ports.
		{login: "alice%host:0", wantErr: "port out of range"},
		{login: "alice%host:65535", want: Route{"alice", "host", 65535}},
		{login: "alice%host:65536", wantErr: "port out of range"},
		{login: "alice%host:99999", wantErr: "port out of range"},
		{login: "alice%host:123456", wantErr: "invalid port"},
		{login: "alice%host:", wantErr: "invalid port"},
		{login: "alice%host:+110", wantErr: "invalid port"},
		{login: "alice%host:-1", wantErr: "invalid port"},
		{login: "alice%host:11 0", wantErr: "invalid port"},
		{login: "alice%host:pop3", wantErr: "invalid port"},
		// Empty parts.
		{login: "%host", wantErr: "empty user"},
		{login: "alice%", wantErr: "empty upstream host"},
		{login: "alice%:110", wantErr: "empty upstream host"},
		{login: "", wantErr: "no upstream server"},
		// The user name must fit into one USER command.
		{login: "al\rice%host", wantErr: "user name"},
		{login: "al\nice%host", wantErr: "user name"},
		{login: "al\x00ice%host", wantErr: "user name"},
		{login: "al ice%host", wantErr: "user name"},
		{login: "alice\t%host", wantErr: "user name"},
		// Host names.
		{login: "alice%pop example.com", wantErr: "invalid upstream host name"},
		{login: "alice%pop/example.com", wantErr: "invalid upstream host name"},
		{login: "alice%host\r\n", wantErr: "invalid upstream host name"},
		{login: "alice%pop..example.com", wantErr: "invalid upstream host name"},
		{login: "alice%.example.com", wantErr: "invalid upstream host name"},
		{login: "alice%example.com.", wantErr: "invalid upstream host name"},
		{login: "alice%" + strings.Repeat("a", 64) + ".com", wantErr: "invalid upstream host name"},
		{login: "alice%127.1", wantErr: "invalid upstream host name"},
		{login: "alice%1.2.3.300", wantErr: "invalid upstream host name"},
		{login: "alice%010.0.0.1", wantErr: "invalid upstream host name"},
		{login: "alice%ex\xc3\xa4mple.com", wantErr: "invalid upstream host name"},
		// No separator: the default upstream, if any.
		{login: "alice", def: "pop.example.com:995", want: Route{"alice", "pop.example.com", 995}},
		{login: "alice", def: "[::1]:110", want: Route{"alice", "::1", 110}},
		{login: "alice", seps: "-", def: "pop.example.com:995", want: Route{"alice", "pop.example.com", 995}},
		{login: "alice%other:110", seps: "-", def: "pop.example.com:995", want: Route{"alice%other:110", "pop.example.com", 995}},
		{login: "alice", def: "pop.example.com", wantErr: "invalid default upstream"},
		{login: "al ice", def: "pop.example.com:995", wantErr: "user name"},
		{login: "alice", wantErr: "no upstream server"},
		{login: "alice%host", seps: "-", wantErr: "no upstream server"},
	}
	for _, tt := range tests {
		seps := seps
		if tt.seps == "-" {
			seps = ""
		} else if tt.seps != "" {
			seps = tt.seps
		}
		got, err := ParseLogin(tt.login, seps, tt.def, DefaultPort)
		if tt.wantErr != "" {
			var le *LoginError
			if err == nil || !errors.As(err, &le) || !errors.Is(err, ErrInvalidLogin) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseLogin(%q, %q, %q) = %+v, %v; want a LoginError about %q", tt.login, seps, tt.def, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLogin(%q, %q, %q) = %+v, %v; want %+v", tt.login, seps, tt.def, got, err, tt.want)
		}
	}
}

// TestParseLoginErrorIsClientSafe checks that the error, which goes to the
// client, neither echoes the login (it may hold a password typed into the
// wrong field) nor carries line breaks.
func TestParseLoginErrorIsClientSafe(t *testing.T) {
	_, err := ParseLogin("secret\r\nDELE 1%host", "%", "", 110)
	if err == nil || strings.Contains(err.Error(), "DELE") || strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error %q", err)
	}
}

func TestParseLoginDefaultPort(t *testing.T) {
	got, err := ParseLogin("alice%host", "%", "", 995)
	if err != nil || got.Port != 995 {
		t.Errorf("got %+v, %v", got, err)
	}
}

func TestRouteAddr(t *testing.T) {
	for _, tt := range []struct {
		r    Route
		want string
	}{
		{Route{"a", "pop.example.com", 110}, "pop.example.com:110"},
		{Route{"a", "192.0.2.1", 995}, "192.0.2.1:995"},
		{Route{"a", "2001:db8::1", 995}, "[2001:db8::1]:995"},
	} {
		if got := tt.r.Addr(); got != tt.want {
			t.Errorf("%+v.Addr() = %q, want %q", tt.r, got, tt.want)
		}
	}
}

// FuzzParseLogin checks ParseLogin's promises on any input: no panic; a
// route's user name fits into USER (no control character or space), its
// port is valid, and Route.Addr parses back to the same route; a login
// without a separator is routed only to the default.
func FuzzParseLogin(f *testing.F) {
	f.Add("alice%pop.example.com:995", "%#@", "", uint16(110))
	f.Add("me@example.com@[2001:db8::1]", "@", "", uint16(995))
	f.Add("alice", "%", "pop.example.com:110", uint16(0))
	f.Fuzz(func(t *testing.T, login, seps, def string, defaultPort uint16) {
		r, err := ParseLogin(login, seps, def, int(defaultPort))
		hasSep := seps != "" && strings.ContainsAny(login, seps)
		if err != nil {
			var le *LoginError
			if !errors.As(err, &le) || !errors.Is(err, ErrInvalidLogin) {
				t.Fatalf("error %v is not a *LoginError", err)
			}
			if strings.ContainsAny(err.Error(), "\r\n\x00") {
				t.Fatalf("error %q carries a line break or NUL", err)
			}
			return
		}
		if !hasSep && def == "" {
			t.Fatalf("ParseLogin(%q, %q, \"\") = %+v without a separator or default", login, seps, r)
		}
		if r.User == "" || strings.IndexFunc(r.User, func(c rune) bool { return c <= ' ' || c == 0x7f }) >= 0 {
			t.Fatalf("user %q cannot be sent as USER", r.User)
		}
		if r.Port < 1 || r.Port > 65535 {
			t.Fatalf("port %d", r.Port)
		}
		if r.Host == "" || strings.ContainsAny(r.Host, "[]%/ \r\n\x00") || r.Host != strings.ToLower(r.Host) {
			t.Fatalf("host %q", r.Host)
		}
		if !hasSep && r.User != login {
			t.Fatalf("default route changed the user name %q to %q", login, r.User)
		}
		// Addr must say the same thing again, to the parser and to net.
		again, err := ParseLogin(r.User+"%"+r.Addr(), "%", "", DefaultPort)
		if err != nil || again != r {
			t.Fatalf("Addr %q parses to %+v, %v; want %+v", r.Addr(), again, err, r)
		}
		host, port, err := net.SplitHostPort(r.Addr())
		if err != nil || host != r.Host || port != strconv.Itoa(r.Port) {
			t.Fatalf("net.SplitHostPort(%q) = %q, %q, %v", r.Addr(), host, port, err)
		}
	})
}
