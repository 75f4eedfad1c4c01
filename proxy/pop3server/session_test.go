package pop3server_test

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestRFC1939Session(t *testing.T) {
	be := &fakeBackend{}
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServer(t, pop3server.Options{Backend: be, Logger: zap.New(core)})
	c := dial(t, ts.addr)
	c.Script(fmt.Sprintf(`
		S: +OK POP3 server ready
		C: USER alice
		S: +OK send PASS
		C: PASS secret
		S: +OK maildrop locked and ready
		C: STAT
		S: +OK 3 %[1]d
		C: LIST
		S: +OK *
		S: 1 %[2]d
		S: 2 %[3]d
		S: 3 %[4]d
		S: .
		C: LIST 2
		S: +OK 2 %[3]d
		C: UIDL
		S: +OK *
		S: 1 uid-1
		S: 2 uid-2
		S: 3 uid-3
		S: .
		C: UIDL 3
		S: +OK 3 uid-3
		C: TOP 1 1
		S: +OK *
		S: From: a@example.org
		S: Subject: one
		S:
		S: line 1
		S: .
		C: TOP 1 0
		S: +OK *
		S: From: a@example.org
		S: Subject: one
		S:
		S: .
		C: RETR 1
		S: +OK %[2]d octets
		S: From: a@example.org
		S: Subject: one
		S:
		S: line 1
		S: ..dot line
		S: line 3
		S: .
		C: DELE 1
		S: +OK *
		C: STAT
		S: +OK 2 %[5]d
		C: RSET
		S: +OK*
		C: STAT
		S: +OK 3 %[1]d
		C: DELE 2
		S: +OK *
		C: NOOP
		S: +OK
		C: QUIT
		S: +OK *`,
		len(msg1)+len(msg2)+len(msg3), len(msg1), len(msg2), len(msg3), len(msg2)+len(msg3)))
	c.ExpectClosed()

	s := be.session(t, 0)
	waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
	// The disconnect entry is written after the session is closed.
	waitFor(t, "disconnect entry", func() bool { return logs.FilterMessage("disconnect").Len() > 0 })
	if n := s.updates.Load(); n != 1 {
		t.Errorf("Update called %d times, want 1", n)
	}
	deletes, closes, open, bodyCloses := s.mb.stats()
	if !reflect.DeepEqual(deletes, [][]int{{2}}) {
		t.Errorf("Delete calls = %v, want [[2]]", deletes)
	}
	if closes != 1 || open != 0 || bodyCloses != 3 {
		t.Errorf("mailbox closes = %d, open bodies = %d, body closes = %d; want 1, 0, 3", closes, open, bodyCloses)
	}
	for _, e := range logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), "secret") {
			t.Errorf("password logged: %s %v", e.Message, e.ContextMap())
		}
	}
	if logs.FilterMessage("login").Len() != 1 || logs.FilterMessage("disconnect").Len() != 1 {
		t.Errorf("want one login and one disconnect entry, got %d and %d",
			logs.FilterMessage("login").Len(), logs.FilterMessage("disconnect").Len())
	}
}

// TestLenientInput checks that keywords are case-insensitive, bare LF ends a
// line, and trailing spaces are ignored.
func TestLenientInput(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Send("user alice  \n")
	c.Expect("+OK *")
	c.Send("Pass secret\n")
	c.Expect("+OK *")
	c.Send("stat \r\nlist  2  \nnoop  \r\n")
	c.Expect(fmt.Sprintf("+OK 3 %d", len(msg1)+len(msg2)+len(msg3)))
	c.Expect(fmt.Sprintf("+OK 2 %d", len(msg2)))
	c.Expect("+OK")
}

