package upstream

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	pop3 "github.com/knadh/go-pop3"
	"go.uber.org/zap"
)

// Client is a session with one upstream POP3 server, created by Dial. Its
// methods must be called from one goroutine at a time (commands are not
// pipelined), except Abort and Broken, which are safe at any time; Abort
// unblocks a command waiting for the server.
type Client struct {
	addr string
	host string
	port int
	opt  Options
	log  *zap.Logger

	raw net.Conn      // the TCP connection; closing it ends everything
	tls *tls.Conn     // nil without TLS
	g   *guardConn    // deadlines and framing, below go-pop3 and br
	pc  *pop3.Conn    // go-pop3 for the single-line commands and CAPA
	br  *bufio.Reader // streaming reader for RETR, TOP, LIST and UIDL, made on first use

	rawGreeting []byte
	greeting    string
	caps        []string
	msg         *Message // open RETR/TOP body
	saslMech    string   // mechanism of an AUTH exchange awaiting AuthResponse

	broken    atomic.Bool
	closed    atomic.Bool
	closeOnce sync.Once
}

// MessageInfo is one entry of a LIST or UIDL answer.
type MessageInfo struct {
	Number int    // message number
	Size   int64  // size in octets from LIST; 0 for UIDL
	UID    string // unique-id from UIDL; "" for LIST
}

// Addr returns the "host:port" the Client was dialled with.
func (c *Client) Addr() string { return c.addr }

// Greeting returns the sanitised text after "+OK"; it may hold an APOP timestamp.
func (c *Client) Greeting() string { return c.greeting }

// TLSConnectionState returns the TLS state, and false for plain text.
func (c *Client) TLSConnectionState() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return c.tls.ConnectionState(), true
}

// Capabilities returns the sanitised lines of the last CAPA response (RFC
// 2449 §5), or nil after -ERR; Login re-reads them, as they may change.
func (c *Client) Capabilities() []string { return slices.Clone(c.caps) }

