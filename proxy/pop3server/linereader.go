package pop3server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// errLineTooLong reports a command line longer than the limit. The line has
// been consumed; the connection can go on with the next one.
var errLineTooLong = errors.New("line too long")

// minReadBuffer keeps the read buffer large enough to hold a batch of
// pipelined commands (RFC 2449 §6.6) even when the line limit is small.
const minReadBuffer = 4096

// lineReader reads command lines from a buffered reader without ever
// holding more than one buffer of input: an overlong line is skipped in
// buffer-sized pieces, so an endless line costs time (bounded by the read
// deadline), not memory.
type lineReader struct {
	br  *bufio.Reader
	max int // line limit in octets, line terminator included
}

func newLineReader(r io.Reader, limit int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, max(limit, minReadBuffer)), max: limit}
}

// readLine returns the next line without its terminator (CRLF or bare LF,
// RFC 1939 §3 asks for CRLF but lenient input is the norm). The slice is
// valid until the next call. A partial line at EOF is dropped.
func (r *lineReader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	switch {
	case err == nil:
		if len(line) > r.max {
			return nil, errLineTooLong
		}
	case errors.Is(err, bufio.ErrBufferFull):
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = r.br.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return nil, errLineTooLong
	default:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// lineBuffered reports whether a complete line is already buffered, that is
// whether the next readLine will return without reading from the network.
func (r *lineReader) lineBuffered() bool {
	n := r.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := r.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// buffered returns how many bytes have been read from the connection but
// not yet returned as lines.
func (r *lineReader) buffered() int { return r.br.Buffered() }