// TestPasswordWithSpaces checks that PASS takes the rest of the line,
// spaces included (RFC 1939 §7).
func TestPasswordWithSpaces(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: USER alice
		S: +OK *
		C: PASS  my secret 
		S: -ERR [AUTH] authentication failed`)
	be.mu.Lock()
	defer be.mu.Unlock()
	if want := []string{"alice: my secret "}; !reflect.DeepEqual(be.logins, want) {
		t.Errorf("logins = %q, want %q", be.logins, want)
	}
}

func TestDeletedMessages(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Script(fmt.Sprintf(`
		C: DELE 2
		S: +OK *
		C: DELE 2
		S: -ERR message already deleted
		C: LIST 2
		S: -ERR *
		C: RETR 2
		S: -ERR *
		C: TOP 2 0
		S: -ERR *
		C: UIDL 2
		S: -ERR *
		C: LIST 4
		S: -ERR no such message
		C: LIST
		S: +OK *
		S: 1 %[1]d
		S: 3 %[3]d
		S: .
		C: UIDL
		S: +OK *
		S: 1 uid-1
		S: 3 uid-3
		S: .
		C: STAT
		S: +OK 2 %[4]d
		C: RSET
		S: +OK*
		C: LIST 2
		S: +OK 2 %[2]d
		C: DELE 3
		S: +OK *
		C: DELE 1
		S: +OK *
		C: QUIT
		S: +OK *`, len(msg1), len(msg2), len(msg3), len(msg1)+len(msg3)))
	c.ExpectClosed()
	s := be.session(t, 0)
	waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
	if deletes, _, _, _ := s.mb.stats(); !reflect.DeepEqual(deletes, [][]int{{1, 3}}) {
		t.Errorf("Delete calls = %v, want [[1 3]]", deletes)
	}
}

// TestDisconnectWithoutQuit checks that a connection ending without QUIT
// skips UPDATE (RFC 1939 §6) and still closes the session exactly once.
func TestDisconnectWithoutQuit(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Script(`
		C: DELE 1
		S: +OK *`)
	c.Conn.Close()

	s := be.session(t, 0)
	waitFor(t, "session close", func() bool { return s.closes.Load() >= 1 })
	time.Sleep(50 * time.Millisecond)
	if n := s.closes.Load(); n != 1 {
		t.Errorf("Close called %d times, want 1", n)
	}
	if n := s.updates.Load(); n != 0 {
		t.Errorf("Update called %d times, want 0", n)
	}
	if deletes, _, _, _ := s.mb.stats(); len(deletes) != 0 {
		t.Errorf("messages deleted without QUIT: %v", deletes)
	}
}

func TestQuitInAuthorization(t *testing.T) {
	var disconnects sync.WaitGroup
	disconnects.Add(1)
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be, OnDisconnect: func(*pop3server.ConnInfo) { disconnects.Done() }})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: USER alice
		S: +OK *
		C: QUIT
		S: +OK *`)
	c.ExpectClosed()
	disconnects.Wait()
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.sessions) != 0 {
		t.Errorf("%d sessions opened, want none", len(be.sessions))
	}
}

func TestLoginFlow(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: PASS secret
		S: -ERR send USER first
		C: USER alice
		S: +OK *
		C: PASS wrong
		S: -ERR [AUTH] authentication failed
		C: PASS secret
		S: -ERR send USER first
		C: USER alice
		S: +OK *
		C: USER bob
		S: +OK *
		C: PASS secret
		S: +OK *
		C: USER carol
		S: -ERR command not valid in this state
		C: PASS secret
		S: -ERR command not valid in this state
		C: QUIT
		S: +OK *`)
	be.mu.Lock()
	defer be.mu.Unlock()
	if want := []string{"alice:wrong", "bob:secret"}; !reflect.DeepEqual(be.logins, want) {
		t.Errorf("logins = %q, want %q", be.logins, want)
	}
}

// userChecker refuses "mallory" at USER.
type userChecker struct {
	*fakeBackend
	checked []string
	mu      sync.Mutex
}

func (u *userChecker) CheckUser(ctx context.Context, c *pop3server.ConnInfo, name string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.checked = append(u.checked, name)
	if name == "mallory" {
		return &pop3server.Error{Code: "AUTH", Message: "no such route"}
	}
	return nil
}

var _ pop3server.UserChecker = (*userChecker)(nil)

func TestUserChecker(t *testing.T) {
	be := &userChecker{fakeBackend: &fakeBackend{}}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: USER mallory
		S: -ERR [AUTH] no such route
		C: PASS secret
		S: -ERR send USER first
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *`)
	be.mu.Lock()
	defer be.mu.Unlock()
	if want := []string{"mallory", "alice"}; !reflect.DeepEqual(be.checked, want) {
		t.Errorf("CheckUser calls = %q, want %q", be.checked, want)
	}
}

// apopBackend accepts APOP with the shared secret "tanstaaf".
type apopBackend struct {
	*fakeBackend
	mu         sync.Mutex
	timestamps []string
}

