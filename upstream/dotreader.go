package upstream

import (
	"bufio"
	"io"
)

// streamBufSize is the buffer of the streaming reader. Message lines
// longer than this are passed on in pieces.
const streamBufSize = 64 << 10

// dotReader reads the body of a multi-line response (RFC 1939 §3): it
// removes one leading "." from every line that has one and ends at ".CRLF"
// (or ".LF", as go-pop3 and most clients accept). Every other byte is passed
// on as received, because scanners and DKIM must see the message as stored.
//
// It copies each ReadSlice piece once and allocates nothing. A line longer
// than the buffer comes in pieces; only the first is at a line start.
type dotReader struct {
	br      *bufio.Reader
	pend    []byte // the rest of the current piece, inside br's buffer
	midLine bool   // the previous piece did not end with '\n'
	err     error  // sticky: io.EOF after the terminator, or the failure
}

// Read returns io.EOF after the terminating line and io.ErrUnexpectedEOF if
// the input ends before it; other errors are returned as they are.
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
