package pop3server_test

import (
	"context"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

func TestMailboxSessionSemantics(t *testing.T) {
	ctx := context.Background()
	mb := &testMailbox{msgs: []string{msg1, msg2, msg3}}
	s := pop3server.NewMailboxSession(mb)

	count, size, err := s.Stat(ctx)
	if err != nil || count != 3 || size != int64(len(msg1)+len(msg2)+len(msg3)) {
		t.Fatalf("Stat = %d, %d, %v", count, size, err)
	}
	if err := s.Dele(ctx, 2); err != nil {
		t.Fatalf("Dele(2) = %v", err)
	}
	var perr *pop3server.Error
	for name, err := range map[string]error{
		"Dele(2)":  s.Dele(ctx, 2),
		"Dele(4)":  s.Dele(ctx, 4),
		"List(2)":  second(s.List(ctx, 2)),
		"Retr(2)":  second(s.Retr(ctx, 2)),
		"Top(2)":   second(s.(pop3server.TopSession).Top(ctx, 2, 0)),
		"Uidl(2)":  second(s.(pop3server.UIDLSession).Uidl(ctx, 2)),
		"Retr(0)":  second(s.Retr(ctx, 0)),
		"Retr(-1)": second(s.Retr(ctx, -1)),
	} {
		if !errors.As(err, &perr) {
			t.Errorf("%s = %v, want an *Error", name, err)
		}
	}
	list, err := s.List(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := numbers(list); !reflect.DeepEqual(got, []int{1, 3}) {
		t.Errorf("List(0) numbers = %v, want [1 3]", got)
	}
	uids, _ := s.(pop3server.UIDLSession).Uidl(ctx, 0)
	if len(uids) != 2 || uids[0].UID != "uid-1" || uids[1].UID != "uid-3" {
		t.Errorf("Uidl(0) = %+v", uids)
	}
	count, size, _ = s.Stat(ctx)
	if count != 2 || size != int64(len(msg1)+len(msg3)) {
		t.Errorf("Stat after DELE = %d, %d", count, size)
	}
	if err := s.Rset(ctx); err != nil {
		t.Fatal(err)
	}
	if count, _, _ = s.Stat(ctx); count != 3 {
		t.Errorf("Stat after RSET = %d messages, want 3", count)
	}

	m, err := s.Retr(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(m.Body)
	m.Body.Close()
	if m.Size != int64(len(msg1)) || string(body) != msg1 {
		t.Errorf("Retr(1) = size %d, body %q", m.Size, body)
	}

	// Update deletes exactly the marked messages, in ascending order.
	s.Dele(ctx, 3)
	s.Dele(ctx, 1)
	if err := s.Update(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	deletes, closes, open, _ := mb.stats()
	if !reflect.DeepEqual(deletes, [][]int{{1, 3}}) || closes != 1 || open != 0 {
		t.Errorf("Delete calls %v, closes %d, open bodies %d; want [[1 3]], 1, 0", deletes, closes, open)
	}
}

func TestMailboxSessionNoDeletions(t *testing.T) {
	mb := &testMailbox{msgs: []string{msg1}}
	s := pop3server.NewMailboxSession(mb)
	if err := s.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if deletes, _, _, _ := mb.stats(); len(deletes) != 0 {
		t.Errorf("Delete called with nothing marked: %v", deletes)
	}
}

func second[T any](_ T, err error) error { return err }

func numbers(list []pop3server.MessageInfo) []int {
	var ns []int
	for _, mi := range list {
		ns = append(ns, mi.Number)
	}
	return ns
}

// TestMailboxSessionUIDL checks that UIDL is offered only when every
// message has a valid unique-id.
func TestMailboxSessionUIDL(t *testing.T) {
	for _, tc := range []struct {
		uids []string
		want bool
	}{
		{[]string{"a", "b"}, true},
		{[]string{}, true},
		{[]string{"a", ""}, false},
		{[]string{"a", "has space"}, false},
		{[]string{"a", "ctl\x7f"}, false},
		{[]string{"a", strings.Repeat("u", 70)}, true},
		// Longer than RFC 1939 §7 allows, as some servers send.
		{[]string{"a", strings.Repeat("u", 71)}, true},
		{[]string{"a", strings.Repeat("u", 496)}, true},
		{[]string{"a", strings.Repeat("u", 497)}, false},
	} {
		msgs := make([]string, len(tc.uids))
		for i := range msgs {
			msgs[i] = msg2
		}
		s := pop3server.NewMailboxSession(&testMailbox{msgs: msgs, uids: tc.uids})
		if _, got := s.(pop3server.UIDLSession); got != tc.want {
			t.Errorf("uids %q: UIDLSession = %v, want %v", tc.uids, got, tc.want)
		}
		if _, ok := s.(pop3server.TopSession); !ok {
			t.Errorf("uids %q: not a TopSession", tc.uids)
		}
	}
}

func TestMailboxSessionTop(t *testing.T) {
	const crlf = "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n.b3\r\n"
	for _, tc := range []struct {
		msg   string
		lines int
		want  string
	}{
		{crlf, 0, "H: 1\r\nH: 2\r\n\r\n"},
		{crlf, 2, "H: 1\r\nH: 2\r\n\r\nb1\r\nb2\r\n"},
		{crlf, 3, crlf},
		{crlf, 99999999, crlf},
		{crlf, math.MaxInt, crlf},
		{"H: 1\nH: 2\n\nb1\nb2\n", 1, "H: 1\nH: 2\n\nb1\n"},
		{"H: 1\r\n", 5, "H: 1\r\n"},
		{"H: 1\r\nH: 2", 0, "H: 1\r\nH: 2"},
		{"\r\nb1\r\nb2\r\n", 1, "\r\nb1\r\n"},
		{"H\r\n\r\nb1\r\nb2", 5, "H\r\n\r\nb1\r\nb2"},
		{"H\r\n\rX\r\n\r\r\n\r\nb1\r\n", 0, "H\r\n\rX\r\n\r\r\n\r\n"},
		{"H\r\n\r\n\r\n\r\nb3\r\n", 2, "H\r\n\r\n\r\n\r\n"},
		{"", 3, ""},
	} {
		for _, oneByte := range []bool{false, true} {
			mb := &testMailbox{msgs: []string{tc.msg}}
			s := pop3server.NewMailboxSession(mb).(pop3server.TopSession)
			m, err := s.Top(context.Background(), 1, tc.lines)
			if err != nil {
				t.Fatal(err)
			}
			r := io.Reader(m.Body)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got, err := io.ReadAll(r)
			m.Body.Close()
			if err != nil || string(got) != tc.want || m.Size >= 0 {
				t.Errorf("Top(%q, %d) one byte %v = %q, %v, size %d; want %q, nil, negative size",
					tc.msg, tc.lines, oneByte, got, err, m.Size, tc.want)
			}
			if _, _, open, _ := mb.stats(); open != 0 {
				t.Errorf("Top(%q, %d): body not closed", tc.msg, tc.lines)
			}
		}
	}
}