func (b *apopBackend) LoginAPOP(ctx context.Context, c *pop3server.ConnInfo, user, timestamp, digest string) (pop3server.Session, error) {
	b.mu.Lock()
	b.timestamps = append(b.timestamps, timestamp)
	b.mu.Unlock()
	want := pop3server.APOPDigest(timestamp, "tanstaaf")
	if subtle.ConstantTimeCompare([]byte(digest), []byte(want)) != 1 {
		return nil, pop3server.ErrAuthFailed
	}
	return b.Login(ctx, c, user, "secret")
}

var _ pop3server.APOPBackend = (*apopBackend)(nil)

func TestAPOPDigest(t *testing.T) {
	// The example of RFC 1939 §7.
	got := pop3server.APOPDigest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf")
	if want := "c4c9334bac560ecc979e58001b3e22fb"; got != want {
		t.Errorf("APOPDigest = %s, want %s", got, want)
	}
}

func TestGreeting(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, Greeting: "hello there"})
		c := dial(t, ts.addr)
		c.Script(`
			S: +OK hello there
			C: APOP alice c4c9334bac560ecc979e58001b3e22fb
			S: -ERR unknown command`)
	})
	t.Run("APOP", func(t *testing.T) {
		be := &apopBackend{fakeBackend: &fakeBackend{}}
		ts := startServer(t, pop3server.Options{Backend: be, Hostname: "pop.example.org"})
		seen := map[string]bool{}
		for i := 0; i < 3; i++ {
			c := dial(t, ts.addr)
			greeting := c.Expect("+OK POP3 server ready <*.*.*@pop.example.org>")
			timestamp := greeting[strings.IndexByte(greeting, '<'):]
			if seen[timestamp] {
				t.Fatalf("timestamp %s repeated; RFC 1939 §7 requires a new one per greeting", timestamp)
			}
			seen[timestamp] = true
			digest := pop3server.APOPDigest(timestamp, "tanstaaf")
			c.Script(`
				C: APOP alice 0123456789abcdef0123456789abcdef
				S: -ERR [AUTH] authentication failed
				C: APOP alice
				S: -ERR syntax error
				C: APOP alice ` + strings.ToUpper(digest) + `
				S: +OK *
				C: APOP alice ` + digest + `
				S: -ERR command not valid in this state
				C: STAT
				S: +OK 3 *`)
		}
		be.mu.Lock()
		defer be.mu.Unlock()
		for _, stamp := range be.timestamps {
			if !seen[stamp] {
				t.Errorf("backend got timestamp %s, which no greeting carried", stamp)
			}
		}
	})
}

