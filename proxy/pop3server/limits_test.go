package pop3server_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

func TestWrongState(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be, MaxBadCommands: 100})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	for _, cmd := range []string{"STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL", "UIDL 1"} {
		c.Send(cmd + "\r\n")
		c.Expect("-ERR command not valid in this state")
	}
	c.Script(`
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *`)
	for _, cmd := range []string{"USER alice", "PASS secret", "AUTH PLAIN", "AUTH"} {
		c.Send(cmd + "\r\n")
		c.Expect("-ERR command not valid in this state")
	}
	// Commands the server does not offer here are unknown, not out of state.
	for _, cmd := range []string{"APOP alice c4c9334bac560ecc979e58001b3e22fb", "SHUTDOWN", "STLS"} {
		c.Send(cmd + "\r\n")
		c.Expect("-ERR unknown command")
	}
	c.Script(`
		C: STAT
		S: +OK 3 *`)
}

func TestBadSyntax(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be, MaxBadCommands: 100})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	for _, tc := range []struct{ cmd, want string }{
		{"", "-ERR unknown command"},
		{"FOO", "-ERR unknown command"},
		{"USER", "-ERR syntax error"},
		{"USER   ", "-ERR syntax error"},
		{"QUIT now", "-ERR syntax error"},
		{"CAPA x", "-ERR syntax error"},
		{"USER ali\x00ce", "-ERR invalid characters in command"},
		{"USER ali\rce", "-ERR invalid characters in command"},
	} {
		c.Send(tc.cmd + "\r\n")
		c.Expect(tc.want)
	}
	c.Script(`
		C: USER alice
		S: +OK *
		C: PASS
		S: -ERR syntax error
		C: PASS secret
		S: +OK *`)
	for _, tc := range []struct{ cmd, want string }{
		{"LIST x", "-ERR invalid message number"},
		{"LIST -1", "-ERR invalid message number"},
		{"LIST +1", "-ERR invalid message number"},
		{"LIST 0", "-ERR invalid message number"},
		{"LIST 1.0", "-ERR invalid message number"},
		{"LIST 1234567890", "-ERR invalid message number"},
		{"LIST 1 2", "-ERR syntax error"},
		{"RETR", "-ERR syntax error"},
		{"RETR 99999", "-ERR no such message"},
		{"DELE", "-ERR syntax error"},
		{"DELE 1x", "-ERR invalid message number"},
		{"TOP 1", "-ERR syntax error"},
		{"TOP 1 -1", "-ERR syntax error"},
		{"TOP 1 x", "-ERR syntax error"},
		{"TOP x 1", "-ERR invalid message number"},
		{"TOP 1 1 1", "-ERR syntax error"},
		{"UIDL a", "-ERR invalid message number"},
		{"STAT 1", "-ERR syntax error"},
		{"NOOP x", "-ERR syntax error"},
		{"RSET x", "-ERR syntax error"},
		{"STAT\x00", "-ERR invalid characters in command"},
	} {
		c.Send(tc.cmd + "\r\n")
		c.Expect(tc.want)
	}
	// A huge line count means the whole message (fetchmail's TOP n 99999999).
	c.Script(`
		C: TOP 2 99999999999999999999999999
		S: +OK *
		S: Subject: two
		S:
		S: body
		S: .
		C: STAT
		S: +OK 3 *`)
}

func TestLineLimit(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxLineLength: 300})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Send("USER " + strings.Repeat("a", 300-len("USER \r\n")) + "\r\n")
	c.Expect("+OK *")
	c.Send("USER " + strings.Repeat("a", 301-len("USER \r\n")) + "\r\n")
	c.Expect("-ERR line too long")
}

// TestLongLine checks that a 20 kB line is refused and skipped and that the
// command after it, sent in the same write, still runs.
func TestLongLine(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Send("USER " + strings.Repeat("x", 20000) + "\r\nUSER alice\r\nPASS secret\r\n")
	c.Script(`
		S: -ERR line too long
		S: +OK *
		S: +OK *
		C: STAT
		S: +OK 3 *`)
}

// TestEndlessLine checks that an endless line is discarded only until the
// idle deadline.
func TestEndlessLine(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, AuthTimeout: 300 * time.Millisecond})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		chunk := bytes.Repeat([]byte("x"), 8192)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c.Conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := c.Conn.Write(chunk); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	start := time.Now()
	c.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	got, err := io.ReadAll(c.R)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("got %q, want silent close", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about the 300ms AuthTimeout", d)
	}
}

