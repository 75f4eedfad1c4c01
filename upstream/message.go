package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Message streams a RETR or TOP body in constant memory, unstuffed, every
// other byte as sent (CRLF, bare LF, bare CR, NUL, 8-bit). It is not safe for
// concurrent use, but Client.Abort may interrupt a blocked Read.
type Message struct {
	// Size is n of "+OK n octets" (RFC 1939 §5 example) or -1: only a claim.
	Size int64

	// Stuffed: the body keeps its dot-stuffing (RetrStuffed).
	Stuffed bool

	c   *Client
	op  string
	dr  dotReader
	sr  stuffedReader
	err error // sticky result
}

// Read returns io.EOF after ".CRLF". An incomplete body or bytes after it break
// the Client: ErrConnection, and io.ErrUnexpectedEOF if the connection ended.
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

// Close before the end breaks the Client, closing the connection without
// QUIT: the rest cannot be skipped reliably. Close always returns nil.
func (m *Message) Close() error {
	if m.err == nil {
		m.err = m.c.fail(m.op, errors.New("message closed before its end"))
	}
	return nil
}

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

// begin returns the +OK line, valid until the next read from c.br.
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
		c.g.endStream()
		return nil, fmt.Errorf("upstream %s: %s: %w", c.addr, op, se)
	}
	return nil, c.fail(op, fmt.Errorf("malformed status line %q", status[:min(len(status), 40)]))
}

// sendLine's line may be a SASL response holding credentials: never log it.
func (c *Client) sendLine(op, line string, kind respKind) ([]byte, error) {
	c.g.expect(kind, 0)
	if err := c.pc.Send(line); err != nil {
		return nil, c.fail(op, err)
	}
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.g, streamBufSize)
	}
	// The guard refuses a status line over statusCap long before this.
	status, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		err = fmt.Errorf("status line longer than %d bytes", streamBufSize)
	}
	if err != nil {
		return nil, c.fail(op, unexpectedEOF(err))
	}
	return status, nil
}

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
