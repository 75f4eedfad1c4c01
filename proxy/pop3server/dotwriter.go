package pop3server

import (
	"bytes"
	"io"
)

var (
	stuffedDot   = []byte{'.'}
	crlf         = []byte("\r\n")
	terminator   = []byte(".\r\n")
	crlfTerminal = []byte("\r\n.\r\n")
	lfDot        = []byte("\n.")
)

// dotWriter writes the data lines of a multi-line response (RFC 1939 §3):
// every line that begins with "." gets one more ".", and Close adds CRLF
// if missing and the terminator. A bare LF ends a line too, so LF-only
// bodies cannot smuggle a terminator past clients that split on LF.
// Everything else passes through byte for byte.
type dotWriter struct {
	w         io.Writer
	stuffed   bool    // the data is stuffed already (Message.Stuffed)
	lineStart bool    // the next byte starts a line
	n         int64   // bytes of data written
	tail      [2]byte // last two bytes of data
}

func newDotWriter(w io.Writer) *dotWriter {
	d := &dotWriter{}
	d.reset(w)
	return d
}

func (d *dotWriter) reset(w io.Writer) {
	*d = dotWriter{w: w, lineStart: true}
}

// Write returns the count of p's bytes, not of the bytes written, as
// io.Writer requires.
func (d *dotWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	written := 0
	if d.stuffed {
		return d.pass(p)
	}
	if d.lineStart && p[0] == '.' {
		if _, err := d.w.Write(stuffedDot); err != nil {
			return 0, err
		}
	}
	rest := p
	for {
		i := bytes.Index(rest, lfDot)
		if i < 0 {
			break
		}
		// The line's own dot starts the next chunk.
		n, err := d.w.Write(rest[:i+1])
		written += n
		if err != nil {
			return written, err
		}
		if _, err := d.w.Write(stuffedDot); err != nil {
			return written, err
		}
		rest = rest[i+1:]
	}
	n, err := d.w.Write(rest)
	written += n
	if err != nil {
		return written, err
	}

	d.n += int64(len(p))
	d.lineStart = p[len(p)-1] == '\n'
	if len(p) >= 2 {
		d.tail = [2]byte{p[len(p)-2], p[len(p)-1]}
	} else {
		d.tail = [2]byte{d.tail[1], p[0]}
	}
	return len(p), nil
}

func (d *dotWriter) pass(p []byte) (int, error) {
	n, err := d.w.Write(p)
	d.n += int64(n)
	if n >= 2 {
		d.tail = [2]byte{p[n-2], p[n-1]}
	} else if n == 1 {
		d.tail = [2]byte{d.tail[1], p[0]}
	}
	return n, err
}

// Close terminates the response, not the underlying writer.
func (d *dotWriter) Close() error {
	if d.n > 0 && d.tail != [2]byte{'\r', '\n'} {
		_, err := d.w.Write(crlfTerminal)
		return err
	}
	_, err := d.w.Write(terminator)
	return err
}