func TestTooManyBadCommands(t *testing.T) {
	be := &fakeBackend{}
	ts := startServer(t, pop3server.Options{Backend: be, MaxBadCommands: 4})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: FOO
		S: -ERR unknown command
		C: STAT
		S: -ERR command not valid in this state
		C: USER alice
		S: +OK *
		C: PASS wrong
		S: -ERR [AUTH] *
		C: CAPA
		S: +OK *
		S: USER
		S: SASL PLAIN LOGIN
		S: RESP-CODES
		S: PIPELINING
		S: TOP
		S: UIDL
		S: .`)
	c.Send("USER " + strings.Repeat("x", 5000) + "\r\n")
	c.Script(`
		S: -ERR line too long
		C: USER alice
		S: +OK *
		C: BAR
		S: -ERR too many bad commands`)
	c.ExpectClosed()
}

// countingListener counts the writes on its connections.
type countingListener struct {
	net.Listener
	writes atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestPipelining checks that pipelined commands (RFC 2449 §6.6) are
// answered in order, and a batch that arrives at once in one write.
func TestPipelining(t *testing.T) {
	be := &fakeBackend{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	ts := serveOn(t, pop3server.Options{Backend: be}, cl)
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	c.Send("USER alice\r\nPASS secret\r\nCAPA\r\n")
	c.Script(`
		S: +OK *
		S: +OK *
		S: +OK *
		S: USER
		S: SASL PLAIN LOGIN
		S: RESP-CODES
		S: PIPELINING
		S: TOP
		S: UIDL
		S: .`)

	before := cl.writes.Load()
	c.Send("STAT\r\nLIST 1\r\nNOOP\r\nRETR 2\r\nUIDL 3\r\nBOGUS\r\nDELE 3\r\nTOP 2 0\r\nSTAT\r\nNOOP\r\n")
	c.Script(fmt.Sprintf(`
		S: +OK 3 %d
		S: +OK 1 %d
		S: +OK
		S: +OK %d octets
		S: Subject: two
		S:
		S: body
		S: .
		S: +OK 3 uid-3
		S: -ERR unknown command
		S: +OK *
		S: +OK *
		S: Subject: two
		S:
		S: .
		S: +OK 2 %d
		S: +OK`, len(msg1)+len(msg2)+len(msg3), len(msg1), len(msg2), len(msg1)+len(msg2)))
	if n := cl.writes.Load() - before; n > 2 {
		t.Errorf("batch answered in %d writes, want 1 (2 if the batch was split in transit)", n)
	}
	c.Script(`
		C: QUIT
		S: +OK *`)
}

// TestNoopDuringRetr checks that a NOOP sent while a long response is still
// arriving waits its turn and is answered (docs/clients.md, Thunderbird).
func TestNoopDuringRetr(t *testing.T) {
	const lines = 4000
	line := strings.Repeat("y", 998) + "\r\n"
	be := &fakeBackend{configure: func(s *fakeSession) {
		s.retrBody = io.NopCloser(strings.NewReader(strings.Repeat(line, lines)))
	}}
	ts := startServer(t, pop3server.Options{Backend: be})
	c := ts.login(t)
	c.Send("RETR 1\r\n")
	c.Expect("+OK message follows")
	c.Expect(line[:998])
	c.Send("NOOP\r\n")
	got := 1
	for {
		l, err := c.R.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d lines: %v", got, err)
		}
		if l == ".\r\n" {
			break
		}
		if l != line {
			t.Fatalf("line %d = %.100q", got, l)
		}
		got++
	}
	if got != lines {
		t.Errorf("got %d lines, want %d", got, lines)
	}
	c.Expect("+OK")
}

// TestIdleTimeout checks that autologout (RFC 1939 §3) closes without a
// response and without UPDATE.
func TestIdleTimeout(t *testing.T) {
	t.Run("authorization", func(t *testing.T) {
		ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, AuthTimeout: 200 * time.Millisecond})
		c := dial(t, ts.addr)
		c.Expect("+OK *")
		start := time.Now()
		c.ExpectClosed()
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("closed after %v, before the 200ms AuthTimeout", d)
		}
	})
	t.Run("transaction", func(t *testing.T) {
		be := &fakeBackend{}
		ts := startServer(t, pop3server.Options{Backend: be, AuthTimeout: time.Minute, IdleTimeout: 500 * time.Millisecond})
		c := ts.login(t)
		c.Script(`
			C: DELE 1
			S: +OK *`)
		// Each command restarts the timer.
		for i := 0; i < 5; i++ {
			time.Sleep(200 * time.Millisecond)
			c.Script(`
				C: NOOP
				S: +OK`)
		}
		c.ExpectClosed()
		s := be.session(t, 0)
		waitFor(t, "session close", func() bool { return s.closes.Load() == 1 })
		if n := s.updates.Load(); n != 0 {
			t.Errorf("Update called %d times after a timeout, want 0", n)
		}
	})
}

// capaOK sends CAPA and reads its answer, reporting false once the server
// has closed the connection.
func capaOK(c *client) bool {
	c.Conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.Conn, "CAPA\r\n"); err != nil {
		return false
	}
	for {
		line, err := c.ReadLine()
		if err != nil {
			return false
		}
		if line == "." {
			return true
		}
	}
}

// TestAuthTimeoutWholePhase checks that AuthTimeout bounds the whole time
// before login, not each wait for a command, so that a client cannot hold
// a connection without logging in by sending CAPA now and then; and that
// it no longer applies after login.
func TestAuthTimeoutWholePhase(t *testing.T) {
	const timeout = 500 * time.Millisecond
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, AuthTimeout: timeout, IdleTimeout: time.Minute})

	start := time.Now()
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if time.Since(start) > 6*timeout {
			t.Fatalf("still open after %v of CAPA every 100ms, with AuthTimeout %v", time.Since(start), timeout)
		}
		if !capaOK(c) {
			break
		}
	}
	if d := time.Since(start); d < timeout*3/4 || d > 3*timeout {
		t.Errorf("closed after %v, want about the %v AuthTimeout", d, timeout)
	}

	// Logged in, the client stays past AuthTimeout.
	start = time.Now()
	c = ts.login(t)
	for time.Since(start) < 2*timeout {
		<-tick.C
		c.Cmd("NOOP", "+OK")
	}
}

// TestAuthTimeoutBoundsHandshake checks that a TLS handshake before login,
// on the implicit TLS listener or after STLS, ends with the AuthTimeout
// counted from the connection's start when that comes before
// HandshakeTimeout.
func TestAuthTimeoutBoundsHandshake(t *testing.T) {
	p := newTestPKI(t)
	const timeout = 400 * time.Millisecond
	for _, implicit := range []bool{true, false} {
		t.Run(map[bool]string{true: "implicit", false: "STLS"}[implicit], func(t *testing.T) {
			ts := startTLSServer(t, pop3server.Options{Backend: &fakeBackend{}, TLSConfig: p.server,
				AuthTimeout: timeout, HandshakeTimeout: time.Minute}, implicit)
			start := time.Now()
			c := dial(t, ts.addr)
			if !implicit {
				c.Expect("+OK *")
				c.Cmd("STLS", "+OK Begin TLS negotiation")
			}
			if !c.Closed(ioTimeout) {
				t.Fatal("not closed")
			}
			if d := time.Since(start); d < timeout*3/4 || d > 3*timeout {
				t.Errorf("closed after %v, want about the %v AuthTimeout", d, timeout)
			}
		})
	}
}

// TestBadCommandsAfterLogin checks that after login only consecutive bad
// commands count, so a long session with an odd command now and then
// goes on, while a run of them still ends it.
func TestBadCommandsAfterLogin(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxBadCommands: 2})
	c := dial(t, ts.addr)
	c.Script(`
		S: +OK *
		C: FOO
		S: -ERR unknown command
		C: USER alice
		S: +OK *
		C: PASS secret
		S: +OK *`)
	for i := 0; i < 5; i++ {
		c.Script(`
			C: RETR 0
			S: -ERR invalid message number
			C: BOGUS
			S: -ERR unknown command
			C: NOOP
			S: +OK`)
	}
	// A command that fails without being a bad command (the message does
	// not exist) does not start the count over either.
	c.Script(`
		C: RETR 0
		S: -ERR invalid message number
		C: RETR 99
		S: -ERR no such message
		C: LIST x
		S: -ERR invalid message number
		C: DELE 0
		S: -ERR too many bad commands`)
	c.ExpectClosed()
}

// TestBadCommandsBeforeLogin checks that before login every bad command
// counts, however many good ones come between, so a client that never
// logs in cannot go on for ever by interleaving CAPA.
func TestBadCommandsBeforeLogin(t *testing.T) {
	ts := startServer(t, pop3server.Options{Backend: &fakeBackend{}, MaxBadCommands: 3})
	c := dial(t, ts.addr)
	c.Expect("+OK *")
	for i := 0; i < 3; i++ {
		c.Cmd("FOO", "-ERR unknown command")
		if !capaOK(c) {
			t.Fatal("closed early")
		}
		c.Cmd("USER alice", "+OK *")
	}
	c.Cmd("FOO", "-ERR too many bad commands")
	c.ExpectClosed()
}
