package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

func TestPlanTLS(t *testing.T) {
	tests := []struct {
		mode     TLSMode
		port     int
		implicit bool
		stls     stlsPolicy
	}{
		{TLSNone, 110, false, stlsNever},
		{TLSNone, 995, false, stlsNever},
		{TLSImplicit, 110, true, stlsNever},
		{TLSImplicit, 995, true, stlsNever},
		{TLSStartTLS, 110, false, stlsRequired},
		{TLSStartTLS, 995, false, stlsRequired},
		{TLSAuto, 995, true, stlsNever},
		{TLSAuto, 110, false, stlsIfOffered},
		{TLSAuto, 1995, false, stlsIfOffered},
	}
	for _, tt := range tests {
		implicit, stls, err := planTLS(tt.mode, tt.port)
		if err != nil || implicit != tt.implicit || stls != tt.stls {
			t.Errorf("planTLS(%v, %d) = %v, %v, %v; want %v, %v", tt.mode, tt.port, implicit, stls, err, tt.implicit, tt.stls)
		}
	}
	if _, _, err := planTLS(TLSMode(-1), 110); !errors.Is(err, ErrBadArgument) {
		t.Errorf("planTLS(-1) = %v", err)
	}
}

func TestParseTLSMode(t *testing.T) {
	for _, m := range []TLSMode{TLSNone, TLSImplicit, TLSStartTLS, TLSAuto} {
		got, err := ParseTLSMode(strings.ToUpper(m.String()))
		if err != nil || got != m {
			t.Errorf("ParseTLSMode(%q) = %v, %v", strings.ToUpper(m.String()), got, err)
		}
		var u TLSMode
		text, err := m.MarshalText()
		if err != nil || u.UnmarshalText(text) != nil || u != m {
			t.Errorf("text round trip of %v: %q, %v, %v", m, text, err, u)
		}
	}
	for _, s := range []string{"", "tls", "ssl", "start-tls", "none "} {
		if _, err := ParseTLSMode(s); err == nil {
			t.Errorf("ParseTLSMode(%q) succeeded", s)
		}
	}
	if s := TLSMode(7).String(); s != "TLSMode(7)" {
		t.Errorf("TLSMode(7).String() = %q", s)
	}
}

// stlsGreeting offers STLS; after the upgrade the server forgets it.
const stlsGreeting = `
	S: +OK plain ready
	C: CAPA
	S: +OK
	S: STLS
	S: USER
	S: .
	C: STLS
	S: +OK Begin TLS negotiation
	S!starttls
	C: CAPA
	S: +OK
	S: USER
	S: SASL PLAIN
	S: .
`

func tlsOptions(mode TLSMode, roots *tls.Config) Options {
	return Options{TLS: mode, TLSConfig: roots, Timeout: 5 * time.Second, DialTimeout: 5 * time.Second}
}

