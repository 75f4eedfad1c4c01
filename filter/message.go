package filter

import (
	"bytes"
	"errors"
	"io"
	"sort"
)

// Message is one retrieved message, whole, exactly as the upstream holds
// it (CRLF line ends, dot-stuffing undone). Its bytes may be in memory or
// in a spool file, so read them with Open or ReadAt, as often and from as
// many goroutines as needed, rather than all at once. A Message never
// changes (edits make a new one that shares the bytes they do not touch);
// plugins must not keep it after their call returns.
type Message struct {
	Meta  Meta
	parts []part
	size  int64
}

type part struct {
	r      io.ReaderAt
	off, n int64
	start  int64 // offset of the part within the message
}

// Meta says where a message comes from.
type Meta struct {
	Conn     uint64 // the client connection's id (the logs' conn field); 0 when unknown
	User     string // the user name at the upstream server
	Upstream string // the upstream server's host:port
	Number   int    // the message number in the session
	UID      string // the message's unique-id (UIDL), "" when unknown
}

// NewMessage wraps data, which the caller must not change afterwards.
func NewMessage(data []byte, meta Meta) *Message {
	return NewMessageAt(bytes.NewReader(data), int64(len(data)), meta)
}

// NewMessageAt makes a Message of the first size bytes of r, which must
// not change while the Message is in use (a spool.Buffer, say).
func NewMessageAt(r io.ReaderAt, size int64, meta Meta) *Message {
	m := &Message{Meta: meta}
	m.appendPart(r, 0, size)
	return m
}

func (m *Message) appendPart(r io.ReaderAt, off, n int64) {
	if n <= 0 {
		return
	}
	// A part of a Message is read through the Message's own parts.
	if inner, ok := r.(*Message); ok {
		for _, p := range inner.parts {
			lo, hi := max(p.start, off), min(p.start+p.n, off+n)
			if lo < hi {
				m.appendPart(p.r, p.off+lo-p.start, hi-lo)
			}
		}
		return
	}
	m.parts = append(m.parts, part{r: r, off: off, n: n, start: m.size})
	m.size += n
}

// concatMessages makes one Message of pieces, each a []byte or a
// *Message section (see section).
func concatMessages(meta Meta, pieces ...any) *Message {
	m := &Message{Meta: meta}
	for _, p := range pieces {
		switch p := p.(type) {
		case []byte:
			m.appendPart(bytes.NewReader(p), 0, int64(len(p)))
		case sectionOf:
			m.appendPart(p.m, p.off, p.n)
		}
	}
	return m
}

type sectionOf struct {
	m      *Message
	off, n int64
}

// Size returns the message's size in octets.
func (m *Message) Size() int64 { return m.size }

// Open returns a new reader over the whole message.
func (m *Message) Open() io.Reader { return io.NewSectionReader(m, 0, m.size) }

// ReadAt implements io.ReaderAt.
func (m *Message) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("filter: negative offset")
	}
	if off >= m.size {
		return 0, io.EOF
	}
	i := sort.Search(len(m.parts), func(i int) bool { return m.parts[i].start+m.parts[i].n > off })
	n := 0
	for ; i < len(m.parts) && n < len(p); i++ {
		pt := m.parts[i]
		in := off + int64(n) - pt.start
		want := p[n:]
		if rest := pt.n - in; int64(len(want)) > rest {
			want = want[:rest]
		}
		k, err := pt.r.ReadAt(want, pt.off+in)
		n += k
		if k < len(want) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the source is shorter than the part
			}
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteTo writes the message to w.
func (m *Message) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for _, p := range m.parts {
		n, err := io.Copy(w, io.NewSectionReader(p.r, p.off, p.n))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Bytes reads the whole message into memory; a plugin that can stream should use Open.
func (m *Message) Bytes() ([]byte, error) {
	b := make([]byte, m.size)
	if _, err := m.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}
