package pop3server_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestErrorMapping(t *testing.T) {
	long := strings.Repeat("x", 1000)
	for _, tc := range []struct {
		name string
		err  error
		want string // response pattern
	}{
		{"code", &pop3server.Error{Code: "IN-USE", Message: "locked"}, "-ERR [IN-USE] locked"},
		{"no code", &pop3server.Error{Message: "plain text"}, "-ERR plain text"},
		{"wrapped", fmt.Errorf("upstream: %w", &pop3server.Error{Code: "SYS/PERM", Message: "gone"}), "-ERR [SYS/PERM] gone"},
		{"sentinel", pop3server.ErrTemporary, "-ERR [SYS/TEMP] temporary failure, try again later"},
		{"cause not sent", &pop3server.Error{Message: "refused", Err: errors.New("scanner at 10.0.0.9")}, "-ERR refused"},
		{"invalid code dropped", &pop3server.Error{Code: "BAD CODE]", Message: "m"}, "-ERR m"},
		{"no fake code", &pop3server.Error{Message: "[FAKE code"}, "-ERR FAKE code"},
		{"line breaks stripped", &pop3server.Error{Message: "a\r\nNOOP\x00b"}, "-ERR aNOOPb"},
		{"truncated", &pop3server.Error{Code: "SYS/TEMP", Message: long}, "-ERR [SYS/TEMP] " + long[:512-len("-ERR [SYS/TEMP] \r\n")]},
		{"plain error", errors.New("db password=hunter2"), "-ERR [SYS/TEMP] internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			be := &fakeBackend{configure: func(s *fakeSession) { s.noopErr = tc.err }}
			ts := startServer(t, pop3server.Options{Backend: be, Logger: zap.New(core)})
			c := ts.login(t)
			c.Send("NOOP\r\n")
			c.Expect(tc.want)
			// The session goes on.
			c.Script(`
				C: STAT
				S: +OK 3 *`)

			var entries []observer.LoggedEntry
			for _, e := range logs.All() {
				if strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "hunter2") {
					entries = append(entries, e)
				}
			}
			if tc.name == "plain error" && (len(entries) != 1 || entries[0].Level != zapcore.ErrorLevel) {
				t.Errorf("want the plain error's detail logged once at error level, got %v", entries)
			}
		})
	}
}

// TestErrorDisconnect checks that an *Error with Disconnect ends the
// connection after the response, without UPDATE.
func TestErrorDisconnect(t *testing.T) {
	be := &fakeBackend{configure: func(s *fakeSession) {
		s.noopErr = &pop3server.Error{Code: "SYS/TEMP", Message: "upstream connection lost", Disconnect: true}
	}}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Send("DELE 1\r\nNOOP\r\nQUIT\r\n")
	c.Script(`
		S: +OK *
		S: -ERR [SYS/TEMP] upstream connection lost`)
	c.ExpectClosed()
	s := be.session(t, 0)
	waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
	if n := s.updates.Load(); n != 0 {
		t.Errorf("Update called %d times, want 0", n)
	}
}

func TestUpdateError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("disk full"), "-ERR [SYS/TEMP] some deleted messages not removed"},
		{&pop3server.Error{Code: "SYS/PERM", Message: "maildrop read-only"}, "-ERR [SYS/PERM] maildrop read-only"},
	} {
		be := &fakeBackend{configure: func(s *fakeSession) { s.updateErr = tc.err }}
		ts := startServer(t, pop3server.Options{Backend: be})
		c := ts.login(t)
		c.Script(`
			C: DELE 1
			S: +OK *
			C: QUIT`)
		c.Expect(tc.want)
		c.ExpectClosed()
		s := be.session(t, 0)
		waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
		if n := s.updates.Load(); n != 1 {
			t.Errorf("Update called %d times, want 1", n)
		}
	}
}

func TestLoginError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{pop3server.ErrInUse, "-ERR [IN-USE] maildrop already locked"},
		{errors.New("upstream dial failed"), "-ERR [SYS/TEMP] internal error"},
	} {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{loginErr: tc.err}})
		c := dial(t, ts.addr)
		c.Script(`
			S: +OK *
			C: USER alice
			S: +OK *
			C: PASS secret`)
		c.Expect(tc.want)
		c.Script(`
			C: STAT
			S: -ERR command not valid in this state`)
	}
}

// TestPanicIsolated checks that a panic in one session closes that
// connection only.
func TestPanicIsolated(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	var n atomic.Int32
	be := &fakeBackend{configure: func(s *fakeSession) { s.noopPanic = n.Add(1) == 2 }}
	ts := startServer(t, pop3server.Options{Backend: be, Logger: zap.New(core)})
	good := ts.login(t)
	bad := ts.login(t)
	bad.Send("NOOP\r\n")
	bad.Expect("-ERR [SYS/TEMP] internal error")
	bad.ExpectClosed()
	good.Script(`
		C: NOOP
		S: +OK
		C: QUIT
		S: +OK *`)

	s := be.session(t, 1)
	waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
	if n := s.updates.Load(); n != 0 {
		t.Errorf("Update called %d times, want 0", n)
	}
	panics := logs.FilterMessage("panic while handling command").All()
	if len(panics) != 1 || !strings.Contains(fmt.Sprint(panics[0].ContextMap()["stack"]), "Noop") {
		t.Errorf("want one panic entry with a stack naming Noop, got %v", panics)
	}
}

// failingBody returns some data and then an error.
type failingBody struct {
	data   string
	closes atomic.Int32
}

func (b *failingBody) Read(p []byte) (int, error) {
	if b.data == "" {
		return 0, errors.New("upstream connection reset")
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (b *failingBody) Close() error {
	b.closes.Add(1)
	return nil
}

// TestBodyReadError checks that a body failing after "+OK" leaves the
// response unterminated, so the client cannot take a truncated message
// for a complete one.
func TestBodyReadError(t *testing.T) {
	body := &failingBody{data: "Subject: x\r\n\r\nfirst line\r\n"}
	be := &fakeBackend{configure: func(s *fakeSession) { s.retrBody = body }}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Send("RETR 1\r\n")
	c.Expect("+OK message follows")
	c.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	rest, err := io.ReadAll(c.R)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if want := "Subject: x\r\n\r\nfirst line\r\n"; string(rest) != want {
		t.Errorf("got %q, want %q and no terminator", rest, want)
	}
	s := be.session(t, 0)
	waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
	if n := body.closes.Load(); n != 1 {
		t.Errorf("body closed %d times, want 1", n)
	}
}
