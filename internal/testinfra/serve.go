package testinfra

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Listen listens for a fake daemon: network "tcp" on a free loopback
// port, or "unix" on a socket in a new temporary directory. It returns the
// listener and its address as a scanner's address key (tcp://host:port or
// unix:///path).
func Listen(t testing.TB, network string) (net.Listener, string) {
	t.Helper()
	switch network {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln, "tcp://" + ln.Addr().String()
	case "unix":
		// Not t.TempDir: its path includes the test's name and may exceed
		// the 107 bytes a socket path may have.
		dir, err := os.MkdirTemp("", "fake")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		path := filepath.Join(dir, "daemon.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		return ln, "unix://" + path
	}
	t.Fatalf("network %q", network)
	return nil, ""
}

// Serve calls serve on every connection ln accepts, each in a goroutine of
// its own and closed after it, until the test ends; the cleanup closes ln
// and waits for them. A connection lasts at most limit, so that no fake
// outlives its test by more.
func Serve(t testing.TB, ln net.Listener, limit time.Duration, serve func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(limit))
				serve(c)
			})
		}
	})
}

// ServeLoopback is Serve on a free loopback TCP port; it returns host:port.
func ServeLoopback(t testing.TB, limit time.Duration, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, limit, serve)
	return ln.Addr().String()
}
