package proxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// observed returns a logger that writes to t and records every entry.
func observed(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core)), logs
}

// logged returns the messages at level with a field containing s.
func logged(logs *observer.ObservedLogs, level zapcore.Level, s string) []string {
	var out []string
	for _, e := range logs.FilterLevelExact(level).All() {
		for _, f := range e.Context {
			if strings.Contains(fieldString(f), s) {
				out = append(out, e.Message)
				break
			}
		}
	}
	return out
}

// fieldString returns a string or error field's text.
func fieldString(f zapcore.Field) string {
	if f.Type == zapcore.ErrorType {
		return f.Interface.(error).Error()
	}
	return f.String
}

func ptr[T any](v T) *T { return &v }

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func overrides(t *testing.T, list ...upstream.Override) *upstream.Overrides {
	t.Helper()
	o, err := upstream.NewOverrides(list)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// loginFails logs in through gw to up and expects the PASS answer.
func loginFails(t *testing.T, gw, up, want string) {
	t.Helper()
	c := pop3servertest.Dial(t, gw)
	c.Script(`
		S: +OK *
		C: USER alice%` + up + `
		S: +OK *
		C: PASS secret
		S: ` + want)
}

const untrustedAnswer = "-ERR [SYS/PERM] upstream certificate not trusted"

// Each login gets the first matching override on top of the defaults:
// here the defaults (implicit TLS, system roots) fit none of the servers.
func TestDestinationOverrides(t *testing.T) {
	serverTLS, roots := testinfra.NewTLS(t, "127.0.0.1")
	quit := loginScript + "C: QUIT\nS: +OK bye\n"
	privateCA := pop3test.NewServer(t, quit, pop3test.WithImplicitTLS(serverTLS))
	plain := pop3test.NewServer(t, quit)
	other := pop3test.NewServer(t, "S: +OK never seen", pop3test.WithImplicitTLS(serverTLS))

	gw := serve(t, proxy.Options{
		Upstream: upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second, TLS: upstream.TLSImplicit},
		Overrides: overrides(t,
			upstream.Override{Match: "127.0.0.1:" + port(t, privateCA.Addr()), RootCAs: roots},
			upstream.Override{Match: "127.0.0.1:" + port(t, plain.Addr()), TLS: ptr(upstream.TLSNone)},
			// Matches the plain server too, but comes second.
			upstream.Override{Match: "127.0.0.1:*", TLS: ptr(upstream.TLSImplicit), InsecureSkipVerify: ptr(false)},
		),
	})
	c := login(t, gw, privateCA.Addr())
	c.Cmd("QUIT", "+OK*")
	privateCA.Wait(t)

	c = login(t, gw, plain.Addr())
	c.Cmd("QUIT", "+OK*")
	plain.Wait(t)

	loginFails(t, gw, other.Addr(), untrustedAnswer)
}

// insecure_skip_verify: still TLS, any certificate, and a warning with the
// upstream's address for every connection; an override can turn it off
// for one destination, or on.
func TestInsecureSkipVerify(t *testing.T) {
	serverTLS, _ := testinfra.NewTLS(t, "pop.example.net") // trusted by nobody, for another name
	quit := loginScript + "C: QUIT\nS: +OK bye\n"
	const warning = "upstream certificate not verified (insecure_skip_verify)"

	t.Run("global", func(t *testing.T) {
		up := pop3test.NewServer(t, quit+"S!next\n"+quit, pop3test.WithImplicitTLS(serverTLS))
		strict := pop3test.NewServer(t, "S: +OK never seen", pop3test.WithImplicitTLS(serverTLS))
		log, logs := observed(t)
		gw := serve(t, proxy.Options{
			Upstream: upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second,
				TLS: upstream.TLSImplicit, InsecureSkipVerify: true},
			Overrides: overrides(t, upstream.Override{Match: strict.Addr(), InsecureSkipVerify: ptr(false)}),
			Logger:    log,
		})
		for i := 1; i <= 2; i++ {
			c := login(t, gw, up.Addr())
			c.Cmd("QUIT", "+OK*")
			if got := logged(logs, zapcore.WarnLevel, up.Addr()); len(got) != i || got[i-1] != warning {
				t.Fatalf("after login %d: warnings %q, want %d of %q", i, got, i, warning)
			}
		}
		up.Wait(t)
		loginFails(t, gw, strict.Addr(), untrustedAnswer)
	})
	t.Run("override", func(t *testing.T) {
		up := pop3test.NewServer(t, quit, pop3test.WithImplicitTLS(serverTLS))
		strict := pop3test.NewServer(t, "S: +OK never seen", pop3test.WithImplicitTLS(serverTLS))
		log, logs := observed(t)
		gw := serve(t, proxy.Options{
			Upstream:  upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second, TLS: upstream.TLSImplicit},
			Overrides: overrides(t, upstream.Override{Match: up.Addr(), InsecureSkipVerify: ptr(true)}),
			Logger:    log,
		})
		c := login(t, gw, up.Addr())
		c.Cmd("QUIT", "+OK*")
		up.Wait(t)
		if got := logged(logs, zapcore.WarnLevel, up.Addr()); len(got) != 1 || got[0] != warning {
			t.Errorf("warnings %q, want one %q", got, warning)
		}
		loginFails(t, gw, strict.Addr(), untrustedAnswer)
		if got := logged(logs, zapcore.WarnLevel, strict.Addr()); len(got) != 1 || got[0] != "upstream unreachable" {
			t.Errorf("warnings for the verified destination %q", got)
		}
	})
}

