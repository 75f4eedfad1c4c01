package pop3server

import (
	"bytes"
	"context"
	"io"
)

// Mailbox is a fixed list of messages, the minimum a simple backend provides.
type Mailbox interface {
	// Messages lists the maildrop as the session opened it; index i is
	// message i+1 and Number is ignored. UID may be empty, which leaves
	// UIDL out (see NewMailboxSession).
	Messages() []MessageInfo
	// Open returns message n (1-based) with CRLF line endings.
	Open(n int) (io.ReadCloser, error)
	// Delete removes messages for good. It is called once on QUIT with the
	// marked messages in ascending order, and not at all if none is marked.
	Delete(numbers []int) error
	// Close releases the mailbox (its lock, say).
	Close() error
}

var errMessageDeleted = &Error{Message: "message already deleted"}

// NewMailboxSession returns a Session with the maildrop semantics of
// RFC 1939 on top of mb: fixed message numbers, deletion marks, RSET, and
// deletion only on QUIT. Messages is called once, now. The session
// implements TopSession, and UIDLSession only if every message has a valid
// unique-id (see MessageInfo.UID).
func NewMailboxSession(mb Mailbox) Session {
	list := mb.Messages()
	s := &mailboxSession{
		mb:      mb,
		msgs:    make([]MessageInfo, len(list)),
		deleted: make([]bool, len(list)),
	}
	uidl := true
	for i, mi := range list {
		mi.Number = i + 1
		s.msgs[i] = mi
		uidl = uidl && validUID(mi.UID)
	}
	if uidl {
		return &mailboxUIDLSession{s}
	}
	return s
}

type mailboxSession struct {
	mb      Mailbox
	msgs    []MessageInfo
	deleted []bool
	closed  bool
}

type mailboxUIDLSession struct{ *mailboxSession }

var (
	_ Session     = (*mailboxSession)(nil)
	_ TopSession  = (*mailboxSession)(nil)
	_ UIDLSession = (*mailboxUIDLSession)(nil)
)

func (s *mailboxSession) check(n int) error {
	if n < 1 || n > len(s.msgs) {
		return ErrNoSuchMessage
	}
	if s.deleted[n-1] {
		return errMessageDeleted
	}
	return nil
}

func (s *mailboxSession) Stat(ctx context.Context) (int, int64, error) {
	count, size := 0, int64(0)
	for i, mi := range s.msgs {
		if !s.deleted[i] {
			count++
			size += mi.Size
		}
	}
	return count, size, nil
}

func (s *mailboxSession) List(ctx context.Context, msg int) ([]MessageInfo, error) {
	if msg != 0 {
		if err := s.check(msg); err != nil {
			return nil, err
		}
		return []MessageInfo{s.msgs[msg-1]}, nil
	}
	list := make([]MessageInfo, 0, len(s.msgs))
	for i, mi := range s.msgs {
		if !s.deleted[i] {
			list = append(list, mi)
		}
	}
	return list, nil
}

func (s *mailboxUIDLSession) Uidl(ctx context.Context, msg int) ([]MessageInfo, error) {
	return s.List(ctx, msg)
}

func (s *mailboxSession) Retr(ctx context.Context, msg int) (*Message, error) {
	if err := s.check(msg); err != nil {
		return nil, err
	}
	body, err := s.mb.Open(msg)
	if err != nil {
		return nil, err
	}
	return &Message{Size: s.msgs[msg-1].Size, Body: body}, nil
}

// Top sends no size: "+OK <size> octets" would be wrong for a part of the
// message.
func (s *mailboxSession) Top(ctx context.Context, msg, lines int) (*Message, error) {
	if err := s.check(msg); err != nil {
		return nil, err
	}
	body, err := s.mb.Open(msg)
	if err != nil {
		return nil, err
	}
	return &Message{Size: -1, Body: NewTopReader(body, lines)}, nil
}

func (s *mailboxSession) Dele(ctx context.Context, msg int) error {
	if err := s.check(msg); err != nil {
		return err
	}
	s.deleted[msg-1] = true
	return nil
}

func (s *mailboxSession) Rset(ctx context.Context) error {
	clear(s.deleted)
	return nil
}

func (s *mailboxSession) Noop(ctx context.Context) error { return nil }

func (s *mailboxSession) Update(ctx context.Context) error {
	var numbers []int
	for i, del := range s.deleted {
		if del {
			numbers = append(numbers, i+1)
		}
	}
	if len(numbers) == 0 {
		return nil
	}
	return s.mb.Delete(numbers)
}

func (s *mailboxSession) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.mb.Close()
}

// NewTopReader returns what TOP sends of the message in r: the header, the
// blank line and the first lines lines of the body. It stops reading r
// there; closing it closes r.
func NewTopReader(r io.ReadCloser, lines int) io.ReadCloser {
	return &topReader{r: r, bodyLines: lines}
}

// topReader takes lines to end in LF, with or without CR, and keeps only
// the state of the current line.
type topReader struct {
	r         io.ReadCloser
	bodyLines int  // body lines still to pass
	inBody    bool // the blank line has been passed
	done      bool
	lineLen   int  // octets of the current line seen so far, LF excluded
	firstByte byte // first octet of the current line
}

func (t *topReader) Read(p []byte) (int, error) {
	if t.done {
		return 0, io.EOF
	}
	n, err := t.r.Read(p)
	if n > 0 {
		if end := t.scan(p[:n]); end >= 0 {
			t.done = true
			return end, nil
		}
	}
	return n, err
}

// scan returns how much of b to pass if the excerpt ends within b, else -1.
func (t *topReader) scan(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			if rest := b[i:]; len(rest) > 0 {
				if t.lineLen == 0 {
					t.firstByte = rest[0]
				}
				t.lineLen += len(rest)
			}
			return -1
		}
		line := b[i : i+j]
		i += j + 1
		first := t.firstByte
		if t.lineLen == 0 && len(line) > 0 {
			first = line[0]
		}
		total := t.lineLen + len(line)
		blank := total == 0 || total == 1 && first == '\r'
		t.lineLen = 0

		if !t.inBody {
			if blank {
				t.inBody = true
				if t.bodyLines == 0 {
					return i
				}
			}
			continue
		}
		t.bodyLines--
		if t.bodyLines <= 0 {
			return i
		}
	}
}

func (t *topReader) Close() error { return t.r.Close() }
