package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Message streams the body of one RETR or TOP response in constant memory:
// dot-stuffing removed, every other byte as the server sent it (CRLF, bare
// LF, bare CR, NUL, 8-bit). It is not safe for concurrent use, except that
// Client.Abort may interrupt a blocked Read.
type Message struct {
	// Size is n from a status line "+OK n octets" (RFC 1939 §5 example), or
	// -1. It is the server's claim: the body ends at the terminating line.
	Size int64

	// Stuffed says the body keeps the server's dot-stuffing (RetrStuffed).
	Stuffed bool

	c   *Client
	op  string
	dr  dotReader
	sr  stuffedReader
	err error // sticky result
}

// Read returns io.EOF after the terminating ".CRLF". If the body cannot be
// completed or bytes follow the terminator, the Client is broken and the
// error wraps ErrConnection (and io.ErrUnexpectedEOF if the connection ended).
func (m *Message) Read(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	var n int
	var err error
	if m.Stuffed {
		n, err = m.sr.Read(p)
	} else {
		n, err = m.dr.Read(p)
	}
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF && m.c.br.Buffered() > 0:
		m.err = m.c.fail(m.op, errUnsolicited)
	case err == io.EOF:
		m.c.g.endStream()
		m.c.msg = nil
		m.err = io.EOF
	default:
		m.err = m.c.fail(m.op, err)
	}
	return n, m.err
}

// Close ends the Message. If the body was not read to its end, the Client is
// broken and its connection closed without QUIT: the rest of the body cannot
// be skipped reliably. Close always returns nil.
func (m *Message) Close() error {
	if m.err == nil {
		m.err = m.c.fail(m.op, errors.New("message closed before its end"))
	}
	return nil
}

// stream sends RETR or TOP and reads the status line itself.
func (c *Client) stream(op string, stuffed bool) (*Message, error) {
	status, err := c.begin(op, respStream)
	if err != nil {
		return nil, err
	}
	m := &Message{Size: parseOctets(status), Stuffed: stuffed, c: c, op: op,
		dr: dotReader{br: c.br}, sr: stuffedReader{br: c.br, lineStart: true}}
	c.msg = m
	return m, nil
}

// begin sends a command whose response the streaming reader reads, and
// reads the status line. It returns the +OK line, valid until the next
// read from c.br; a -ERR is a *ServerError and leaves the Client usable.
func (c *Client) begin(op string, kind respKind) ([]byte, error) {
	if err := c.ready(op); err != nil {
		return nil, err
	}
	status, err := c.sendLine(op, op, kind)
	if err != nil {
		return nil, err
	}
	switch classify(trimEOL(status)) {
	case statusOK:
		return status, nil
	case statusErr:
		se := parseServerError(status)
		if c.br.Buffered() > 0 {
			return nil, c.fail(op, errUnsolicited)
		}
		c.g.endStream()
		return nil, fmt.Errorf("upstream %s: %s: %w", c.addr, op, se)
	}
	return nil, c.fail(op, fmt.Errorf("malformed status line %q", status[:min(len(status), 40)]))
}

// sendLine sends line (the command op, or a SASL response, which may hold
// credentials and is never logged) and reads the status line through the
// streaming reader, which the guard expects to carry an answer of kind.
func (c *Client) sendLine(op, line string, kind respKind) ([]byte, error) {
	c.g.expect(kind, 0)
	if err := c.pc.Send(line); err != nil {
		return nil, c.fail(op, err)
	}
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.g, streamBufSize)
	}
	// The guard refuses a status line over statusCap long before the
	// buffer is full.
	status, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		err = fmt.Errorf("status line longer than %d bytes", streamBufSize)
	}
	if err != nil {
		return nil, c.fail(op, unexpectedEOF(err))
	}
	return status, nil
}

// parseOctets returns n from "+OK n octets[ ...]", or -1.
func parseOctets(status []byte) int64 {
	f := bytes.Fields(statusText(trimEOL(status)))
	if len(f) < 2 || len(f[1]) < 5 || !bytes.EqualFold(f[1][:5], []byte("octet")) {
		return -1
	}
	if n, ok := parseNum(f[0]); ok {
		return n
	}
	return -1
}
