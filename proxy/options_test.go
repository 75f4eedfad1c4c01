package proxy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-multierror"
	"github.com/pop3proxy/pop3proxy/proxy"
)

func TestNewServerOptions(t *testing.T) {
	plain := &fakeBackend{}
	apop := &apopBackend{fakeBackend: plain}
	// "+OK " + greeting + CRLF is at most 512 octets (RFC 1939 §3).
	longest := strings.Repeat("g", 512-len("+OK \r\n"))
	for _, tc := range []struct {
		name    string
		opts    proxy.Options
		wantErr string // substring; "" for success
	}{
		{"defaults", proxy.Options{Backend: plain}, ""},
		{"no backend", proxy.Options{}, "Backend is required"},
		{"longest greeting", proxy.Options{Backend: plain, Greeting: longest}, ""},
		{"greeting too long", proxy.Options{Backend: plain, Greeting: longest + "g"}, "Greeting line can reach 513 octets"},
		{"greeting too long for APOP", proxy.Options{Backend: apop, Greeting: longest}, "Greeting line can reach"},
		{"greeting CRLF", proxy.Options{Backend: plain, Greeting: "ready\r\n+OK"}, "CR, LF or NUL"},
		{"greeting timestamp", proxy.Options{Backend: plain, Greeting: "ready <1.2@host>"}, "APOP timestamp"},
		{"greeting brackets", proxy.Options{Backend: plain, Greeting: "ready <v2> for a@b"}, ""},
		{"hostname", proxy.Options{Backend: apop, Hostname: "bad host>"}, "not a host name"},
		{"line length", proxy.Options{Backend: plain, MaxLineLength: 254}, "MaxLineLength 254 is below"},
		{"minimum line length", proxy.Options{Backend: plain, MaxLineLength: 255}, ""},
		{"bad commands", proxy.Options{Backend: plain, MaxBadCommands: -1}, "MaxBadCommands"},
		{"auth timeout", proxy.Options{Backend: plain, AuthTimeout: -1}, "AuthTimeout"},
		{"idle timeout", proxy.Options{Backend: plain, IdleTimeout: -1}, "IdleTimeout"},
		{"write timeout", proxy.Options{Backend: plain, WriteTimeout: -1}, "WriteTimeout"},
		{"login delay", proxy.Options{Backend: plain, LoginDelay: -1}, "LoginDelay"},
		{"expire", proxy.Options{Backend: plain, Expire: "soon"}, "Expire"},
		{"expire ok", proxy.Options{Backend: plain, Expire: "0"}, ""},
		{"capabilities", proxy.Options{Backend: plain, PreLoginCapabilities: []string{"TOP", "SASL PLAIN"}}, "SASL PLAIN"},
		{"implementation", proxy.Options{Backend: plain, Implementation: "x\ny"}, "Implementation"},
		{"shutdown", proxy.Options{Backend: plain, OnShutdown: func() {}}, "AllowShutdown is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := proxy.NewServer(tc.opts)
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
	_, err := proxy.NewServer(proxy.Options{
		Greeting:      "a\r\nb",
		MaxLineLength: 10,
		IdleTimeout:   -1,
		Expire:        "x",
	})
	var merr *multierror.Error
	if !errors.As(err, &merr) || len(merr.Errors) != 5 {
		t.Fatalf("NewServer error = %v, want 5 problems", err)
	}
	if !strings.HasPrefix(err.Error(), "proxy: invalid Options: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
}
