package faultnet_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/faultnet"
)

// serve runs handle for every connection to a new loopback listener.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// echoServer answers each connection with "hello", then echoes what it
// reads until the client half-closes, then says "bye" and closes: enough
// to see bytes, half-closes and ends pass the relay.
func echoServer(t *testing.T) string {
	return serve(t, func(c net.Conn) {
		c.Write([]byte("hello\n"))
		io.Copy(c, c)
		c.Write([]byte("bye\n"))
	})
}

func relay(t *testing.T) *faultnet.Relay {
	t.Helper()
	r, err := faultnet.New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dial(t *testing.T, r *faultnet.Relay) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c.(*net.TCPConn)
}

func TestForwardsFaithfullyWithHalfClose(t *testing.T) {
	r := relay(t)
	c := dial(t, r)
	payload := bytes.Repeat([]byte("0123456789"), 5000)
	go func() {
		c.Write(payload)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello\n" + string(payload) + "bye\n"; string(got) != want {
		t.Fatalf("got %d bytes, want %d: the relay changed the stream", len(got), len(want))
	}
}

func TestRefuse(t *testing.T) {
	r := relay(t)
	r.Set(faultnet.Refuse, 0)
	c := dial(t, r)
	if n, err := c.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Fatalf("Read = %d, %v; want the connection closed at once", n, err)
	}
}

func TestCutAfterBytes(t *testing.T) {
	r := relay(t)
	r.Set(faultnet.Cut, 3)
	c := dial(t, r)
	got, _ := io.ReadAll(c)
	if string(got) != "hel" {
		t.Fatalf("got %q, want the first 3 bytes and then the end", got)
	}
}

func TestStallThenResume(t *testing.T) {
	r := relay(t)
	c := dial(t, r)
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	r.Set(faultnet.Stall, 0)
	c.Write([]byte("ping\n"))
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _ := c.Read(buf); n != 0 {
		t.Fatalf("read %q while stalled", buf[:n])
	}
	r.Set(faultnet.None, 0)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf[:5]); err != nil || string(buf[:5]) != "ping\n" {
		t.Fatalf("after the stall: %q, %v", buf[:5], err)
	}
}

func TestGarbage(t *testing.T) {
	r := relay(t)
	r.Set(faultnet.Garbage, 0)
	c := dial(t, r)
	got, _ := io.ReadAll(c)
	if len(got) < 64 || strings.HasPrefix(string(got), "hello") {
		t.Fatalf("got %d bytes starting %q, want garbage", len(got), got[:min(len(got), 8)])
	}
}

func TestCloseEndsEverything(t *testing.T) {
	r := relay(t)
	c := dial(t, r)
	r.Set(faultnet.Stall, 0)
	done := make(chan struct{})
	go func() {
		io.ReadAll(c)
		close(done)
	}()
	r.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled connection outlived Close")
	}
}

func TestCutCountsFromTheChange(t *testing.T) {
	r := relay(t)
	c := dial(t, r)
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	r.Set(faultnet.Cut, 4)
	c.Write([]byte("abcdefgh\n"))
	got, _ := io.ReadAll(c)
	if string(got) != "abcd" {
		t.Fatalf("got %q after the cut was set, want 4 more bytes and then the end", got)
	}
}

func TestEndlessNeverEndsAnAnswer(t *testing.T) {
	r := relay(t)
	r.Set(faultnet.Endless, 6)
	c := dial(t, r)
	got := make([]byte, 1<<20)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("the endless answer ended after less than 1 MiB: %v", err)
	}
	if !bytes.HasPrefix(got, []byte("hello\n")) {
		t.Fatalf("the server's bytes before the flood are missing: %q", got[:16])
	}
	if bytes.Contains(got, []byte("\n.")) {
		t.Fatal("the flood contains a line that starts with a dot")
	}
	r.Set(faultnet.None, 0)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the connection did not end after the fault changed: %v", err)
	}
}

func TestRetargetAndOpen(t *testing.T) {
	r := relay(t)
	c := dial(t, r)
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if n := r.Open(); n != 1 {
		t.Fatalf("Open = %d with one connection, want 1", n)
	}
	r.Retarget(serve(t, func(c net.Conn) { c.Write([]byte("other\n")) }))
	c2 := dial(t, r)
	got, _ := io.ReadAll(c2)
	c2.Close()
	if string(got) != "other\n" {
		t.Fatalf("after Retarget: %q, want the new target's greeting", got)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for r.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.Open(); n != 0 {
		t.Fatalf("Open = %d after every client closed", n)
	}
}

// quitServer answers every line with "+OK <line>" and counts QUITs.
func quitServer(t *testing.T) (addr string, quits *atomic.Int32) {
	quits = new(atomic.Int32)
	return serve(t, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "QUIT" {
				quits.Add(1)
			}
			fmt.Fprintf(c, "+OK %s\r\n", strings.TrimSpace(sc.Text()))
		}
	}), quits
}

func TestQuitErr(t *testing.T) {
	for _, tc := range []struct {
		n         int64
		wantQuits int32
	}{{0, 0}, {1, 1}} {
		addr, quits := quitServer(t)
		r, err := faultnet.New(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.Set(faultnet.QuitErr, tc.n)
		c := dial(t, r)
		br := bufio.NewReader(c)
		c.Write([]byte("NOOP\r\n"))
		if line, _ := br.ReadString('\n'); line != "+OK NOOP\r\n" {
			t.Fatalf("n=%d: NOOP answered %q; other commands must pass", tc.n, line)
		}
		c.Write([]byte("QUIT\r\n"))
		if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "-ERR ") {
			t.Fatalf("n=%d: QUIT answered %q, want -ERR", tc.n, line)
		}
		if _, err := br.ReadByte(); err == nil {
			t.Fatalf("n=%d: the connection stayed open after the -ERR", tc.n)
		}
		time.Sleep(100 * time.Millisecond)
		if got := quits.Load(); got != tc.wantQuits {
			t.Fatalf("n=%d: the server saw %d QUITs, want %d", tc.n, got, tc.wantQuits)
		}
	}
}
