// Package pop3servertest is a scripted POP3 client for tests of any POP3
// server. Every read and write has a deadline, so a broken server fails a
// test in seconds instead of hanging it, and the exchange is logged through
// t.Log with passwords masked, so a failing test shows its transcript.
package pop3servertest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// DefaultTimeout bounds each read and write unless Client.Timeout is set.
const DefaultTimeout = 5 * time.Second

// Client is one scripted POP3 connection.
type Client struct {
	T    testing.TB
	Conn net.Conn
	R    *bufio.Reader
	// Name prefixes the transcript lines, to tell several clients apart.
	Name    string
	Timeout time.Duration
}

// Dial connects to addr; the connection is closed when the test ends. It
// does not read the greeting.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, DefaultTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return New(t, nc)
}

// New is Dial for a connection the test has set up itself.
func New(t testing.TB, nc net.Conn) *Client {
	t.Cleanup(func() { nc.Close() })
	return &Client{T: t, Conn: nc, R: bufio.NewReaderSize(nc, 64<<10)}
}

// DialTLS is Dial with implicit TLS (RFC 8314 §3).
func DialTLS(t testing.TB, addr string, cfg *tls.Config) *Client {
	t.Helper()
	c := Dial(t, addr)
	c.handshake(cfg)
	return c
}

// StartTLS sends STLS (RFC 2595 §4) and runs the TLS handshake. Bytes that
// arrive with the "+OK" fail the test: they would be a response injected
// before TLS.
func (c *Client) StartTLS(cfg *tls.Config) {
	c.T.Helper()
	c.Cmd("STLS", "+OK*")
	if n := c.R.Buffered(); n > 0 {
		c.T.Fatalf("%d bytes received after the STLS response, before TLS", n)
	}
	c.handshake(cfg)
}

func (c *Client) handshake(cfg *tls.Config) {
	c.T.Helper()
	tc := tls.Client(c.Conn, cfg)
	tc.SetDeadline(time.Now().Add(c.timeout()))
	if err := tc.Handshake(); err != nil {
		c.T.Fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.logf("--", fmt.Sprintf("TLS established (%s)", tls.VersionName(st.Version)))
	c.Conn = tc
	c.R = bufio.NewReaderSize(tc, 64<<10)
}

// TLS returns the connection's TLS state, or nil before TLS.
func (c *Client) TLS() *tls.ConnectionState {
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	return &st
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) logf(dir, line string) {
	if len(line) > 100 {
		line = fmt.Sprintf("%s... (%d bytes)", line[:100], len(line))
	}
	if c.Name != "" {
		c.T.Logf("%s %s %s", c.Name, dir, line)
		return
	}
	c.T.Logf("%s %s", dir, line)
}

// Send writes raw bytes and logs each line, credentials masked.
func (c *Client) Send(raw string) {
	c.T.Helper()
	for _, line := range strings.SplitAfter(raw, "\n") {
		if line == "" {
			continue
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) > 5 && strings.EqualFold(line[:5], "PASS ") {
			line = line[:5] + "***"
		}
		// AUTH's initial response carries credentials.
		if f := strings.Fields(line); len(f) == 3 && strings.EqualFold(f[0], "AUTH") {
			line = f[0] + " " + f[1] + " ***"
		}
		c.logf("C:", line)
	}
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout()))
	if _, err := io.WriteString(c.Conn, raw); err != nil {
		c.T.Fatalf("write: %v", err)
	}
}

// ReadLine reads one response line, which must end in CRLF.
func (c *Client) ReadLine() (string, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout()))
	line, err := c.R.ReadString('\n')
	if err != nil {
		if line != "" {
			return line, fmt.Errorf("partial line %q: %w", line, err)
		}
		return "", err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return line, fmt.Errorf("line %q does not end in CRLF", line)
	}
	line = strings.TrimSuffix(line, "\r\n")
	c.logf("S:", line)
	return line, nil
}

// Expect reads a line and matches it against pattern (see Match).
func (c *Client) Expect(pattern string) string {
	c.T.Helper()
	line, err := c.ReadLine()
	if err != nil {
		c.T.Fatalf("reading response for %q: %v", pattern, err)
	}
	if !Match(pattern, line) {
		c.T.Fatalf("got %q, want %q", line, pattern)
	}
	return line
}

// Cmd sends one command line and expects a one-line response.
func (c *Client) Cmd(line, pattern string) string {
	c.T.Helper()
	c.Send(line + "\r\n")
	return c.Expect(pattern)
}

// Script plays a transcript: "C: x" sends x CRLF, "S: p" reads a line that
// must match p. Leading whitespace and empty lines are ignored.
func (c *Client) Script(s string) {
	c.T.Helper()
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimLeft(line, " \t")
		switch {
		case line == "":
		case strings.HasPrefix(line, "C: "):
			c.Send(line[3:] + "\r\n")
		case strings.HasPrefix(line, "S: "), line == "S:":
			c.Expect(strings.TrimPrefix(strings.TrimPrefix(line, "S:"), " "))
		default:
			c.T.Fatalf("bad script line %q", line)
		}
	}
}

// Multi reads the rest of a multi-line response and returns the body with
// the dot-stuffing removed and every other byte as received.
func (c *Client) Multi() []byte {
	c.T.Helper()
	var out bytes.Buffer
	for {
		c.Conn.SetReadDeadline(time.Now().Add(c.timeout()))
		line, err := c.R.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			out.Write(line) // the middle of a long line
			continue
		}
		if err != nil {
			c.T.Fatalf("reading multi-line response: %v (after %d bytes)", err, out.Len())
		}
		atLineStart := out.Len() == 0 || out.Bytes()[out.Len()-1] == '\n'
		if atLineStart && string(line) == ".\r\n" {
			c.logf("S:", fmt.Sprintf("[%d bytes] .", out.Len()))
			return out.Bytes()
		}
		if atLineStart && line[0] == '.' {
			line = line[1:]
		}
		out.Write(line)
	}
}

// Capa sends CAPA and returns the capability lines.
func (c *Client) Capa() []string {
	c.T.Helper()
	c.Send("CAPA\r\n")
	c.Expect("+OK*")
	var caps []string
	for {
		line, err := c.ReadLine()
		if err != nil {
			c.T.Fatalf("reading CAPA: %v", err)
		}
		if line == "." {
			return caps
		}
		caps = append(caps, line)
	}
}

// ExpectClosed checks that the server closes the connection without
// sending anything more.
func (c *Client) ExpectClosed() {
	c.T.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout()))
	rest, err := io.ReadAll(c.R)
	if err != nil {
		c.T.Fatalf("waiting for close: %v (read %q)", err, rest)
	}
	if len(rest) > 0 {
		c.T.Fatalf("got %q before close, want nothing", rest)
	}
}

// Closed reports whether the server closes the connection within d,
// discarding what it sends meanwhile.
func (c *Client) Closed(d time.Duration) bool {
	c.Conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c.R)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Match reports whether s matches pattern, in which "*" stands for any run
// of characters and everything else is literal. (path.Match would treat
// the "[" of response codes as a class and stop "*" at "/".)
func Match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
