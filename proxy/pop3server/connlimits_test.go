package pop3server_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Two clients on loopback: 127.0.0.1 and 127.0.0.2.
const (
	ip1 = "127.0.0.1"
	ip2 = "127.0.0.2"
)

func TestConnectionLimits(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var connects atomic.Int32
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{
		Backend:             be,
		Logger:              zap.New(core),
		MaxConnections:      3,
		MaxConnectionsPerIP: 2,
		OnConnect:           func(*pop3server.ConnInfo) error { connects.Add(1); return nil },
	})
	const (
		perIP = "-ERR [SYS/TEMP] too many connections from your address"
		total = "-ERR [SYS/TEMP] too many connections"
	)

	a1 := dialFrom(t, ip1, ts.addr)
	a1.Expect("+OK *")
	a2 := dialFrom(t, ip1, ts.addr)
	a2.Expect("+OK *")
	for i := 0; i < 3; i++ {
		c := dialFrom(t, ip1, ts.addr)
		c.Expect(perIP)
		c.ExpectClosed()
	}
	b1 := dialFrom(t, ip2, ts.addr)
	b1.Expect("+OK *")
	for i := 0; i < 3; i++ {
		c := dialFrom(t, ip2, ts.addr)
		c.Expect(total)
		c.ExpectClosed()
	}
	if n := connects.Load(); n != 3 {
		t.Errorf("OnConnect called %d times, want 3 (refused connections must not get that far)", n)
	}

	// A slot freed is a slot taken again.
	a1.Cmd("QUIT", "+OK *")
	a1.ExpectClosed()
	waitFor(t, "the freed slot", func() bool {
		c := dialFrom(t, ip2, ts.addr)
		line, err := c.ReadLine()
		return err == nil && line != total
	})
	if got := be.loginCalls(); len(got) != 0 {
		t.Errorf("backend called: %q", got)
	}

	// Each limit is logged on its first hit only (per address for the
	// per-address limit), not for every refused connection.
	perIPLogs := logs.FilterMessage("connection refused: too many connections from one address")
	if perIPLogs.Len() != 1 {
		t.Errorf("per-address limit logged %d times, want once", perIPLogs.Len())
	}
	totalLogs := logs.FilterMessage("connection refused: too many connections")
	if totalLogs.Len() != 1 {
		t.Errorf("total limit logged %d times, want once", totalLogs.Len())
	}
	for _, e := range append(perIPLogs.All(), totalLogs.All()...) {
		if e.Level != zapcore.WarnLevel || e.ContextMap()["limit"] == nil {
			t.Errorf("limit log %q at %v with %v, want a warning naming the limit", e.Message, e.Level, e.ContextMap())
		}
	}
	if n := logs.FilterMessage("connect").Len(); n < 3 || n > 4 {
		t.Errorf("%d connect entries, want one per accepted connection", n)
	}
}

// TestConnectionLimitLogPerAddress checks that the first refusal of a
// second address is logged too.
func TestConnectionLimitLogPerAddress(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, Logger: zap.New(core), MaxConnectionsPerIP: 1})
	for _, ip := range []string{ip1, ip2} {
		keep := dialFrom(t, ip, ts.addr)
		keep.Expect("+OK *")
		for i := 0; i < 4; i++ {
			c := dialFrom(t, ip, ts.addr)
			c.Expect("-ERR [SYS/TEMP] too many connections from your address")
		}
	}
	if n := logs.FilterMessage("connection refused: too many connections from one address").Len(); n != 2 {
		t.Errorf("per-address limit logged %d times, want once per address (2)", n)
	}
}

func TestUnlimitedConnections(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxConnections: -1, MaxConnectionsPerIP: -1})
	for i := 0; i < pop3server.DefaultMaxConnectionsPerIP+5; i++ {
		c := dial(t, ts.addr)
		c.Expect("+OK *")
	}
}

// failLogin returns how long the answer to a failed PASS or AUTH took.
func failLogin(t *testing.T, c *client, auth bool) time.Duration {
	t.Helper()
	start := time.Now()
	if auth {
		c.Send("AUTH PLAIN " + b64("\x00alice\x00wrong") + "\r\n")
	} else {
		c.Send("PASS wrong\r\n")
	}
	c.Expect("-ERR [AUTH] *")
	d := time.Since(start)
	c.Cmd("USER alice", "+OK *")
	return d
}

