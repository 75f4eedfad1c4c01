package pop3server_test

import (
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// countingObserver records every event it is told of.
type countingObserver struct {
	mu      sync.Mutex
	started int
	ended   map[string]int
	logins  map[string]int // "mechanism/result"
}

func newCountingObserver() *countingObserver {
	return &countingObserver{ended: map[string]int{}, logins: map[string]int{}}
}

func (o *countingObserver) SessionStarted() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started++
}

func (o *countingObserver) SessionEnded(r pop3server.SessionResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended[r.String()]++
}

func (o *countingObserver) Login(m pop3server.LoginMechanism, r pop3server.LoginResult) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.logins[m.String()+"/"+r.String()]++
}

// waitEnded waits until n sessions have ended and returns the counts.
func (o *countingObserver) waitEnded(t *testing.T, n int) (started int, ended, logins map[string]int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d sessions to end", n), func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		total := 0
		for _, v := range o.ended {
			total += v
		}
		return total >= n
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.started, maps.Clone(o.ended), maps.Clone(o.logins)
}

// Every way a session ends reaches the Observer once, with its result, and
// every login decision with its mechanism and result.
func TestObserverSessionsAndLogins(t *testing.T) {
	obs := newCountingObserver()
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{
		Backend:        be,
		Observer:       obs,
		MaxBadCommands: 1,
		IdleTimeout:    300 * time.Millisecond,
	})

	// quit, with a successful USER/PASS login and a failed one before it.
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: USER alice
		S: +OK *
		C: PASS wrong
		S: -ERR [AUTH] *
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *
		C: QUIT
		S: +OK *`)
	// disconnect, after AUTH PLAIN.
	c = dial(t, ts.addr)
	c.Expect("+OK*")
	c.Cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret")), "+OK*")
	c.Conn.Close()
	// timeout, before login.
	c = dial(t, ts.addr)
	c.Expect("+OK*")
	if !c.Closed(5 * time.Second) {
		t.Fatal("idle connection not closed")
	}
	// bad_commands.
	c = dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: FOO
		S: -ERR *
		C: BAR
		S: -ERR too many bad commands`)

	started, ended, logins := obs.waitEnded(t, 4)
	if started != 4 {
		t.Errorf("SessionStarted called %d times, want 4", started)
	}
	if want := map[string]int{"quit": 1, "disconnect": 1, "timeout": 1, "bad_commands": 1}; !maps.Equal(ended, want) {
		t.Errorf("SessionEnded results = %v, want %v", ended, want)
	}
	if want := map[string]int{"user/failed": 1, "user/ok": 1, "plain/ok": 1}; !maps.Equal(logins, want) {
		t.Errorf("Login calls = %v, want %v", logins, want)
	}
}

// A backend that cannot decide is an error, not a failed login; a
// connection over the limit is refused and still ends exactly once.
func TestObserverErrorAndRefused(t *testing.T) {
	obs := newCountingObserver()
	be := &fakeBackend{loginErr: pop3server.ErrTemporary}
	ts := startServer(t, pop3server.Options{Backend: be, Observer: obs, MaxConnections: 1})

	first := dial(t, ts.addr)
	first.Script(`
		S: +OK *
		C: USER alice
		S: +OK *
		C: PASS secret
		S: -ERR [SYS/TEMP] *`)
	over := dial(t, ts.addr)
	over.Expect("-ERR [SYS/TEMP] too many connections")
	started, ended, _ := obs.waitEnded(t, 1)
	if started != 2 || !maps.Equal(ended, map[string]int{"refused": 1}) {
		t.Errorf("started %d, ended %v; want 2 started and the second refused", started, ended)
	}
	first.Cmd("QUIT", "+OK*")
	_, ended, logins := obs.waitEnded(t, 2)
	if !maps.Equal(ended, map[string]int{"refused": 1, "quit": 1}) {
		t.Errorf("ended %v", ended)
	}
	if !maps.Equal(logins, map[string]int{"user/error": 1}) {
		t.Errorf("logins %v, want one user/error", logins)
	}
}

// Every result and mechanism has a name from a closed set, for labels.
func TestObserverLabelValues(t *testing.T) {
	var names []string
	for _, r := range pop3server.SessionResults() {
		names = append(names, r.String())
	}
	if want := []string{"quit", "disconnect", "timeout", "refused", "tls_failed", "bad_commands", "shutdown", "error"}; !slices.Equal(names, want) {
		t.Errorf("SessionResults = %v, want %v", names, want)
	}
	names = nil
	for _, m := range pop3server.LoginMechanisms() {
		names = append(names, m.String())
	}
	if want := []string{"user", "apop", "plain", "login", "xoauth2", "oauthbearer"}; !slices.Equal(names, want) {
		t.Errorf("LoginMechanisms = %v, want %v", names, want)
	}
	names = nil
	for _, r := range pop3server.LoginResults() {
		names = append(names, r.String())
	}
	if want := []string{"ok", "failed", "error"}; !slices.Equal(names, want) {
		t.Errorf("LoginResults = %v, want %v", names, want)
	}
}

// summarySession gives the connection's last log line.
type summarySession struct{ *fakeSession }

func (summarySession) Summary() (string, []zap.Field) {
	return "session summarised", []zap.Field{zap.Int("retrieved", 2)}
}

// A Summarizer's message and fields make the connection's one last line,
// with the reason and the duration; without one the line is "disconnect".
func TestSummarizerMakesLastLine(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	be := &fakeBackend{wrap: func(s *fakeSession) pop3server.Session { return summarySession{s} }}
	ts := startServer(t, pop3server.Options{Backend: be, Logger: zap.New(core)})
	c := ts.login(t)
	c.Cmd("QUIT", "+OK*")
	plain := dial(t, ts.addr)
	plain.Expect("+OK*")
	plain.Cmd("QUIT", "+OK*")

	waitFor(t, "two last lines", func() bool {
		return logs.FilterMessage("session summarised").Len() == 1 && logs.FilterMessage("disconnect").Len() == 1
	})
	e := logs.FilterMessage("session summarised").All()[0]
	fields := e.ContextMap()
	if fields["retrieved"] != int64(2) || fields["reason"] != "QUIT" || fields["user"] != "alice" {
		t.Errorf("summary line fields = %v", fields)
	}
	if _, ok := fields["duration"]; !ok {
		t.Errorf("summary line has no duration: %v", fields)
	}
	for _, e := range logs.All() {
		if e.Message == "disconnect" && e.ContextMap()["user"] != nil {
			t.Errorf("the logged-in connection also logged %q: %v", e.Message, e.ContextMap())
		}
		if strings.Contains(e.Message, "summarised") && e.ContextMap()["conn"] == nil {
			t.Errorf("summary line lacks the connection id: %v", e.ContextMap())
		}
	}
}
