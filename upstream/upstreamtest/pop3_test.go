package upstreamtest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

// pop3Client is a deliberately minimal POP3 client: the package under test
// must not be checked with code that shares its assumptions.
type pop3Client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
	// timeout bounds every read and write; 10 s unless a test knows the
	// server is slower on purpose.
	timeout time.Duration
}

func dialPOP3(t *testing.T, addr string) *pop3Client {
	t.Helper()
	return dialPOP3From(t, addr, "127.0.0.1")
}

// dialPOP3From connects from another loopback address. Dovecot delays
// logins from an address after a failed one (auth penalty), so a test that
// fails a login on purpose does it from an address of its own.
func dialPOP3From(t *testing.T, addr, local string) *pop3Client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return newPOP3Client(t, c)
}

func newPOP3Client(t *testing.T, c net.Conn) *pop3Client {
	t.Helper()
	p := &pop3Client{t: t, c: c, r: bufio.NewReader(c), timeout: 10 * time.Second}
	t.Cleanup(func() { c.Close() })
	if line := p.line(); !strings.HasPrefix(line, "+OK") {
		t.Fatalf("greeting %q", line)
	}
	return p
}

// line reads one response line without its CRLF, with a deadline so a
// hung server fails the test instead of the whole run.
func (p *pop3Client) line() string {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(p.timeout))
	s, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read: %v (got %q)", err, s)
	}
	if !strings.HasSuffix(s, "\r\n") {
		p.t.Fatalf("response line %q does not end in CRLF", s)
	}
	return strings.TrimSuffix(s, "\r\n")
}

// send writes a command and returns the status line.
func (p *pop3Client) send(cmd string) string {
	p.t.Helper()
	p.c.SetWriteDeadline(time.Now().Add(p.timeout))
	if _, err := p.c.Write([]byte(cmd + "\r\n")); err != nil {
		p.t.Fatalf("write %q: %v", cmd, err)
	}
	return p.line()
}

// ok sends a command and fails the test unless the answer is +OK.
func (p *pop3Client) ok(cmd string) string {
	p.t.Helper()
	line := p.send(cmd)
	if !strings.HasPrefix(line, "+OK") {
		p.t.Fatalf("%s: %q", cmd, line)
	}
	return line
}

// multi reads the body of a multi-line response up to the terminating
// ".CRLF" line and removes the dot-stuffing (RFC 1939 §3), returning
// exactly the octets the server meant, CRLFs included.
func (p *pop3Client) multi() []byte {
	p.t.Helper()
	var out []byte
	for {
		p.c.SetReadDeadline(time.Now().Add(p.timeout))
		l, err := p.r.ReadBytes('\n')
		if err != nil {
			p.t.Fatalf("read multi-line: %v (got %q)", err, l)
		}
		if bytes.Equal(l, []byte(".\r\n")) {
			return out
		}
		if l[0] == '.' {
			l = l[1:]
		}
		out = append(out, l...)
	}
}

func (p *pop3Client) login(user, pass string) {
	p.t.Helper()
	p.ok("USER " + user)
	p.ok("PASS " + pass)
}

// starttls upgrades the connection after STLS.
func (p *pop3Client) starttls(cfg *tls.Config) {
	p.t.Helper()
	p.ok("STLS")
	if p.r.Buffered() != 0 {
		p.t.Fatalf("%d bytes after the STLS response", p.r.Buffered())
	}
	tc := tls.Client(p.c, cfg)
	tc.SetDeadline(time.Now().Add(p.timeout))
	if err := tc.Handshake(); err != nil {
		p.t.Fatalf("STLS handshake: %v", err)
	}
	p.c = tc
	p.r = bufio.NewReader(tc)
	p.t.Cleanup(func() { tc.Close() })
}
