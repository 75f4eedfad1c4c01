package proxy_test

import (
	"bufio"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// idleDropper is an upstream that drops a session silent for idle, as
// many ISPs' servers do. It answers USER, PASS, NOOP, STAT and QUIT (and
// CAPA with -ERR, as RFC 1939 servers do), and
// trickles RETR 1's answer over slow, failing the test if a command
// arrives before that answer is complete (POP3 is lock-step, RFC 1939
// §3, and the keepalive must never break in).
type idleDropper struct {
	addr    string
	noops   atomic.Int32
	dropped atomic.Bool   // a session was dropped for idling
	closed  chan struct{} // the proxy's connection ended
}

func newIdleDropper(t *testing.T, idle, slow time.Duration) *idleDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := &idleDropper{addr: ln.Addr().String(), closed: make(chan struct{})}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer close(d.closed)
		defer c.Close()
		lines := make(chan string, 16)
		go func() {
			defer close(lines)
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				lines <- strings.TrimSpace(line)
			}
		}()
		c.Write([]byte("+OK idle-dropping server\r\n"))
		for {
			var cmd string
			var ok bool
			select {
			case cmd, ok = <-lines:
				if !ok {
					return
				}
			case <-time.After(idle):
				d.dropped.Store(true)
				c.Write([]byte("-ERR [SYS/TEMP] idle for too long\r\n"))
				return
			}
			switch cmd {
			case "NOOP":
				d.noops.Add(1)
				c.Write([]byte("+OK\r\n"))
			case "STAT":
				c.Write([]byte("+OK 1 420\r\n"))
			case "RETR 1":
				c.Write([]byte("+OK 420 octets\r\n"))
				for i := range 10 {
					time.Sleep(slow / 10)
					if len(lines) > 0 {
						t.Errorf("a command arrived while RETR's answer was %d/10 sent", i)
					}
					c.Write([]byte("Line of the message, the same each time\r\n"))
				}
				c.Write([]byte(".\r\n"))
			case "QUIT":
				c.Write([]byte("+OK bye\r\n"))
				return
			case "CAPA":
				c.Write([]byte("-ERR no CAPA here\r\n"))
			default: // USER, PASS
				c.Write([]byte("+OK\r\n"))
			}
		}
	}()
	return d
}

func keepaliveGateway(t *testing.T, every time.Duration) string {
	t.Helper()
	return serve(t, proxy.Options{
		Upstream:          upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second},
		UpstreamKeepalive: every,
	})
}

// A client idle for 5 s keeps its session with an upstream that drops
// sessions idle for 2 s: the proxy sends NOOP every second meanwhile.
func TestUpstreamKeepalive(t *testing.T) {
	t.Parallel()
	up := newIdleDropper(t, 2*time.Second, 0)
	c := login(t, keepaliveGateway(t, time.Second), up.addr)
	time.Sleep(5 * time.Second)
	c.Cmd("STAT", "+OK 1 420")
	c.Cmd("QUIT", "+OK*")
	if n := up.noops.Load(); n < 3 {
		t.Errorf("%d NOOPs in 5 s at keepalive 1s", n)
	}
	if up.dropped.Load() {
		t.Error("the upstream dropped the session")
	}
}

// Without keepalive the same upstream drops the idle session, which is
// what makes TestUpstreamKeepalive mean something.
func TestUpstreamKeepaliveOff(t *testing.T) {
	t.Parallel()
	up := newIdleDropper(t, 2*time.Second, 0)
	c := login(t, keepaliveGateway(t, 0), up.addr)
	time.Sleep(3 * time.Second)
	c.Cmd("STAT", "-ERR [SYS/TEMP]*")
	if !up.dropped.Load() || up.noops.Load() != 0 {
		t.Errorf("dropped %v after %d NOOPs; want the idle session dropped and no NOOP", up.dropped.Load(), up.noops.Load())
	}
}

// A NOOP never breaks into a command in flight: RETR's answer takes 2 s,
// the keepalive is 200 ms, and the upstream fails the test if anything
// arrives before the answer's end. Afterwards the keepalive goes on.
func TestUpstreamKeepaliveWaitsForCommands(t *testing.T) {
	t.Parallel()
	up := newIdleDropper(t, 5*time.Second, 2*time.Second)
	c := login(t, keepaliveGateway(t, 200*time.Millisecond), up.addr)
	c.Cmd("RETR 1", "+OK*")
	for range 10 {
		c.Expect("Line of the message, the same each time")
	}
	c.Expect(".")
	before := up.noops.Load()
	time.Sleep(time.Second)
	if up.noops.Load() <= before {
		t.Error("no NOOP after the RETR")
	}
	c.Cmd("QUIT", "+OK*")
}

// The keepalive ends with the session: a client that disconnects leaves
// no NOOPs behind, and the upstream connection closes.
func TestUpstreamKeepaliveEndsWithSession(t *testing.T) {
	t.Parallel()
	up := newIdleDropper(t, 5*time.Second, 0)
	c := login(t, keepaliveGateway(t, 100*time.Millisecond), up.addr)
	time.Sleep(500 * time.Millisecond)
	c.Conn.Close()
	select {
	case <-up.closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream connection outlived the client's")
	}
	if up.noops.Load() == 0 {
		t.Error("no NOOP while the client was idle")
	}
}
