package pop3server_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

func TestNewServerOptions(t *testing.T) {
	plain := &fakeBackend{}
	apop := &apopBackend{fakeBackend: plain}
	// "+OK " + greeting + CRLF is at most 512 octets (RFC 1939 §3).
	longest := strings.Repeat("g", 512-len("+OK \r\n"))
	for _, tc := range []struct {
		name    string
		opts    pop3server.Options
		wantErr string // substring; "" for success
	}{
		{"defaults", pop3server.Options{Backend: plain}, ""},
		{"no backend", pop3server.Options{}, "Backend is required"},
		{"longest greeting", pop3server.Options{Backend: plain, Greeting: longest}, ""},
		{"greeting too long", pop3server.Options{Backend: plain, Greeting: longest + "g"}, "Greeting line can reach 513 octets"},
		{"greeting too long for APOP", pop3server.Options{Backend: apop, Greeting: longest}, "Greeting line can reach"},
		{"greeting CRLF", pop3server.Options{Backend: plain, Greeting: "ready\r\n+OK"}, "CR, LF or NUL"},
		{"greeting timestamp", pop3server.Options{Backend: plain, Greeting: "ready <1.2@host>"}, "APOP timestamp"},
		{"greeting brackets", pop3server.Options{Backend: plain, Greeting: "ready <v2> for a@b"}, ""},
		{"hostname", pop3server.Options{Backend: apop, Hostname: "bad host>"}, "not a host name"},
		{"line length", pop3server.Options{Backend: plain, MaxLineLength: 254}, "MaxLineLength 254 is below"},
		{"minimum line length", pop3server.Options{Backend: plain, MaxLineLength: 255}, ""},
		{"bad commands", pop3server.Options{Backend: plain, MaxBadCommands: -1}, "MaxBadCommands"},
		{"auth timeout", pop3server.Options{Backend: plain, AuthTimeout: -1}, "AuthTimeout"},
		{"idle timeout", pop3server.Options{Backend: plain, IdleTimeout: -1}, "IdleTimeout"},
		{"write timeout", pop3server.Options{Backend: plain, WriteTimeout: -1}, "WriteTimeout"},
		{"login delay", pop3server.Options{Backend: plain, LoginDelay: -1}, "LoginDelay"},
		{"expire", pop3server.Options{Backend: plain, Expire: "soon"}, "Expire"},
		{"expire ok", pop3server.Options{Backend: plain, Expire: "0"}, ""},
		{"capabilities", pop3server.Options{Backend: plain, PreLoginCapabilities: []string{"TOP", "SASL PLAIN"}}, "SASL PLAIN"},
		{"implementation", pop3server.Options{Backend: plain, Implementation: "x\ny"}, "Implementation"},
		{"shutdown", pop3server.Options{Backend: plain, OnShutdown: func() {}}, "AllowShutdown is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := pop3server.NewServer(tc.opts)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("NewServer: %v", err)
			case tc.wantErr == "" && srv == nil:
				t.Fatal("NewServer returned no server")
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("NewServer error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewServerReportsAllProblems(t *testing.T) {
	_, err := pop3server.NewServer(pop3server.Options{
		Greeting:      "a\r\nb",
		MaxLineLength: 10,
		IdleTimeout:   -1,
		Expire:        "x",
	})
	var merr *multierror.Error
	if !errors.As(err, &merr) || len(merr.Errors) != 5 {
		t.Fatalf("NewServer error = %v, want 5 problems", err)
	}
	if !strings.HasPrefix(err.Error(), "pop3server: invalid Options: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
}
