package upstream

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

func dovecotLogin(t *testing.T, d *upstreamtest.Dovecot, opt Options) *Client {
	t.Helper()
	opt.Timeout = 5 * time.Second
	c, err := Dial(context.Background(), d.Addr, "", opt)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Abort() })
	if err := c.Login("alice", "alice-secret"); err != nil {
		t.Fatalf("Login: %v", err)
	}
	return c
}

// LIST and UIDL, read line by line, agree with what a real server stores.
func TestDovecotListing(t *testing.T) {
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{})
	var msgs [][]byte
	for i := range 5 {
		m := fmt.Appendf(nil, "Subject: %d\r\n\r\n%s\r\n", i, make([]byte, 100*i))
		msgs = append(msgs, m)
		d.Deliver(t, "alice", m)
	}
	c := dovecotLogin(t, d, Options{})
	list, err := c.List(0)
	if err != nil || len(list) != len(msgs) {
		t.Fatalf("LIST = %v, %v", list, err)
	}
	for i, mi := range list {
		if want := (MessageInfo{Number: i + 1, Size: upstreamtest.ListSize(msgs[i])}); mi != want {
			t.Errorf("LIST entry %d = %+v, want %+v", i, mi, want)
		}
	}
	uidl, err := c.Uidl(0)
	if err != nil || len(uidl) != len(msgs) {
		t.Fatalf("UIDL = %v, %v", uidl, err)
	}
	hex16 := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for i, mi := range uidl {
		if mi.Number != i+1 || !hex16.MatchString(mi.UID) {
			t.Errorf("UIDL entry %d = %+v", i, mi)
		}
	}
	if one, err := c.Uidl(3); err != nil || len(one) != 1 || one[0] != uidl[2] {
		t.Errorf("UIDL 3 = %v, %v; want %+v", one, err, uidl[2])
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
}

// A mailbox over MaxMessages fails the listing and leaves the server with
// every message, DELE notwithstanding: nothing was committed.
func TestDovecotTooManyMessages(t *testing.T) {
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{})
	for i := range 4 {
		d.Deliver(t, "alice", fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i))
	}
	c := dovecotLogin(t, d, Options{MaxMessages: 2})
	if err := c.Dele(1); err != nil {
		t.Fatal(err)
	}
	// The 3 messages not marked deleted are listed (RFC 1939 §5).
	if _, err := c.List(0); !errors.Is(err, ErrTooManyMessages) || !c.Broken() {
		t.Fatalf("LIST of 3 with MaxMessages 2 = %v (broken %v), want ErrTooManyMessages", err, c.Broken())
	}
	// Dovecot logs the session's end once it has (not) expunged: del=0/4.
	d.WaitLog(t, "del=0/4")
	if n := d.Count(t, "alice"); n != 4 {
		t.Errorf("%d messages left, want all 4", n)
	}
}
