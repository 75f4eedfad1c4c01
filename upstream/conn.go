package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

type respKind uint8

const (
	respSingle respKind = iota // one status line
	respMulti                  // a status line and, after +OK, lines up to ".CRLF"
	respStream                 // RETR and TOP: the status line, then framed by the caller
	respSASL                   // AUTH and SASL responses: a status line or a "+ " challenge
)

type phase uint8

const (
	phIdle      phase = iota // response complete; any byte is unsolicited
	phStatus                 // in the status line
	phLineStart              // at the start of a line of a multi-line body
	phMid                    // inside a body line
	phDot                    // read "." at the start of a body line
	phDotCR                  // read ".\r" at the start of a body line
	phStream                 // after a respStream status line: not followed
)

// statusCap is the longest status line, CRLF included: twice RFC 1939 §3's
// 512 octets, for servers that overshoot. It is refused at this many bytes
// without a line end, so go-pop3's unbounded bufio.ReadBytes never holds more.
const statusCap = 1024

// guardConn sits between go-pop3 or the streaming reader and the network
// (see the package doc). Its errors are sticky. Only the Client's caller
// uses it; Abort closes the raw connection below it instead.
type guardConn struct {
	net.Conn // raw TCP, or the tls.Conn over it once TLS is up

	timeout     time.Duration
	respTimeout time.Duration // Options.ResponseTimeout
	fixed       time.Time     // dial deadline; zero after Dial
	respEnd     time.Time     // end of the current response's time; zero while dialling
	max         int64         // Options.MaxResponseBytes, 0 for none

	kind  respKind
	limit int64 // cap on the current response while followed: max or less, 0 for none
	ph    phase
	n     int64 // bytes of the current response
	line  [statusCap]byte
	nline int  // bytes of the status line so far
	isOK  bool // the status line was +OK

	violation error // framing failure found here
	ioErr     error // error from the connection below
}

func newGuard(c net.Conn, timeout, respTimeout time.Duration, fixed time.Time, max int64) *guardConn {
	// The first response is the greeting, which nobody asked for.
	return &guardConn{Conn: c, timeout: timeout, respTimeout: respTimeout, fixed: fixed, max: max, limit: max, ph: phStatus}
}

// deadline is the dial deadline while dialling, then Timeout, not past respEnd.
func (g *guardConn) deadline() time.Time {
	if !g.fixed.IsZero() {
		return g.fixed
	}
	d := time.Now().Add(g.timeout)
	if !g.respEnd.IsZero() && g.respEnd.Before(d) {
		return g.respEnd
	}
	return d
}

// expect announces the next response's kind and caps it at limit bytes, or
// at MaxResponseBytes if that is less or limit is 0.
func (g *guardConn) expect(k respKind, limit int64) {
	g.kind, g.limit = k, g.max
	if limit > 0 && (g.limit <= 0 || limit < g.limit) {
		g.limit = limit
	}
}

func (g *guardConn) failed() error {
	if g.violation != nil {
		return g.violation
	}
	return g.ioErr
}

func (g *guardConn) complete() bool { return g.ph == phIdle }

func (g *guardConn) status() []byte { return trimEOL(g.line[:g.nline]) }

func (g *guardConn) endStream() { g.ph = phIdle }

// Write starts a new response: in lock-step POP3 each command gets exactly one.
func (g *guardConn) Write(p []byte) (int, error) {
	if err := g.failed(); err != nil {
		return 0, err
	}
	g.n, g.nline, g.isOK = 0, 0, false
	g.ph = phStatus
	if g.fixed.IsZero() && g.respTimeout > 0 {
		g.respEnd = time.Now().Add(g.respTimeout)
	}
	if err := g.Conn.SetDeadline(g.deadline()); err != nil {
		g.ioErr = err
		return 0, err
	}
	n, err := g.Conn.Write(p)
	if err != nil {
		g.ioErr = err
	}
	return n, err
}

// Read returns a framing violation instead of the data, so go-pop3 never
// parses bytes the guard refused.
func (g *guardConn) Read(p []byte) (int, error) {
	if err := g.failed(); err != nil {
		return 0, err
	}
	// Both deadlines: under TLS a Read may have to write (a TLS 1.3
	// KeyUpdate answer), and the last write deadline may long be past.
	if err := g.Conn.SetDeadline(g.deadline()); err != nil {
		g.ioErr = err
		return 0, err
	}
	if g.followed() {
		p = p[:g.room(len(p))]
	}
	n, err := g.Conn.Read(p)
	if n > 0 && g.ph != phStream {
		if v := g.track(p[:n]); v != nil {
			g.violation = connError(v)
			return 0, g.violation
		}
	}
	if err != nil {
		if !g.respEnd.IsZero() && !time.Now().Before(g.respEnd) && errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w: response not complete within %v (ResponseTimeout)", err, g.respTimeout)
		}
		g.ioErr = err
	}
	return n, err
}