func TestOnConnect(t *testing.T) {
	var mu sync.Mutex
	var connected, disconnected []uint64
	ts := startServer(t, pop3server.Options{
		Backend: &fakeBackend{},
		OnConnect: func(c *pop3server.ConnInfo) error {
			mu.Lock()
			defer mu.Unlock()
			if c.Logger == nil || c.RemoteAddr == nil || c.LocalAddr == nil {
				t.Errorf("OnConnect got incomplete ConnInfo %+v", c)
			}
			connected = append(connected, c.ID)
			if len(connected) == 1 {
				return &pop3server.Error{Code: "SYS/TEMP", Message: "too busy"}
			}
			return nil
		},
		OnDisconnect: func(c *pop3server.ConnInfo) {
			mu.Lock()
			defer mu.Unlock()
			disconnected = append(disconnected, c.ID)
		},
	})
	c := dial(t, ts.addr)
	c.Expect("-ERR [SYS/TEMP] too busy")
	c.ExpectClosed()

	c = dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: QUIT
		S: +OK *`)
	c.ExpectClosed()
	waitFor(t, "two disconnects", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(disconnected) == 2
	})
	mu.Lock()
	defer mu.Unlock()
	// The first connection's socket is closed before its OnDisconnect
	// runs, so the second may finish first: compare as sets.
	got := slices.Sorted(slices.Values(disconnected))
	if want := slices.Sorted(slices.Values(connected)); !reflect.DeepEqual(want, got) || connected[0] == connected[1] {
		t.Errorf("connected %v, disconnected %v; want the same two distinct ids", connected, disconnected)
	}
}

// TestQuitReleasesBeforeReply checks that QUIT releases the maildrop before
// the reply (RFC 1939 §6), so an immediate new login finds it unlocked.
func TestQuitReleasesBeforeReply(t *testing.T) {
	for _, tc := range []struct {
		name      string
		updateErr error
		reply     string
	}{
		{"committed", nil, "+OK *"},
		{"update failed", errors.New("disk full"), "-ERR *"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &fakeBackend{configure: func(s *fakeSession) {
				s.updateErr = tc.updateErr
				// Were the reply sent first, it would arrive while Close
				// still sleeps.
				s.slowClose = 200 * time.Millisecond
			}}
			ts := startServer(t, pop3server.Options{Backend: be})
			c := ts.login(t)
			c.Cmd("QUIT", tc.reply)
			if n := be.session(t, 0).closes.Load(); n != 1 {
				t.Fatalf("Session.Close called %d times when the QUIT reply arrived, want 1", n)
			}
			c.ExpectClosed()
		})
	}
}

// gatedBody yields its first piece at once and the rest only when released.
type gatedBody struct {
	first, rest string
	release     chan struct{}
	step        int
}

func (b *gatedBody) Read(p []byte) (int, error) {
	switch b.step {
	case 0:
		b.step++
		return copy(p, b.first), nil
	case 1:
		<-b.release
		b.step++
		return copy(p, b.rest), nil
	}
	return 0, io.EOF
}

func (b *gatedBody) Close() error { return nil }

// TestProgressiveBody checks that the first piece of a Progressive body
// reaches the client while the body still holds back the rest.
func TestProgressiveBody(t *testing.T) {
	body := &gatedBody{first: "X-Scan: in progress\r\n", rest: "Subject: done\r\n\r\nbody\r\n", release: make(chan struct{})}
	be := &fakeBackend{wrap: func(s *fakeSession) pop3server.Session {
		return progressiveSession{fakeSession: s, body: body}
	}}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Send("RETR 1\r\n")
	c.Expect("+OK message follows")
	c.Expect("X-Scan: in progress")
	close(body.release)
	c.Expect("Subject: done")
	c.Expect("")
	c.Expect("body")
	c.Expect(".")
}

type progressiveSession struct {
	*fakeSession
	body *gatedBody
}

func (s progressiveSession) Retr(context.Context, int) (*pop3server.Message, error) {
	return &pop3server.Message{Size: -1, Body: s.body, Progressive: true}, nil
}

// uidSession answers UIDL with fixed unique-ids for messages 1, 2, ...
type uidSession struct {
	*fakeSession
	uids []string
}

func (s uidSession) Uidl(ctx context.Context, msg int) ([]pop3server.MessageInfo, error) {
	var list []pop3server.MessageInfo
	for i, uid := range s.uids {
		list = append(list, pop3server.MessageInfo{Number: i + 1, UID: uid})
	}
	if msg != 0 {
		return list[msg-1 : msg], nil
	}
	return list, nil
}

// TestLongUIDs checks that unique-ids longer than the 70 octets of
// RFC 1939 §7, which some servers send, are relayed, and that only those
// that would break the client's parsing make UIDL fail.
func TestLongUIDs(t *testing.T) {
	long := strings.Repeat("L", 200)
	// The longest allowed: "+OK 999999999 <uid>" CRLF fills 512 octets.
	longest := strings.Repeat("M", 496)
	be := &fakeBackend{wrap: func(s *fakeSession) pop3server.Session {
		return uidSession{fakeSession: s, uids: []string{"uid-1", long, longest}}
	}}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Script(`
		C: UIDL
		S: +OK *
		S: 1 uid-1
		S: 2 ` + long + `
		S: 3 ` + longest + `
		S: .
		C: UIDL 2
		S: +OK 2 ` + long + `
		C: UIDL 3
		S: +OK 3 ` + longest)

	for _, bad := range []string{"", "has space", "tab\there", "ctl\x01", "del\x7f", "nul\x00", "cr\rlf\n", "é", strings.Repeat("N", 497)} {
		be := &fakeBackend{wrap: func(s *fakeSession) pop3server.Session {
			return uidSession{fakeSession: s, uids: []string{"uid-1", bad}}
		}}
		ts := startServer(t, pop3server.Options{Backend: be})
		c := ts.login(t)
		c.Cmd("UIDL", "-ERR [SYS/TEMP] internal error")
		c.Cmd("UIDL 2", "-ERR [SYS/TEMP] internal error")
		c.Cmd("UIDL 1", "+OK 1 uid-1")
	}
}