// HasCapability looks up a capability by its tag, case-insensitively, and
// returns its arguments: "PLAIN LOGIN" for "SASL" on "SASL PLAIN LOGIN".
func (c *Client) HasCapability(name string) (args string, ok bool) {
	for _, line := range c.caps {
		tag, rest, _ := strings.Cut(line, " ")
		if strings.EqualFold(tag, name) {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// Broken reports whether an error, early Message.Close, Quit or Abort broke it.
func (c *Client) Broken() bool { return c.broken.Load() || c.closed.Load() }

// Login uses USER and PASS (RFC 1939 §7), or AUTH PLAIN (RFC 4616) if CAPA
// lacks USER but offers SASL PLAIN, then re-reads CAPA. An empty user, or CR,
// LF or NUL in either argument (RFC 4616 §2 forbids NUL in PLAIN too), is
// ErrBadArgument. Code "IN-USE": right password, locked maildrop (RFC 2449 §8.1.2).
func (c *Client) Login(user, pass string) error {
	if user == "" || strings.ContainsAny(user, "\r\n\x00") {
		return fmt.Errorf("upstream %s: USER: %w: user name empty or containing CR, LF or NUL", c.addr, ErrBadArgument)
	}
	if strings.ContainsAny(pass, "\r\n\x00") {
		return fmt.Errorf("upstream %s: PASS: %w: password containing CR, LF or NUL", c.addr, ErrBadArgument)
	}
	if c.usePlain() {
		return c.loginPlain(user, pass)
	}
	if _, err := c.do(respSingle, "USER", "USER", user); err != nil {
		return err
	}
	if _, err := c.do(respSingle, "PASS", "PASS", pass); err != nil {
		return err
	}
	// The caller's logger names the user already.
	c.log.Debug("upstream login")
	return c.capa()
}

// Stat returns the number and total size of undeleted messages (RFC 1939 §5).
func (c *Client) Stat() (count int, size int64, err error) {
	buf, err := c.do(respSingle, "STAT", "STAT")
	if err != nil {
		return 0, 0, err
	}
	f := bytes.Fields(buf.Bytes())
	if len(f) >= 2 {
		n, ok1 := parseNum(f[0])
		s, ok2 := parseNum(f[1])
		if ok1 && ok2 {
			return int(n), s, nil
		}
	}
	return 0, 0, c.fail("STAT", malformed(buf.Bytes()))
}

// List returns the scan listing of message msg, or of all messages if msg
// is 0 (RFC 1939 §5), at most Options.MaxMessages entries.
func (c *Client) List(msg int) ([]MessageInfo, error) {
	return c.listing("LIST", msg, parseListLine)
}

// Uidl returns the unique-id listing (RFC 1939 §7), like List.
func (c *Client) Uidl(msg int) ([]MessageInfo, error) {
	return c.listing("UIDL", msg, parseUidlLine)
}

// Retr starts retrieving message msg (RFC 1939 §5). The body is streamed:
// read the Message to io.EOF or Close it before the next command.
func (c *Client) Retr(msg int) (*Message, error) {
	if msg < 1 {
		return nil, fmt.Errorf("upstream %s: RETR: %w: message number %d", c.addr, ErrBadArgument, msg)
	}
	return c.stream("RETR "+strconv.Itoa(msg), false)
}

// RetrStuffed is Retr keeping dot-stuffing, without the terminating line:
// relaying the body untouched saves unstuffing and restuffing each line.
func (c *Client) RetrStuffed(msg int) (*Message, error) {
	if msg < 1 {
		return nil, fmt.Errorf("upstream %s: RETR: %w: message number %d", c.addr, ErrBadArgument, msg)
	}
	return c.stream("RETR "+strconv.Itoa(msg), true)
}

// Top is Retr for the header and the first lines lines of the body (RFC 1939 §7).
func (c *Client) Top(msg, lines int) (*Message, error) {
	if msg < 1 || lines < 0 {
		return nil, fmt.Errorf("upstream %s: TOP: %w: message %d, lines %d", c.addr, ErrBadArgument, msg, lines)
	}
	return c.stream("TOP "+strconv.Itoa(msg)+" "+strconv.Itoa(lines), false)
}

// Dele marks message msg deleted (RFC 1939 §5); only Quit commits that.
func (c *Client) Dele(msg int) error {
	if msg < 1 {
		return fmt.Errorf("upstream %s: DELE: %w: message number %d", c.addr, ErrBadArgument, msg)
	}
	_, err := c.do(respSingle, "DELE "+strconv.Itoa(msg), "DELE", msg)
	return err
}

// Rset unmarks all messages marked deleted (RFC 1939 §5).
func (c *Client) Rset() error {
	_, err := c.do(respSingle, "RSET", "RSET")
	return err
}

// Noop sends NOOP, e.g. during a long scan: some servers drop a session idle
// for about a minute (docs/clients.md, Upstream servers).
func (c *Client) Noop() error {
	_, err := c.do(respSingle, "NOOP", "NOOP")
	return err
}

// Quit sends QUIT, which commits the deletions (RFC 1939 §6), and closes the
// connection. A -ERR ("some deleted messages not removed") is a *ServerError;
// after an ErrConnection error nobody knows whether they were committed. With
// a Message open it closes without QUIT, wrapping ErrMessageOpen too.
func (c *Client) Quit() error {
	defer c.close()
	if c.msg != nil {
		return c.fail("QUIT", ErrMessageOpen)
	}
	_, err := c.do(respSingle, "QUIT", "QUIT")
	return err
}

// Abort closes the connection without QUIT, so the server commits nothing
// (RFC 1939 §6); idempotent. A blocked command or Read gets ErrConnection.
func (c *Client) Abort() error {
	c.close()
	return nil
}

func (c *Client) close() {
	c.closed.Store(true)
	c.shut()
}

// shut closes the TCP connection (under TLS too: a close_notify is not
// needed, and the raw close never blocks).
func (c *Client) shut() {
	c.closeOnce.Do(func() { c.raw.Close() })
}

func (c *Client) ready(op string) error {
	if c.Broken() {
		return fmt.Errorf("upstream %s: %s: %w", c.addr, op, connError(errClosed))
	}
	if c.msg != nil {
		return fmt.Errorf("upstream %s: %s: %w", c.addr, op, ErrMessageOpen)
	}
	if c.saslMech != "" {
		return fmt.Errorf("upstream %s: %s: %w", c.addr, op, errSASLPending)
	}
	return nil
}

func (c *Client) fail(op string, err error) error {
	c.broken.Store(true)
	c.msg = nil
	c.saslMech = ""
	c.shut()
	err = fmt.Errorf("upstream %s: %s: %w", c.addr, op, connError(err))
	c.log.Debug("upstream connection broken", zap.Error(err))
	return err
}

// do runs a command via go-pop3; op, for errors and logs, never holds a password.
func (c *Client) do(kind respKind, op, cmd string, args ...any) (*bytes.Buffer, error) {
	return c.doCapped(kind, 0, op, cmd, args...)
}

// doCapped caps at limit (0: MaxResponseBytes). go-pop3 buffers whole: small only.
func (c *Client) doCapped(kind respKind, limit int64, op, cmd string, args ...any) (*bytes.Buffer, error) {
	if err := c.ready(op); err != nil {
		return nil, err
	}
	c.g.expect(kind, limit)
	buf, err := c.pc.Cmd(cmd, kind == respMulti, args...)
	if err := c.outcome(op, err); err != nil {
		return nil, err
	}
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	return buf, nil
}

// outcome judges by the guard's view of the response, not go-pop3's errors.
func (c *Client) outcome(op string, err error) error {
	g := c.g
	if g.violation != nil {
		return c.fail(op, g.violation)
	}
	if !g.complete() {
		if g.ioErr != nil {
			err = g.ioErr
		} else if err == nil {
			err = errors.New("incomplete response")
		}
		return c.fail(op, unexpectedEOF(err))
	}
	if g.ioErr != nil {
		// Answer complete, connection ended (as after -ERR to PASS, RFC 1939 §4).
		c.broken.Store(true)
		c.shut()
	}
	if !g.isOK {
		return fmt.Errorf("upstream %s: %s: %w", c.addr, op, parseServerError(g.status()))
	}
	if err != nil {
		return c.fail(op, err)
	}
	return nil
}

// maxCapaBytes caps CAPA, read before login; real ones are a few hundred
// octets (RFC 2449 §6 lists a dozen capabilities).
const maxCapaBytes = 16 << 10

// capa leaves caps nil on -ERR: CAPA not supported (RFC 2449 §5).
func (c *Client) capa() error {
	c.caps = nil
	buf, err := c.doCapped(respMulti, maxCapaBytes, "CAPA", "CAPA")
	var se *ServerError
	if errors.As(err, &se) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, line := range bytes.Split(buf.Bytes(), []byte("\n")) {
		if s := sanitize(trimEOL(line), maxErrorText); s != "" {
			c.caps = append(c.caps, s)
		}
	}
	return nil
}

func malformed(b []byte) error {
	return fmt.Errorf("malformed response %q", b[:min(len(b), 60)])
}
