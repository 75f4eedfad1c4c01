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
	// authMax, when above max, limits an AUTH command line and, while sasl
	// is set, a SASL response (see Options.MaxAuthLineLength); readLong
	// assembles such a line outside br.
	authMax int
	sasl    bool
}

func newLineReader(r io.Reader, limit, authLimit int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, max(limit, minReadBuffer)), max: limit, authMax: authLimit}
}

// long reports whether line, a line or its first buffer-full, may be up
// to authMax long.
func (r *lineReader) long(line []byte) bool {
	if r.authMax <= r.max {
		return false
	}
	return r.sasl || len(line) >= len("AUTH ") && bytes.EqualFold(line[:len("AUTH ")], []byte("AUTH "))
}

// readLine returns the next line without its CRLF or bare LF. The slice is
// valid until the next call. A partial line at EOF is dropped.
func (r *lineReader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	switch {
	case err == nil:
		if len(line) > r.max && (len(line) > r.authMax || !r.long(line)) {
			return nil, errLineTooLong
		}
	case errors.Is(err, bufio.ErrBufferFull):
		if r.long(line) {
			if line, err = r.readLong(line); err != nil {
				return nil, err
			}
			break
		}
		return nil, r.skip(err)
	default:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readLong assembles a line of up to authMax octets that began with
// first, a full buffer.
func (r *lineReader) readLong(first []byte) ([]byte, error) {
	if len(first) > r.authMax {
		return nil, r.skip(bufio.ErrBufferFull)
	}
	buf := append(make([]byte, 0, min(2*len(first), r.authMax)), first...)
	for {
		piece, err := r.br.ReadSlice('\n')
		if len(buf)+len(piece) > r.authMax {
			return nil, r.skip(err)
		}
		buf = append(buf, piece...)
		switch {
		case err == nil:
			return buf, nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return nil, err
		}
	}
}

// skip discards the rest of an overlong line; err is the last ReadSlice's.
func (r *lineReader) skip(err error) error {
	for errors.Is(err, bufio.ErrBufferFull) {
		_, err = r.br.ReadSlice('\n')
	}
	if err != nil {
		return err
	}
	return errLineTooLong
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
