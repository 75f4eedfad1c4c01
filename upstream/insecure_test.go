package upstream

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

const insecureWarning = "upstream certificate not verified (insecure_skip_verify)"

// warnings returns the WARN messages logged for addr.
func warnings(logs *observer.ObservedLogs, addr string) []string {
	var out []string
	for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
		if e.ContextMap()["upstream"] == addr {
			out = append(out, e.Message)
		}
	}
	return out
}

// TestInsecureSkipVerify: InsecureSkipVerify keeps TLS but accepts a
// certificate from an unknown CA, for a wrong name, and logs a warning for
// every connection.
func TestInsecureSkipVerify(t *testing.T) {
	serverCfg, _ := testinfra.NewTLS(t, "pop.example.net") // nobody trusts its CA
	tests := []struct {
		name   string
		mode   TLSMode
		script string
		opts   []pop3test.Option
	}{
		{"implicit", TLSImplicit, greeting, []pop3test.Option{pop3test.WithImplicitTLS(serverCfg)}},
		{"starttls", TLSStartTLS, stlsGreeting, []pop3test.Option{pop3test.WithTLS(serverCfg)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Without the option: refused.
			refused := pop3test.NewServer(t, tt.script, tt.opts...)
			_, err := Dial(context.Background(), refused.Addr(), "localhost", tlsOptions(tt.mode, nil))
			wantTLSErr(t, err, "certificate")

			srv := pop3test.NewServer(t, tt.script+"S!next\n"+tt.script, tt.opts...)

			core, logs := observer.New(zapcore.DebugLevel)
			for i := range 2 {
				opt := tlsOptions(tt.mode, nil)
				opt.InsecureSkipVerify = true
				opt.Logger = zap.New(core)
				c, err := Dial(context.Background(), srv.Addr(), "localhost", opt)
				if err != nil {
					t.Fatalf("connection %d: %v", i+1, err)
				}
				if _, ok := c.TLSConnectionState(); !ok {
					t.Error("no TLS with InsecureSkipVerify")
				}
				c.Abort()
				if got := warnings(logs, srv.Addr()); len(got) != i+1 || got[i] != insecureWarning {
					t.Errorf("after connection %d: warnings %q, want one %q per connection", i+1, got, insecureWarning)
				}
			}
			srv.Wait(t)
		})
	}
	t.Run("set in TLSConfig", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting, pop3test.WithImplicitTLS(serverCfg))
		core, logs := observer.New(zapcore.DebugLevel)
		opt := tlsOptions(TLSImplicit, &tls.Config{InsecureSkipVerify: true})
		opt.Logger = zap.New(core)
		c, err := Dial(context.Background(), srv.Addr(), "localhost", opt)
		if err != nil {
			t.Fatal(err)
		}
		c.Abort()
		if got := warnings(logs, srv.Addr()); len(got) != 1 || got[0] != insecureWarning {
			t.Errorf("warnings %q", got)
		}
		srv.Wait(t)
	})
	t.Run("no TLS, no warning", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting)
		core, logs := observer.New(zapcore.DebugLevel)
		opt := Options{TLS: TLSAuto, InsecureSkipVerify: true, Logger: zap.New(core), DialTimeout: 5 * time.Second}
		c, err := Dial(context.Background(), srv.Addr(), "localhost", opt)
		if err != nil {
			t.Fatal(err)
		}
		c.Abort()
		if got := warnings(logs, srv.Addr()); len(got) != 0 {
			t.Errorf("warnings %q for a plain connection", got)
		}
		srv.Wait(t)
	})
}

// TestServerNameFromCaller: the server name checked is the one Dial is given
// (the login's host), not the address dialled.
func TestServerNameFromCaller(t *testing.T) {
	serverCfg, roots := testinfra.NewTLS(t, "pop.example.net")
	srv := pop3test.NewServer(t, greeting+"S!next\n"+greeting, pop3test.WithImplicitTLS(serverCfg))
	good := &tls.Config{RootCAs: roots}
	c, err := Dial(context.Background(), srv.Addr(), "pop.example.net", tlsOptions(TLSImplicit, good))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c.TLSConnectionState(); st.ServerName != "pop.example.net" {
		t.Errorf("ServerName %q", st.ServerName)
	}
	c.Abort()
	// By address, the certificate (for pop.example.net only) does not fit.
	_, err = Dial(context.Background(), srv.Addr(), "", tlsOptions(TLSImplicit, good))
	wantTLSErr(t, err, "127.0.0.1")
}
