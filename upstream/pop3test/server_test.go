package pop3test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

// recorder captures failures the server reports, so that tests can check
// that a misbehaving client is caught.
type recorder struct {
	*testing.T
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...) }

func (r *recorder) failures() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func connect(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) expect(want string) {
	c.t.Helper()
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c.r, buf); err != nil || string(buf) != want {
		c.t.Fatalf("read %q, %v; want %q", buf, err, want)
	}
}

func TestScriptedSession(t *testing.T) {
	srv := NewServer(t, `
		# a comment
		S: +OK ready
		C: USER alice
		S: +OK
		S:  one leading space kept
		S:
		S!raw "raw\x00bytes"
		S!repeat 3 "ab"
		C:
		S!seq 3 "<%d>"
		S!seq 0 "never%d"
		S: .
		S!next
		S: +OK second
		S!close`)
	c := connect(t, srv.Addr())
	c.expect("+OK ready\r\n")
	c.send("USER alice\r\n")
	c.expect("+OK\r\n one leading space kept\r\n\r\nraw\x00bytesababab")
	c.send("\r\n")
	c.expect("<1><2><3>.\r\n")
	c.c.Close()

	c2 := connect(t, srv.Addr())
	c2.expect("+OK second\r\n")
	if _, err := c2.r.ReadByte(); err != io.EOF {
		t.Errorf("after S!close: %v, want EOF", err)
	}
	srv.Wait(t)
}

func TestSleepEndsWhenClientCloses(t *testing.T) {
	srv := NewServer(t, `
		S: +OK
		S!sleep 1m`)
	c := connect(t, srv.Addr())
	c.expect("+OK\r\n")
	c.c.Close()
	start := time.Now()
	srv.Wait(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Wait took %v", d)
	}
}

func TestMismatchFailsTest(t *testing.T) {
	tests := []struct {
		name, script, send, want string
	}{
		{"wrong command", "S: +OK\nC: USER alice", "USER bob\r\n", `client sent "USER bob", want "USER alice"`},
		{"bare LF", "S: +OK\nC: USER alice", "USER alice\n", "does not end in CRLF"},
		{"data after the script", "S: +OK", "QUIT\r\n", `client sent "QUIT\r\n" after the end of the script`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{T: t}
			srv := NewServer(rec, tt.script)
			c := connect(t, srv.Addr())
			c.expect("+OK\r\n")
			c.send(tt.send)
			srv.Wait(rec)
			if got := rec.failures(); !strings.Contains(got, tt.want) {
				t.Errorf("failures %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWaitReportsUnfinishedScript(t *testing.T) {
	rec := &recorder{T: t}
	srv := NewServer(rec, "S: +OK\nC: QUIT\nS: +OK", WithTimeout(2*time.Second))
	c := connect(t, srv.Addr())
	c.expect("+OK\r\n")
	c.c.Close()
	srv.Wait(rec)
	if got := rec.failures(); !strings.Contains(got, `waiting for "QUIT"`) {
		t.Errorf("failures %q", got)
	}
}

func TestUnexpectedConnection(t *testing.T) {
	rec := &recorder{T: t}
	srv := NewServer(rec, "S: +OK\nS!close")
	for i := 0; i < 2; i++ {
		c := connect(t, srv.Addr())
		c.r.ReadString('\n')
	}
	srv.Close()
	if got := rec.failures(); !strings.Contains(got, "unexpected connection #2") {
		t.Errorf("failures %q", got)
	}
}

func TestStartTLS(t *testing.T) {
	serverCfg, roots := testinfra.NewTLS(t)
	t.Run("ok", func(t *testing.T) {
		srv := NewServer(t, `
			S: +OK
			C: STLS
			S: +OK go ahead
			S!starttls
			C: CAPA
			S: +OK secure`, WithTLS(serverCfg))
		c := connect(t, srv.Addr())
		c.expect("+OK\r\n")
		c.send("STLS\r\n")
		c.expect("+OK go ahead\r\n")
		tc := tls.Client(c.c, &tls.Config{RootCAs: roots, ServerName: "localhost"})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tc, "CAPA\r\n")
		got, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil || got != "+OK secure\r\n" {
			t.Fatalf("got %q, %v", got, err)
		}
		tc.Close()
		srv.Wait(t)
	})
	t.Run("client sends early", func(t *testing.T) {
		rec := &recorder{T: t}
		srv := NewServer(rec, `
			S: +OK
			C: STLS
			S: +OK
			S!starttls`, WithTLS(serverCfg))
		c := connect(t, srv.Addr())
		c.expect("+OK\r\n")
		c.send("STLS\r\nUSER injected\r\n")
		srv.Wait(rec)
		if got := rec.failures(); !strings.Contains(got, "before the TLS handshake") {
			t.Errorf("failures %q", got)
		}
	})
}

func TestImplicitTLS(t *testing.T) {
	serverCfg, roots := testinfra.NewTLS(t, "pop.example.test")
	srv := NewServer(t, "S: +OK tls", WithImplicitTLS(serverCfg))
	c, err := tls.Dial("tcp", srv.Addr(), &tls.Config{RootCAs: roots, ServerName: "pop.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "+OK tls\r\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	c.Close()
	srv.Wait(t)
}

func TestParseScriptErrors(t *testing.T) {
	for _, tt := range []struct{ script, want string }{
		{"", "empty script"},
		{"S: +OK\nS!next", "connection 2 has an empty script"},
		{"X: hello", "does not start with"},
		{"S:hello", "does not start with"},
		{"S!bogus", "unknown directive"},
		{"S!close now", "takes no argument"},
		{"S!sleep soon", "duration"},
		{`S!raw unquoted`, "Go-quoted"},
		{`S!repeat x "a"`, "count"},
		{`S!repeat 3 ""`, "non-empty"},
		{`S!seq 3 "no number"`, "one %d"},
		{`S!seq 3 "%d %d"`, "one %d"},
		{`S!seq -1 "%d"`, "count"},
		{"S!close\nS: +OK", "after S!close"},
		{"S!discard\nC: QUIT", "after S!close or S!discard"},
	} {
		_, err := parseScript(tt.script)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseScript(%q) = %v, want an error about %q", tt.script, err, tt.want)
		}
	}
}

func TestParseScriptSteps(t *testing.T) {
	conns, err := parseScript("S: +OK hi\n\tC: USER a\r\nS!repeat 2 \"x\"\nS!sleep 10ms\nS!next\nS!discard")
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 2 || len(conns[0]) != 4 || len(conns[1]) != 1 {
		t.Fatalf("steps %+v", conns)
	}
	s := conns[0]
	if s[0].op != opSend || s[0].text != "+OK hi" || s[1].op != opExpect || s[1].text != "USER a" ||
		s[2].op != opRaw || string(s[2].data) != "x" || s[2].count != 2 || s[3].op != opSleep || s[3].d != 10*time.Millisecond ||
		conns[1][0].op != opDiscard {
		t.Errorf("steps %+v", conns)
	}
}
