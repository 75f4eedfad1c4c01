package main

import (
	"bufio"
	"io"
)

// crlfReader turns bare LFs (those not preceded by CR) into CRLF while
// streaming, as POP3 requires (RFC 1939 §3) for messages that local
// delivery agents store with Unix line endings. CRLFs and bare CRs pass
// unchanged. It holds one read buffer, never the whole message.
type crlfReader struct {
	src    io.ReadCloser
	buf    []byte
	in     []byte // read from src, not yet converted
	prevCR bool   // the last octet handed out was CR
	err    error  // src's error, returned once in is drained
}

func newCRLFReader(src io.ReadCloser) *crlfReader {
	return &crlfReader{src: src, buf: make([]byte, 32*1024)}
}

func (c *crlfReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(c.in) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		var n int
		n, c.err = c.src.Read(c.buf)
		c.in = c.buf[:n]
	}
	n := 0
	for len(c.in) > 0 && n < len(p) {
		b := c.in[0]
		if b == '\n' && !c.prevCR {
			if n+2 > len(p) {
				if n > 0 {
					break // the CRLF goes out whole in the next call
				}
				// p has room for one octet: send the CR now and
				// let prevCR carry the LF through unchanged next time.
				p[0] = '\r'
				c.prevCR = true
				return 1, nil
			}
			p[n] = '\r'
			n++
		}
		p[n] = b
		n++
		c.prevCR = b == '\r'
		c.in = c.in[1:]
	}
	return n, nil
}

func (c *crlfReader) Close() error { return c.src.Close() }

// crlfSize returns the size of r's content with bare LFs counted as CRLF,
// the message size of RFC 1939 §11.
func crlfSize(r io.Reader) (int64, error) {
	br := bufio.NewReaderSize(r, 32*1024)
	var n int64
	prevCR := false
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		n++
		if b == '\n' && !prevCR {
			n++
		}
		prevCR = b == '\r'
	}
}