func TestTLS(t *testing.T) {
	serverCfg, roots := testinfra.NewTLS(t)
	good := &tls.Config{RootCAs: roots}
	_, otherRoots := testinfra.NewTLS(t)
	unknownCA := &tls.Config{RootCAs: otherRoots}

	t.Run("implicit", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting+login+`
			C: QUIT
			S: +OK`, pop3test.WithImplicitTLS(serverCfg))
		c, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSImplicit, good))
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := c.TLSConnectionState(); !ok || !st.HandshakeComplete || st.ServerName != "localhost" {
			t.Errorf("TLS state %+v, %v", st, ok)
		}
		if err := c.Login("alice", "secret"); err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		srv.Wait(t)
	})
	t.Run("implicit by IP address", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting, pop3test.WithImplicitTLS(serverCfg))
		c, err := Dial(context.Background(), srv.Addr(), "", tlsOptions(TLSImplicit, good))
		if err != nil {
			t.Fatal(err)
		}
		c.Abort()
		srv.Wait(t)
	})
	t.Run("implicit unknown CA", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting, pop3test.WithImplicitTLS(serverCfg))
		_, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSImplicit, unknownCA))
		wantTLSErr(t, err, "certificate")
	})
	t.Run("implicit wrong name", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting, pop3test.WithImplicitTLS(serverCfg))
		_, err := Dial(context.Background(), srv.Addr(), "pop.example.net", tlsOptions(TLSImplicit, good))
		wantTLSErr(t, err, "pop.example.net")
	})
	t.Run("implicit against a plain server", func(t *testing.T) {
		srv := pop3test.NewServer(t, "S: +OK plain\nS!discard")
		_, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSImplicit, good))
		wantTLSErr(t, err, "")
		srv.Wait(t)
	})
	t.Run("implicit silent server", func(t *testing.T) {
		srv := pop3test.NewServer(t, `S!discard`)
		start := time.Now()
		opt := tlsOptions(TLSImplicit, good)
		opt.DialTimeout = 200 * time.Millisecond
		_, err := Dial(context.Background(), srv.Addr(), "localhost", opt)
		wantTLSErr(t, err, "")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("handshake timeout took %v", d)
		}
		srv.Wait(t)
	})
	t.Run("starttls", func(t *testing.T) {
		srv := pop3test.NewServer(t, stlsGreeting+`
			C: USER alice
			S: +OK
			C: PASS secret
			S: +OK
			C: CAPA
			S: -ERR
			C: QUIT
			S: +OK`, pop3test.WithTLS(serverCfg))
		c, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSStartTLS, good))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.TLSConnectionState(); !ok {
			t.Error("no TLS after STLS")
		}
		// The plain-text capabilities are forgotten (RFC 2595 §4).
		if _, ok := c.HasCapability("STLS"); ok {
			t.Error("STLS still listed after the upgrade")
		}
		if args, ok := c.HasCapability("SASL"); !ok || args != "PLAIN" {
			t.Errorf("SASL = %q, %v", args, ok)
		}
		if err := c.Login("alice", "secret"); err != nil {
			t.Fatal(err)
		}
		if c.Capabilities() != nil {
			t.Errorf("capabilities after CAPA -ERR: %q", c.Capabilities())
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		srv.Wait(t)
	})
	t.Run("starttls unknown CA", func(t *testing.T) {
		srv := pop3test.NewServer(t, stlsGreeting, pop3test.WithTLS(serverCfg))
		_, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSStartTLS, unknownCA))
		wantTLSErr(t, err, "certificate")
	})
	t.Run("starttls not offered", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting) // ends after CAPA: STLS must not be sent
		_, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSStartTLS, good))
		wantTLSErr(t, err, "does not offer STLS")
		srv.Wait(t)
	})
	t.Run("starttls refused", func(t *testing.T) {
		srv := pop3test.NewServer(t, `
			S: +OK ready
			C: CAPA
			S: +OK
			S: STLS
			S: .
			C: STLS
			S: -ERR [SYS/TEMP] TLS not available now`)
		_, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSStartTLS, good))
		wantTLSErr(t, err, "not available")
		var se *ServerError
		if !errors.As(err, &se) || se.Code != "SYS/TEMP" {
			t.Errorf("err = %v, want the ServerError kept", err)
		}
		srv.Wait(t)
	})
	t.Run("starttls injection", func(t *testing.T) {
		// Bytes after "+OK" in the same segment would be read as if they
		// came from inside TLS (CVE-2011-0411 class): refuse.
		srv := pop3test.NewServer(t, `
			S: +OK ready
			C: CAPA
			S: +OK
			S: STLS
			S: .
			C: STLS
			S!raw "+OK Begin TLS\r\n+OK injected greeting\r\n"`, pop3test.WithTLS(serverCfg))
		_, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSStartTLS, good))
		wantTLSErr(t, err, "unsolicited")
		srv.Wait(t) // no handshake was attempted
	})
	t.Run("auto upgrades", func(t *testing.T) {
		srv := pop3test.NewServer(t, stlsGreeting, pop3test.WithTLS(serverCfg))
		c, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSAuto, good))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.TLSConnectionState(); !ok {
			t.Error("auto did not upgrade although STLS was offered")
		}
		c.Abort()
		srv.Wait(t)
	})
	t.Run("auto falls back to plain", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting+login)
		c, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSAuto, good))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := c.TLSConnectionState(); ok {
			t.Error("TLS without STLS")
		}
		if err := c.Login("alice", "secret"); err != nil { // CAPA was not repeated
			t.Fatal(err)
		}
		c.Abort()
		srv.Wait(t)
	})
	t.Run("none ignores STLS", func(t *testing.T) {
		srv := pop3test.NewServer(t, `
			S: +OK ready
			C: CAPA
			S: +OK
			S: STLS
			S: .`)
		c, err := Dial(context.Background(), srv.Addr(), "localhost", tlsOptions(TLSNone, good))
		if err != nil {
			t.Fatal(err)
		}
		c.Abort()
		srv.Wait(t)
	})
}

func wantTLSErr(t *testing.T, err error, contains string) {
	t.Helper()
	if !errors.Is(err, ErrTLS) || !errors.Is(err, ErrConnection) {
		t.Fatalf("err = %v, want ErrTLS and ErrConnection", err)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Errorf("err = %v, want it to mention %q", err, contains)
	}
}

func TestClientTLSConfig(t *testing.T) {
	base := &tls.Config{MinVersion: tls.VersionTLS13}
	cfg := clientTLSConfig(base, "pop.example.com", false)
	if cfg.ServerName != "pop.example.com" || cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("config %+v", cfg)
	}
	if base.ServerName != "" {
		t.Error("the caller's config was modified")
	}
	if cfg := clientTLSConfig(&tls.Config{ServerName: "fixed"}, "other", false); cfg.ServerName != "fixed" {
		t.Errorf("ServerName = %q, want the caller's", cfg.ServerName)
	}
	if cfg := clientTLSConfig(nil, "pop.example.com", false); cfg.ServerName != "pop.example.com" || cfg.InsecureSkipVerify || cfg.RootCAs != nil {
		t.Errorf("nil base gave %+v", cfg)
	}
	if cfg := clientTLSConfig(base, "pop.example.com", true); !cfg.InsecureSkipVerify || base.InsecureSkipVerify {
		t.Errorf("insecure: config %v, base %v", cfg.InsecureSkipVerify, base.InsecureSkipVerify)
	}
}
