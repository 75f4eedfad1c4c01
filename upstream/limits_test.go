package upstream

import (
	"context"
	"errors"
	"net"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// countingConn counts the bytes the Client reads from the network.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// counting returns a context that makes Dial count into n the bytes the
// Client reads.
func counting(n *atomic.Int64) context.Context {
	return context.WithValue(context.Background(), connWrapperKey{},
		func(c net.Conn) net.Conn { return countingConn{Conn: c, n: n} })
}

// flood is 10 MB without a line end: far more than any cap, so a client
// that reads it all is caught.
const flood = `S!repeat 1000000 "AAAAAAAAAA"` + "\n"

// A status line may not exceed 1024 octets (twice RFC 1939 §3's 512): the
// guard refuses it once it has read that much without a line end, whatever
// go-pop3 or the streaming reader would buffer. Every case reads at most
// 1024 bytes of it.
func TestStatusLineCap(t *testing.T) {
	const dialTimeout = 3 * time.Second
	t.Run("greeting", func(t *testing.T) {
		srv := pop3test.NewServer(t, `S!raw "+OK "`+"\n"+flood)
		var n atomic.Int64
		start := time.Now()
		_, err := Dial(counting(&n), srv.Addr(), "", Options{DialTimeout: dialTimeout})
		took := time.Since(start)
		if !errors.Is(err, ErrConnection) || !strings.Contains(err.Error(), "status line longer than 1024") {
			t.Errorf("Dial = %v, want ErrConnection naming the 1024-octet limit", err)
		}
		if took > dialTimeout/3 {
			t.Errorf("Dial failed after %v, want at once", took)
		}
		if got := n.Load(); got > statusCap {
			t.Errorf("read %d bytes of the greeting, want at most %d", got, statusCap)
		}
	})
	for _, tt := range []struct {
		name, script string
		call         func(c *Client) error
	}{
		{"+OK after login", "C: NOOP\n" + `S!raw "+OK "` + "\n" + flood, (*Client).Noop},
		{"-ERR after login", "C: NOOP\n" + `S!raw "-ERR "` + "\n" + flood, (*Client).Noop},
		{"LIST status", "C: LIST\n" + `S!raw "+OK "` + "\n" + flood, func(c *Client) error { _, err := c.List(0); return err }},
		{"RETR status", "C: RETR 1\n" + `S!raw "+OK "` + "\n" + flood, func(c *Client) error { _, err := c.Retr(1); return err }},
		{"TOP -ERR status", "C: TOP 1 0\n" + `S!raw "-ERR "` + "\n" + flood, func(c *Client) error { _, err := c.Top(1, 0); return err }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := pop3test.NewServer(t, greeting+login+tt.script)
			var n atomic.Int64
			c, err := Dial(counting(&n), srv.Addr(), "", Options{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Abort()
			if err := c.Login("alice", "secret"); err != nil {
				t.Fatal(err)
			}
			before := n.Load()
			start := time.Now()
			err = tt.call(c)
			wantConnErr(t, c, err)
			if !strings.Contains(err.Error(), "status line longer than 1024") {
				t.Errorf("err = %v, want the 1024-octet limit named", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("failed after %v, want at once", d)
			}
			if got := n.Load() - before; got > statusCap {
				t.Errorf("read %d bytes of the status line, want at most %d", got, statusCap)
			}
		})
	}
}

// A status line of exactly 1024 octets, CRLF included, is accepted.
func TestStatusLineAtCap(t *testing.T) {
	text := strings.Repeat("x", statusCap-len("+OK \r\n"))
	srv := pop3test.NewServer(t, greeting+"C: NOOP\nS: +OK "+text+"\nC: QUIT\nS: +OK")
	c := dial(t, srv.Addr(), Options{})
	if err := c.Noop(); err != nil {
		t.Fatalf("NOOP answered with a 1024-octet line: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	srv.Wait(t)
}

// A CAPA response, read before anyone has logged in, is capped at 16 KiB.
func TestCapaCap(t *testing.T) {
	const endless = `S!repeat 1000000 "X-SOME-CAPABILITY with arguments\r\n"` + "\n"
	t.Run("at dial", func(t *testing.T) {
		srv := pop3test.NewServer(t, "S: +OK ready\nC: CAPA\nS: +OK\n"+endless)
		var n atomic.Int64
		start := time.Now()
		_, err := Dial(counting(&n), srv.Addr(), "", Options{DialTimeout: 3 * time.Second})
		if !errors.Is(err, ErrConnection) || !strings.Contains(err.Error(), "exceeds 16384 bytes") {
			t.Errorf("Dial = %v, want ErrConnection naming the 16 KiB limit", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Dial failed after %v, want at once", d)
		}
		if got, max := n.Load(), int64(len("+OK ready\r\n")+maxCapaBytes); got > max {
			t.Errorf("read %d bytes, want at most %d", got, max)
		}
	})
	t.Run("after login", func(t *testing.T) {
		srv := pop3test.NewServer(t, greeting+"C: USER alice\nS: +OK\nC: PASS secret\nS: +OK\nC: CAPA\nS: +OK\n"+endless)
		var n atomic.Int64
		c, err := Dial(counting(&n), srv.Addr(), "", Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Abort()
		before := n.Load()
		err = c.Login("alice", "secret")
		wantConnErr(t, c, err)
		if got, max := n.Load()-before, int64(len("+OK\r\n+OK\r\n")+maxCapaBytes); got > max {
			t.Errorf("read %d bytes, want at most %d", got, max)
		}
	})
	t.Run("just under", func(t *testing.T) {
		line := strings.Repeat("X", 98) + "\r\n" // 100 octets
		body := strings.Repeat("S: "+line[:98]+"\n", (maxCapaBytes-len("+OK\r\n.\r\n"))/100)
		srv := pop3test.NewServer(t, "S: +OK ready\nC: CAPA\nS: +OK\n"+body+"S: .\nC: QUIT\nS: +OK")
		c := dial(t, srv.Addr(), Options{})
		if got := len(c.Capabilities()); got != (maxCapaBytes-9)/100 {
			t.Errorf("%d capabilities, want %d", got, (maxCapaBytes-9)/100)
		}
		c.Quit()
		srv.Wait(t)
	})
}

// One entry more than MaxMessages fails the listing with
// ErrTooManyMessages, logged with the count, and abandons the connection
// without QUIT: the scripts end without one, so a QUIT fails Wait.
func TestTooManyMessages(t *testing.T) {
	for _, cmd := range []string{"LIST", "UIDL"} {
		t.Run(cmd, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			c, srv := loggedIn(t, `
				C: DELE 1
				S: +OK
				C: `+cmd+`
				S: +OK 4 messages
				S!seq 4 "%d 120\r\n"
				S: .`, Options{MaxMessages: 3, Logger: zap.New(core)})
			if err := c.Dele(1); err != nil {
				t.Fatal(err)
			}
			var list []MessageInfo
			var err error
			if cmd == "LIST" {
				list, err = c.List(0)
			} else {
				list, err = c.Uidl(0)
			}
			if !errors.Is(err, ErrTooManyMessages) || list != nil {
				t.Fatalf("%s = %v, %v; want ErrTooManyMessages", cmd, list, err)
			}
			wantConnErr(t, c, err)
			srv.Wait(t)
			found := false
			for _, e := range logs.All() {
				fields := e.ContextMap()
				if fields["max_messages"] == int64(3) && fields["count"] == int64(4) {
					found = true
				}
			}
			if !found {
				t.Errorf("no warning with the count: %v", logs.All())
			}
		})
	}
	t.Run("default", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: LIST
			S: +OK
			S!seq `+strconv.Itoa(DefaultMaxMessages+1)+` "%d 1\r\n"
			S: .`, Options{})
		if _, err := c.List(0); !errors.Is(err, ErrTooManyMessages) {
			t.Fatalf("LIST of DefaultMaxMessages+1 = %v, want ErrTooManyMessages", err)
		}
		srv.Wait(t)
	})
	t.Run("exactly the cap", func(t *testing.T) {
		c, srv := loggedIn(t, `
			C: LIST
			S: +OK
			S!seq 3 "%d 120\r\n"
			S: .
			C: QUIT
			S: +OK`, Options{MaxMessages: 3})
		list, err := c.List(0)
		if err != nil || len(list) != 3 {
			t.Fatalf("LIST of MaxMessages entries = %v, %v", list, err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		srv.Wait(t)
	})
}

// A listing line is capped at 1 KiB; within that a unique-id may exceed
// RFC 1939 §7's 70 octets, as some servers' do and clients accept.
func TestListingLineCap(t *testing.T) {
	uid := strings.Repeat("u", 1000)
	c, srv := loggedIn(t, `
		C: UIDL
		S: +OK
		S: 1 `+uid+`
		S: 2 short
		S: .
		C: UIDL 1
		S: +OK 1 `+uid+`
		C: UIDL
		S: +OK
		S: 1 `+uid+`uuuuuuuuuuuuuuuuuuuuuuuuuuu
		S: .`, Options{})
	list, err := c.Uidl(0)
	if want := []MessageInfo{{Number: 1, UID: uid}, {Number: 2, UID: "short"}}; err != nil || !reflect.DeepEqual(list, want) {
		t.Fatalf("UIDL with a 1000-octet unique-id = %v, %v", list, err)
	}
	if list, err := c.Uidl(1); err != nil || len(list) != 1 || list[0].UID != uid {
		t.Fatalf("UIDL 1 with a 1000-octet unique-id = %v, %v", list, err)
	}
	_, err = c.Uidl(0)
	wantConnErr(t, c, err)
	if !strings.Contains(err.Error(), "line longer than 1024") {
		t.Errorf("err = %v, want the line limit named", err)
	}
	srv.Wait(t)
}

// A listing is parsed line by line into the result: a 200,000-entry LIST
// allocates about twice the final slice (the entries are collected in
// chunks, then joined), not the text several times over.
func TestLargeListing(t *testing.T) {
	const n = 200000
	entry := int64(unsafe.Sizeof(MessageInfo{}))
	for _, tt := range []struct {
		cmd, line string
		want      func(i int) MessageInfo
		extra     int64 // bytes the result holds besides the slice
	}{
		{"LIST", `"%d 4242\r\n"`, func(i int) MessageInfo { return MessageInfo{Number: i, Size: 4242} }, 0},
		{"UIDL", `"%d 0123456789abcdef\r\n"`, func(i int) MessageInfo { return MessageInfo{Number: i, UID: "0123456789abcdef"} }, n * 16},
	} {
		t.Run(tt.cmd, func(t *testing.T) {
			c, srv := loggedIn(t, `
				C: `+tt.cmd+`
				S: +OK
				S!seq `+strconv.Itoa(n)+` `+tt.line+`
				S: .
				C: QUIT
				S: +OK`, Options{MaxMessages: 300000})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var list []MessageInfo
			var err error
			if tt.cmd == "LIST" {
				list, err = c.List(0)
			} else {
				list, err = c.Uidl(0)
			}
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != n {
				t.Fatalf("%d entries, want %d", len(list), n)
			}
			for i, mi := range list {
				if mi != tt.want(i+1) {
					t.Fatalf("entry %d = %+v, want %+v", i, mi, tt.want(i+1))
				}
			}
			final := int64(n)*entry + tt.extra
			alloc := int64(after.TotalAlloc - before.TotalAlloc)
			mallocs := after.Mallocs - before.Mallocs
			t.Logf("%s of %d entries: %d bytes in %d allocations; the result holds %d bytes (%.2fx)",
				tt.cmd, n, alloc, mallocs, final, float64(alloc)/float64(final))
			if alloc > final*5/2 {
				t.Errorf("allocated %d bytes, want at most 2.5 times the %d bytes of the result", alloc, final)
			}
			if tt.cmd == "LIST" && mallocs > 1000 {
				t.Errorf("%d allocations, want not one per line", mallocs)
			}
			if err := c.Quit(); err != nil {
				t.Fatal(err)
			}
			srv.Wait(t)
		})
	}
}

// BenchmarkList reports the bytes allocated per LIST of 10,000 entries.
func BenchmarkList(b *testing.B) {
	const n = 10000
	script := greeting + login
	for range b.N {
		script += "C: LIST\nS: +OK\nS!seq " + strconv.Itoa(n) + ` "%d 4242\r\n"` + "\nS: .\n"
	}
	srv := pop3test.NewServer(b, script+"C: QUIT\nS: +OK")
	c, err := Dial(context.Background(), srv.Addr(), "", Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Login("alice", "secret"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if list, err := c.List(0); err != nil || len(list) != n {
			b.Fatal(len(list), err)
		}
	}
	b.StopTimer()
	c.Quit()
	srv.Wait(b)
}
