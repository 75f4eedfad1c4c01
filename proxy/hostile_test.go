package proxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// Limits for the hostile servers below: small, so that every case ends
// within a second or two.
const (
	hostileTimeout  = 400 * time.Millisecond // silence
	hostileResponse = 800 * time.Millisecond // one whole response
	hostileMax      = 64 << 10               // one buffered response
)

func hostileOptions() upstream.Options {
	return upstream.Options{DialTimeout: time.Second, Timeout: hostileTimeout,
		ResponseTimeout: hostileResponse, MaxResponseBytes: hostileMax}
}

// trickle sends a line every 50ms for about d: never silent for
// hostileTimeout, never finished.
func trickle(line string, d time.Duration) string {
	return strings.Repeat("S: "+line+"\nS!sleep 50ms\n", int(d/(50*time.Millisecond)))
}

// flood is an endless line: 1 MB without a line end.
const flood = `S!repeat 100000 "AAAAAAAAAA"` + "\n"

// A server that breaks the protocol before login fails the login with a
// temporary error; the client may try again, nothing more is sent upstream.
func TestHostileGreeting(t *testing.T) {
	tests := []struct{ name, script string }{
		{"no status", "S: hello, I am a POP3 server"},
		{"lower-case status", "S: +ok ready"},
		{"empty line", "S:"},
		{"binary garbage", `S!raw "\x16\x03\x01\x00\xff\x00\x80\r\n"`},
		{"TLS instead of POP3", `S!raw "\x16\x03\x03\x00\x02\x02\x28"` + "\nS!discard"},
		{"endless greeting", `S!raw "+OK "` + "\n" + flood},
		{"greeting trickles forever", `S!raw "+OK "` + "\n" + strings.Repeat("S!raw \"x\"\nS!sleep 50ms\n", 100)},
		{"silence", "S!sleep 5s"},
		{"closed at once", "S!close"},
		{"malformed CAPA answer", "S: +OK ready\nC: CAPA\nS: OK here they come"},
		{"endless CAPA", "S: +OK ready\nC: CAPA\nS: +OK\n" + strings.Repeat(`S!repeat 10000 "X-CAP\r\n"`+"\n", 10)},
		{"unsolicited after greeting", `S!raw "+OK ready\r\n+OK again\r\n"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := pop3test.NewServer(t, tt.script)
			gw := startGatewayWith(t, hostileOptions())
			c := pop3servertest.Dial(t, gw)
			start := time.Now()
			c.Script(`
				S: +OK *
				C: USER alice%` + up.Addr() + `
				S: +OK *
				C: PASS secret
				S: -ERR [SYS/TEMP] cannot reach upstream server, try again later
				C: QUIT
				S: +OK *`)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the login took %v", d)
			}
		})
	}
}

// After login, anything malformed, over-long, stalled or endless ends the
// session with -ERR [SYS/TEMP] and closes the connection, without QUIT
// upstream (the scripts end without it: a QUIT would fail the test).
func TestHostileResponses(t *testing.T) {
	tests := []struct{ name, cmd, script string }{
		{"no status", "STAT", "S: 2 300"},
		{"lower-case status", "STAT", "S: +ok 2 300"},
		{"malformed STAT", "STAT", "S: +OK two 300"},
		{"binary garbage", "STAT", `S!raw "\x16\x03\x01\x00\xff\x00\x80\r\n"`},
		{"empty line", "NOOP", "S:"},
		{"endless status line", "NOOP", `S!raw "+OK "` + "\n" + flood},
		{"endless listing", "LIST", "S: +OK\n" + `S!repeat 100000 "1 120\r\n"`},
		{"garbage in listing", "LIST", "S: +OK\n" + `S!raw "1 120\r\n\x00\xff\xfe\r\n.\r\n"`},
		{"control character in UID", "UIDL", "S: +OK\n" + `S!raw "1 abc\x1bdef\r\n.\r\n"`},
		{"listing never ends", "LIST", "S: +OK\nS: 1 120\nS!sleep 5s"},
		{"listing trickles forever", "LIST", "S: +OK\n" + trickle("1 120", 5*time.Second)},
		{"status line trickles forever", "NOOP", `S!raw "+OK "` + "\n" + strings.Repeat("S!raw \"x\"\nS!sleep 50ms\n", 100)},
		{"silence", "DELE 1", "S!sleep 5s"},
		{"closed", "DELE 1", "S!close"},
		{"unsolicited data", "DELE 1", `S!raw "+OK deleted\r\n+OK bonus\r\n"`},
		{"RETR no status", "RETR 1", "S: here is your mail"},
		{"RETR binary status", "RETR 1", `S!raw "\x00\x00\x00\x00\r\n"`},
		{"RETR endless status", "RETR 1", `S!raw "+OK "` + "\n" + flood},
		{"TOP silence", "TOP 1 0", "S!sleep 5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := pop3test.NewServer(t, loginScript+"C: "+tt.cmd+"\n"+tt.script)
			c := login(t, startGatewayWith(t, hostileOptions()), up.Addr())
			start := time.Now()
			c.Cmd(tt.cmd, "-ERR [SYS/TEMP] upstream connection lost")
			c.ExpectClosed()
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("the session ended after %v", d)
			}
		})
	}
}

// A message that trickles in forever: through a filter chain it is read
// before "+OK", so the client gets -ERR [SYS/TEMP]; unfiltered, "+OK" has
// gone out before the trouble and the connection is closed without the
// terminating dot. Either way ResponseTimeout ends it.
func TestEndlessRetr(t *testing.T) {
	script := loginScript + "C: RETR 1\nS: +OK\nS: Subject: slow\nS:\n" + trickle("more", 10*time.Second)

	t.Run("filtered", func(t *testing.T) {
		chain := filtertest.MustChain(t, "- type: fakeav\n")
		up := pop3test.NewServer(t, script)
		gw := serve(t, proxy.Options{Upstream: hostileOptions(), Chain: chain, MaxSize: 10 << 20})
		c := login(t, gw, up.Addr())
		start := time.Now()
		c.Cmd("RETR 1", "-ERR [SYS/TEMP] upstream connection lost")
		c.ExpectClosed()
		if d := time.Since(start); d < hostileResponse*3/4 || d > 3*time.Second {
			t.Errorf("RETR failed after %v, want about the ResponseTimeout %v", d, hostileResponse)
		}
	})
	t.Run("unfiltered", func(t *testing.T) {
		up := pop3test.NewServer(t, script)
		c := login(t, startGatewayWith(t, hostileOptions()), up.Addr())
		start := time.Now()
		c.Send("RETR 1\r\n")
		var lines []string
		for {
			line, err := c.ReadLine()
			if err != nil {
				break
			}
			lines = append(lines, line)
		}
		if d := time.Since(start); d < hostileResponse*3/4 || d > 3*time.Second {
			t.Errorf("RETR ended after %v, want about the ResponseTimeout %v", d, hostileResponse)
		}
		if len(lines) == 0 || !strings.HasPrefix(lines[0], "+OK") {
			t.Fatalf("got %q, want +OK and part of the message", lines)
		}
		if lines[len(lines)-1] == "." {
			t.Fatal("the endless message was terminated as if complete")
		}
	})
}

// A listing longer than upstream.max_messages ends the session with
// [SYS/PERM]: trying again meets the same mailbox. Nothing is committed
// upstream (the scripts end without QUIT, which would fail Wait).
func TestTooManyMessages(t *testing.T) {
	for _, cmd := range []string{"LIST", "UIDL"} {
		t.Run(cmd, func(t *testing.T) {
			up := pop3test.NewServer(t, loginScript+`
				C: DELE 1
				S: +OK
				C: `+cmd+`
				S: +OK
				S!seq 4 "%d 120\r\n"
				S: .`)
			opts := hostileOptions()
			opts.MaxMessages = 3
			c := login(t, startGatewayWith(t, opts), up.Addr())
			c.Cmd("DELE 1", "+OK*")
			c.Cmd(cmd, "-ERR [SYS/PERM] mailbox has more messages than this proxy relays (upstream.max_messages)")
			c.ExpectClosed()
			up.Wait(t)
		})
	}
}
