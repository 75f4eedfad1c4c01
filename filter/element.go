package filter

import (
	"bufio"
	"io"
	"sync"
)

// headPeek is how much of an element the scanner shows before deciding
// what to do with it: enough for any field name (RFC 5322 §2.1.1 limits a
// line to 998 octets) and for a Subject prefix check.
const headPeek = 1024

// elementScanner walks the header section one element (a line and its
// continuation lines, RFC 5322 §2.2.3) at a time in constant memory. pos
// ends at the empty line that ends the header, or at the end of the message.
type elementScanner struct {
	br  *bufio.Reader
	pos int64
	end bool
}

// brPool: a header edit, a Subject check and a cached decision's header
// hash each scan the header, and a new 16 KiB reader each was most of the
// memory a header-edit chain allocated per message.
var brPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

func newElementScanner(r io.Reader) *elementScanner {
	br := brPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &elementScanner{br: br}
}

// release gives the reader back; the scanner is unusable after it.
func (s *elementScanner) release() { s.br.Reset(nil); brPool.Put(s.br) }

// next reports whether another element starts, and returns its first
// bytes (at most headPeek), valid until finish.
func (s *elementScanner) next() ([]byte, bool, error) {
	if s.end {
		return nil, false, nil
	}
	head, err := s.br.Peek(headPeek)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, false, err
	}
	if len(head) == 0 || head[0] == '\n' || (head[0] == '\r' && len(head) > 1 && head[1] == '\n') {
		s.end = true
		return nil, false, nil
	}
	return head, true, nil
}

// finish writes the current element to w, or drops it when w is nil,
// after skipping its first skip bytes (which the caller wrote itself).
func (s *elementScanner) finish(w io.Writer, skip int) error {
	// Skipped bytes that end a line (a prefixed Subject's first line) leave
	// the reader at the next line, part of this element only if a continuation.
	lineDone := false
	if skip > 0 {
		skipped, err := s.br.Peek(skip)
		if err != nil {
			return err
		}
		lineDone = skipped[len(skipped)-1] == '\n'
		n, err := s.br.Discard(skip)
		s.pos += int64(n)
		if err != nil {
			return err
		}
	}
	for {
		if !lineDone {
			line, err := s.br.ReadSlice('\n')
			s.pos += int64(len(line))
			if w != nil && len(line) > 0 {
				if _, werr := w.Write(line); werr != nil {
					return werr
				}
			}
			switch {
			case err == bufio.ErrBufferFull:
				continue // the rest of a long line
			case err == io.EOF:
				s.end = true
				return nil
			case err != nil:
				return err
			}
		}
		lineDone = false
		next, err := s.br.Peek(1)
		if err == io.EOF {
			s.end = true
			return nil
		}
		if err != nil {
			return err
		}
		if next[0] != ' ' && next[0] != '\t' {
			return nil
		}
	}
}
