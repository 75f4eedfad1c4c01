package pop3server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// errLineTooLong reports a command line over the limit. The line has been
// consumed, so the connection can go on.
var errLineTooLong = errors.New("line too long")

// minReadBuffer holds a batch of pipelined commands even when the line
// limit is small.
const minReadBuffer = 4096

// lineReader never holds more than one buffer of input: an overlong line
// is skipped in buffer-sized pieces, so an endless line costs time (bounded
// by the read deadline), not memory.
type lineReader struct {
	br  *bufio.Reader
	max int // line limit in octets, line terminator included
}

func newLineReader(r io.Reader, limit int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, max(limit, minReadBuffer)), max: limit}
}

// readLine returns the next line without its CRLF or bare LF. The slice is
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

// lineBuffered reports whether the next readLine can return without
// reading from the network.
func (r *lineReader) lineBuffered() bool {
	n := r.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := r.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

func (r *lineReader) buffered() int { return r.br.Buffered() }
