//go:build linux

package chaos

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// pop3Conn is a deliberately small POP3 client: the harness must see the
// bytes exactly as they arrive, and be able to stop reading or hang up at
// any point, which a real client library hides.
type pop3Conn struct {
	c       net.Conn
	r       *bufio.Reader
	timeout time.Duration // for each line
	end     time.Time     // for the whole session; zero for none
	last    string        // the last command sent, for reports
}

// deadline is when the current read or write must be done.
func (p *pop3Conn) deadline() time.Time {
	d := time.Now().Add(p.timeout)
	if !p.end.IsZero() && p.end.Before(d) {
		return p.end
	}
	return d
}

// errIncomplete is a multi-line answer that ended without its
// terminating line: the connection closed or timed out in the middle.
var errIncomplete = errors.New("multi-line answer incomplete")

// dialPOP3 connects from local (an address on loopback, "" for any) and
// reads the greeting.
func dialPOP3(addr, local string, timeout time.Duration) (*pop3Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &pop3Conn{c: c, r: bufio.NewReaderSize(c, 32<<10), timeout: timeout}
	line, err := p.line()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if !strings.HasPrefix(line, "+OK") {
		c.Close()
		return nil, fmt.Errorf("greeting: %q", line)
	}
	return p, nil
}

func (p *pop3Conn) Close() error { return p.c.Close() }

func (p *pop3Conn) line() (string, error) {
	p.c.SetReadDeadline(p.deadline())
	s, err := p.r.ReadString('\n')
	if err != nil {
		return s, err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// send writes a command without reading the answer.
func (p *pop3Conn) send(cmd string) error {
	p.last = cmd
	p.c.SetWriteDeadline(p.deadline())
	_, err := io.WriteString(p.c, cmd+"\r\n")
	return err
}

// cmd sends a command and returns its status line; a "-ERR" answer is an
// error of type *pop3Error.
func (p *pop3Conn) cmd(cmd string) (string, error) {
	if err := p.send(cmd); err != nil {
		return "", err
	}
	line, err := p.line()
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "+OK") {
		return line, &pop3Error{cmd: strings.Fields(cmd)[0], line: line}
	}
	return line, nil
}

type pop3Error struct{ cmd, line string }

func (e *pop3Error) Error() string { return e.cmd + ": " + e.line }

// login logs in with USER and PASS.
func (p *pop3Conn) login(user, pass string) error {
	if _, err := p.cmd("USER " + user); err != nil {
		return err
	}
	_, err := p.cmd("PASS " + pass)
	return err
}

// loginToken logs in with AUTH XOAUTH2 or OAUTHBEARER (RFC 7628), the
// routed login where the user name goes, with the message on the AUTH
// line or, continued, after the server's "+ ".
func (p *pop3Conn) loginToken(mechanism, login, token string, continued bool) error {
	var msg string
	if mechanism == "XOAUTH2" {
		msg = "user=" + login + "\x01auth=Bearer " + token + "\x01\x01"
	} else {
		msg = "n,a=" + login + ",\x01auth=Bearer " + token + "\x01\x01"
	}
	enc := base64.StdEncoding.EncodeToString([]byte(msg))
	if !continued {
		_, err := p.cmd("AUTH " + mechanism + " " + enc)
		return err
	}
	if err := p.send("AUTH " + mechanism); err != nil {
		return err
	}
	if line, err := p.line(); err != nil || !strings.HasPrefix(line, "+") {
		return fmt.Errorf("AUTH %s: %q, %v", mechanism, line, err)
	}
	_, err := p.cmd(enc)
	return err
}

// multi reads the rest of a multi-line answer (RFC 1939 §3) and returns
// it with the byte-stuffing removed, without the terminating line. An
// answer longer than limit is abandoned with an error: the harness bounds
// what a broken answer can cost it, as a real client would.
func (p *pop3Conn) multi(limit int64) ([]byte, error) {
	var out bytes.Buffer
	atStart := true // a line longer than the buffer arrives in pieces
	for {
		p.c.SetReadDeadline(p.deadline())
		line, err := p.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return out.Bytes(), fmt.Errorf("%w after %d bytes: %v", errIncomplete, out.Len(), err)
		}
		if atStart && string(line) == ".\r\n" {
			return out.Bytes(), nil
		}
		if atStart && line[0] == '.' {
			line = line[1:]
		}
		atStart = err == nil
		out.Write(line)
		if int64(out.Len()) > limit {
			return out.Bytes(), fmt.Errorf("%w: longer than %d bytes", errIncomplete, limit)
		}
	}
}

// uidl returns the unique-ids of the maildrop by message number.
func (p *pop3Conn) uidl() (map[int]string, error) {
	if _, err := p.cmd("UIDL"); err != nil {
		return nil, err
	}
	body, err := p.multi(1 << 20)
	if err != nil {
		return nil, err
	}
	ids := map[int]string{}
	for _, line := range strings.Split(strings.TrimRight(string(body), "\r\n"), "\r\n") {
		var n int
		var uid string
		if line == "" {
			continue
		}
		if _, err := fmt.Sscanf(line, "%d %s", &n, &uid); err != nil {
			return nil, fmt.Errorf("UIDL line %q: %w", line, err)
		}
		ids[n] = uid
	}
	return ids, nil
}
