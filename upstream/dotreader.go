package upstream

import (
	"bufio"
	"bytes"
	"io"
)

// streamBufSize is the streaming reader's buffer; longer lines pass in pieces.
const streamBufSize = 64 << 10

// dotReader unstuffs a multi-line body (RFC 1939 §3) up to ".CRLF" (or ".LF",
// as go-pop3 and most clients accept); other bytes pass as received, since
// scanners and DKIM must see the message as stored. One copy per ReadSlice
// piece, no allocation; only a long line's first piece is at a line start.
type dotReader struct {
	br      *bufio.Reader
	pend    []byte // the rest of the current piece, inside br's buffer
	midLine bool   // the previous piece did not end with '\n'
	err     error  // sticky: io.EOF after the terminator, or the failure
}

// Read returns io.ErrUnexpectedEOF if the input ends before the terminator.
func (d *dotReader) Read(p []byte) (n int, err error) {
	for n < len(p) {
		if len(d.pend) > 0 {
			k := copy(p[n:], d.pend)
			d.pend = d.pend[k:]
			n += k
			continue
		}
		if d.err != nil {
			return n, d.err
		}
		// pend is empty, so br's buffer may be reused now.
		piece, err := d.br.ReadSlice('\n')
		switch err {
		case nil, bufio.ErrBufferFull:
		default:
			d.err = unexpectedEOF(err)
			return n, d.err
		}
		if !d.midLine && len(piece) > 0 && piece[0] == '.' {
			if err == nil && (len(piece) == 2 || len(piece) == 3 && piece[1] == '\r') {
				d.err = io.EOF // ".\n" or ".\r\n"
				return n, d.err
			}
			piece = piece[1:] // byte-stuffed
		}
		d.midLine = err == bufio.ErrBufferFull
		d.pend = piece
	}
	return n, nil
}

// stuffedReader reads a body as sent, dot-stuffing included, in stretches
// between line starts holding ".", and consumes the terminator without
// returning it: dotReader's, so both end a body at the same byte.
type stuffedReader struct {
	br        *bufio.Reader
	lineStart bool  // the next byte starts a line
	err       error // sticky
}

func (r *stuffedReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.err == nil {
		if r.br.Buffered() == 0 {
			if n > 0 {
				break // give what there is before waiting
			}
			if _, err := r.br.Peek(1); err != nil {
				r.err = unexpectedEOF(err)
				break
			}
		}
		// No more than fits in p: searching bytes it cannot take would
		// scan most of a message twice.
		b, _ := r.br.Peek(min(r.br.Buffered(), len(p)-n))
		if r.lineStart && b[0] == '.' {
			if !r.dotLine(b, n > 0) {
				break
			}
			if r.err != nil {
				break
			}
			p[n] = '.'
			n++
			r.br.Discard(1)
			r.lineStart = false
			continue
		}
		// Up to the next line start with a ".", which dotLine decides.
		if i := bytes.Index(b, []byte("\n.")); i >= 0 {
			b = b[:i+1]
		}
		k := copy(p[n:], b)
		r.br.Discard(k)
		n += k
		r.lineStart = p[n-1] == '\n'
	}
	if n > 0 {
		return n, nil
	}
	return 0, r.err
}

// dotLine judges a line starting with "." (b, the buffered bytes): the
// terminator (r.err = io.EOF, consumed) or a stuffed line. It waits for the
// deciding bytes unless the caller has something to return (ready): false.
func (r *stuffedReader) dotLine(b []byte, ready bool) bool {
	if len(b) < 3 {
		if ready {
			return false
		}
		var err error
		if b, err = r.br.Peek(3); err != nil && len(b) < 2 {
			r.err = unexpectedEOF(err)
			return true
		}
	}
	switch {
	case b[1] == '\n':
		r.br.Discard(2)
		r.err = io.EOF
	case len(b) >= 3 && b[1] == '\r' && b[2] == '\n':
		r.br.Discard(3)
		r.err = io.EOF
	case len(b) < 3 && b[1] == '\r':
		r.err = io.ErrUnexpectedEOF
	}
	return true
}