func (g *guardConn) followed() bool { return g.ph != phIdle && g.ph != phStream }

// room is no more than the caps leave, so refusing at a cap never costs
// reading past it. In a followed response track fails before room is 0.
func (g *guardConn) room(want int) int {
	if g.ph == phStatus {
		want = min(want, statusCap-g.nline)
	}
	if g.limit > 0 {
		want = int(min(int64(want), g.limit-g.n))
	}
	return want
}

func (g *guardConn) track(b []byte) error {
	g.n += int64(len(b))
	if err := g.follow(b); err != nil {
		return err
	}
	if g.followed() && g.limit > 0 && g.n >= g.limit {
		return fmt.Errorf("response exceeds %d bytes", g.limit)
	}
	return nil
}

func (g *guardConn) follow(b []byte) error {
	for len(b) > 0 {
		switch g.ph {
		case phIdle:
			return errUnsolicited
		case phStatus:
			i := bytes.IndexByte(b, '\n')
			chunk := b
			if i >= 0 {
				chunk = b[:i+1]
			}
			g.nline += copy(g.line[g.nline:], chunk)
			if i < 0 {
				if !statusPrefixOK(g.line[:g.nline], g.kind) {
					return fmt.Errorf("malformed status line %q", g.line[:min(g.nline, 40)])
				}
				if g.nline >= statusCap {
					return fmt.Errorf("status line longer than %d octets", statusCap)
				}
				return nil
			}
			b = b[i+1:]
			switch classify(g.status()) {
			case statusOK:
				g.isOK = true
				switch g.kind {
				case respSingle, respSASL:
					g.ph = phIdle
				case respMulti:
					g.ph = phLineStart
				case respStream:
					g.ph = phStream
					return nil // the rest is the caller's to frame
				}
			case statusErr:
				g.ph = phIdle
			case statusCont:
				if g.kind != respSASL {
					return fmt.Errorf("malformed status line %q", g.status()[:min(len(g.status()), 40)])
				}
				// A challenge ends this response; the answer starts the next.
				g.ph = phIdle
			default:
				return fmt.Errorf("malformed status line %q", g.status()[:min(len(g.status()), 40)])
			}
		case phLineStart:
			if b[0] != '.' {
				g.ph = phMid
				continue
			}
			g.ph = phDot
			b = b[1:]
		case phDot, phDotCR:
			switch {
			case b[0] == '\n':
				g.ph = phIdle // ".\n" or ".\r\n": the terminator
				b = b[1:]
			case b[0] == '\r' && g.ph == phDot:
				g.ph = phDotCR
				b = b[1:]
			default:
				g.ph = phMid
			}
		case phMid:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return nil
			}
			b = b[i+1:]
			g.ph = phLineStart
		default:
			return nil
		}
	}
	return nil
}

type statusKind uint8

const (
	statusBad statusKind = iota
	statusOK
	statusErr
	statusCont // a SASL challenge
)

// classify accepts exactly RFC 1939 §3's "+OK" or "-ERR", upper case, alone
// or followed by a space and text, and, for SASL only, RFC 5034 §4's "+ " and
// base64 ("+" alone from servers dropping the space of an empty challenge).
func classify(line []byte) statusKind {
	switch {
	case string(line) == "+OK" || bytes.HasPrefix(line, []byte("+OK ")):
		return statusOK
	case string(line) == "-ERR" || bytes.HasPrefix(line, []byte("-ERR ")):
		return statusErr
	case string(line) == "+" || bytes.HasPrefix(line, []byte("+ ")):
		return statusCont
	}
	return statusBad
}

// statusPrefixOK lets garbage be refused before its line ends.
func statusPrefixOK(b []byte, kind respKind) bool {
	prefixes := []string{"+OK ", "+OK\r", "-ERR ", "-ERR\r"}
	if kind == respSASL {
		prefixes = append(prefixes, "+ ", "+\r")
	}
	for _, want := range prefixes {
		n := min(len(b), len(want))
		if string(b[:n]) == want[:n] {
			return true
		}
	}
	return false
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// replayConn replays the greeting go-pop3's NewConn must read again after STLS.
type replayConn struct {
	net.Conn
	pending []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// handOver is go-pop3's Opt.Dialer: it hands over the connection Dial made.
type handOver struct{ c net.Conn }

func (h handOver) Dial(network, address string) (net.Conn, error) { return h.c, nil }