// TestFailedLoginDelay checks that the delay doubles per failure from one
// address, across connections and for PASS and AUTH alike, up to the cap.
func TestFailedLoginDelay(t *testing.T) {
	const (
		base = 100 * time.Millisecond
		cap  = 400 * time.Millisecond
	)
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServer(t, pop3server.Options{
		Backend: &fakeBackend{}, Logger: zap.New(core),
		FailedLoginDelay: base, MaxFailedLoginDelay: cap, MaxBadCommands: 100,
	})
	newClient := func(ip string) *client {
		c := dialFrom(t, ip, ts.addr)
		c.Expect("+OK *")
		c.Cmd("USER alice", "+OK *")
		return c
	}
	c1, c2 := newClient(ip1), newClient(ip1)

	nominal := []time.Duration{base, 2 * base, cap, cap, cap}
	var got []time.Duration
	for i := range nominal {
		got = append(got, failLogin(t, []*client{c1, c2}[i%2], i%3 == 1))
	}
	t.Logf("delays %v", got)
	for i, d := range got {
		if d < nominal[i] {
			t.Errorf("failure %d answered after %v, want at least %v", i+1, d, nominal[i])
		}
		if i > 0 && d < got[i-1]-base/2 {
			t.Errorf("failure %d answered after %v, faster than failure %d (%v)", i+1, d, i, got[i-1])
		}
	}
	// Doubling without the cap would make the fifth failure wait 1.6s.
	if got[4] >= 2*cap {
		t.Errorf("fifth failure answered after %v, want the %v cap", got[4], cap)
	}
	if n := logs.FilterMessage("failed-login delay at its maximum").Len(); n != 1 {
		t.Errorf("delay cap logged %d times, want once", n)
	}

	// Another address starts from the beginning.
	other := newClient(ip2)
	if d := failLogin(t, other, false); d >= 2*base {
		t.Errorf("first failure from %s answered after %v, want about %v", ip2, d, base)
	}

	// A success resets the address's delay.
	c1.Cmd("PASS secret", "+OK *")
	c3 := newClient(ip1)
	if d := failLogin(t, c3, false); d < base || d >= 2*base {
		t.Errorf("failure after a success answered after %v, want about %v", d, base)
	}
}

// TestFailedLoginDelayInterrupted checks that Close and Shutdown cut the
// delay short.
func TestFailedLoginDelayInterrupted(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			be := &fakeBackend{}
			ts := startServer(t, pop3server.Options{Backend: be, FailedLoginDelay: time.Minute, MaxFailedLoginDelay: time.Minute})
			c := dial(t, ts.addr)
			c.Script(`
				S: +OK *
				C: USER alice
				S: +OK *
				C: PASS wrong`)
			waitFor(t, "the login attempt", func() bool { return len(be.loginCalls()) == 1 })
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			if how == "Close" {
				ts.Close()
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				defer cancel()
				if err := ts.Shutdown(ctx); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			}
			if !c.Closed(ioTimeout) {
				t.Fatal("connection not closed")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("closed %v after %s, want at once", d, how)
			}
		})
	}
}

func TestLimitOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    pop3server.Options
		wantErr string
	}{
		{"cap below delay", pop3server.Options{FailedLoginDelay: time.Minute}, "MaxFailedLoginDelay 30s is below FailedLoginDelay 1m0s"},
		{"negative cap", pop3server.Options{MaxFailedLoginDelay: -1}, "MaxFailedLoginDelay must not be negative"},
		{"no delay", pop3server.Options{FailedLoginDelay: -1}, ""},
		{"unlimited", pop3server.Options{MaxConnections: -1, MaxConnectionsPerIP: -1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Backend = &fakeBackend{}
			_, err := pop3server.NewServer(tc.opts)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("NewServer = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestFailedLoginDelayOnlyForCredentials checks that [IN-USE] and
// [SYS/TEMP], which say nothing about the password, are not delayed.
func TestFailedLoginDelayOnlyForCredentials(t *testing.T) {
	const delay = 500 * time.Millisecond
	for _, tc := range []struct {
		name    string
		err     error
		delayed bool
	}{
		{"wrong password", pop3server.ErrAuthFailed, true},
		{"in use", pop3server.ErrInUse, false},
		{"upstream down", pop3server.ErrTemporary, false},
		{"internal error", errors.New("database gone"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, pop3server.Options{Backend: &fakeBackend{loginErr: tc.err},
				FailedLoginDelay: delay, MaxFailedLoginDelay: delay})
			c := dial(t, ts.addr)
			c.Expect("+OK *")
			c.Cmd("USER alice", "+OK*")
			start := time.Now()
			c.Cmd("PASS secret", "-ERR*")
			if got := time.Since(start) >= delay; got != tc.delayed {
				t.Errorf("answer took %v; delayed = %v, want %v", time.Since(start), got, tc.delayed)
			}
		})
	}
}