// The certificate is checked against the host named in the login, not
// against the address connected to.
func TestServerNameFromLogin(t *testing.T) {
	serverTLS, roots := testinfra.NewTLS(t, "localhost") // no IP address in it
	up := pop3test.NewServer(t, loginScript+"C: QUIT\nS: +OK bye\n", pop3test.WithImplicitTLS(serverTLS))
	gw := startGatewayWith(t, upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second,
		TLS: upstream.TLSImplicit, TLSConfig: &tls.Config{RootCAs: roots}})

	c := login(t, gw, "localhost:"+port(t, up.Addr()))
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)

	byAddress := pop3test.NewServer(t, "S: +OK never seen", pop3test.WithImplicitTLS(serverTLS))
	loginFails(t, gw, byAddress.Addr(), untrustedAnswer)
}

const notAllowedAnswer = "-ERR [AUTH] destination not allowed by this proxy"

// With DenyPrivate, a loopback destination is refused, as an address at
// USER and as a name resolving to it at PASS, without a connection; the
// client learns nothing about the address, the log says why.
func TestDenyPrivate(t *testing.T) {
	addr, dialled := noDialListener(t)
	log, logs := observed(t)
	gw := serve(t, proxy.Options{
		Upstream: upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second, DenyPrivate: true},
		Logger:   log,
	})
	c := pop3servertest.Dial(t, gw)
	c.Script(`
		S: +OK *
		C: USER alice%` + addr + `
		S: ` + notAllowedAnswer + `
		C: USER alice%localhost:` + port(t, addr) + `
		S: +OK *
		C: PASS secret
		S: ` + notAllowedAnswer + `
		C: QUIT
		S: +OK *`)
	// Login checks too: SASL logins reach it without USER.
	g := proxy.New(proxy.Options{Separators: "%", Upstream: upstream.Options{DenyPrivate: true}})
	for _, login := range []string{"alice%" + addr, "alice%localhost:" + port(t, addr), "alice%[::ffff:127.0.0.1]:" + port(t, addr)} {
		_, err := g.Login(context.Background(), &pop3server.ConnInfo{Logger: zaptest.NewLogger(t)}, login, "secret")
		var pe *pop3server.Error
		if !errors.As(err, &pe) || pe.Code != "AUTH" || pe.Message != "destination not allowed by this proxy" {
			t.Errorf("Login(%q) = %v, want the [AUTH] refusal", login, err)
		}
	}
	if dialled.Load() {
		t.Fatal("the gateway connected to a private destination")
	}
	// The log has both the destination and the reason.
	for _, dest := range []string{addr, "localhost:" + port(t, addr)} {
		found := false
		for _, e := range logs.All() {
			var hasDest, hasWhy bool
			for _, f := range e.Context {
				hasDest = hasDest || strings.Contains(fieldString(f), dest)
				hasWhy = hasWhy || strings.Contains(fieldString(f), "127.0.0.1 is a loopback address")
			}
			found = found || hasDest && hasWhy
		}
		if !found {
			t.Errorf("no log entry says why %s was refused", dest)
		}
	}
}

func TestDenyPrivateOff(t *testing.T) {
	quit := loginScript + "C: QUIT\nS: +OK bye\n"
	up := pop3test.NewServer(t, quit+"S!next\n"+quit)
	gw := startGateway(t, 5*time.Second)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		c := login(t, gw, host+":"+port(t, up.Addr()))
		c.Cmd("QUIT", "+OK*")
	}
	up.Wait(t)
}

// An IP-style allow pattern admits IP literals only, and the literal that
// matched is the address dialled: 127.0.0.* lets 127.0.0.1 and its
// IPv4-mapped form through to the server listening on 127.0.0.1, and
// refuses names made to look like it, without resolving them.
func TestAllowIPPatternDialsTheLiteral(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+"S!next\n"+loginScript)
	p := port(t, up.Addr())
	allow, err := upstream.NewAllowList([]string{"127.0.0.*:" + p})
	if err != nil {
		t.Fatal(err)
	}
	g := proxy.New(proxy.Options{Separators: "%", Allow: allow,
		Upstream: upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second}})
	conn := &pop3server.ConnInfo{Logger: zaptest.NewLogger(t)}
	for _, host := range []string{"127.0.0.localhost", "127.0.0.1.nip.io", "127.0.0.evil.test"} {
		login := "alice%" + host + ":" + p
		var pe *pop3server.Error
		err := g.CheckUser(context.Background(), conn, login)
		if !errors.As(err, &pe) || pe.Code != "AUTH" {
			// Login would look the name up: not from a test.
			t.Errorf("CheckUser(%q) = %v, want the [AUTH] refusal", login, err)
			continue
		}
		if _, err := g.Login(context.Background(), conn, login, "secret"); !errors.As(err, &pe) || pe.Code != "AUTH" {
			t.Errorf("Login(%q) = %v, want the [AUTH] refusal", login, err)
		}
	}

	for _, host := range []string{"127.0.0.1", "[::ffff:127.0.0.1]"} {
		s, err := g.Login(context.Background(), conn, "alice%"+host+":"+p, "secret")
		if err != nil {
			t.Errorf("Login to %s: %v", host, err)
			continue
		}
		s.Close()
	}
	up.Wait(t) // both logins reached the server on 127.0.0.1, without QUIT
}
