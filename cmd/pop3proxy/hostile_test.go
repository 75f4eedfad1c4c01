package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// endlessGreeting starts a greeting and never ends it.
func endlessGreeting(c net.Conn) {
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	if _, err := io.WriteString(c, "+OK "); err != nil {
		return
	}
	for {
		if _, err := c.Write(chunk); err != nil {
			return
		}
	}
}

// hugeListing logs anyone in and answers LIST with 31 MB of entries.
func hugeListing(c net.Conn) {
	r := bufio.NewReader(c)
	w := bufio.NewWriterSize(c, 64<<10)
	io.WriteString(w, "+OK ready\r\n")
	w.Flush()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch verb, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.ToUpper(verb) {
		case "CAPA":
			io.WriteString(w, "-ERR no\r\n")
		case "LIST":
			io.WriteString(w, "+OK huge\r\n")
			written := 0
			for n := 1; written < 31<<20; n++ {
				k, err := fmt.Fprintf(w, "%d %d\r\n", n, 1000+n%7919)
				if err != nil {
					return
				}
				written += k
			}
			io.WriteString(w, ".\r\n")
		case "QUIT":
			io.WriteString(w, "+OK bye\r\n")
			w.Flush()
			return
		default:
			io.WriteString(w, "+OK\r\n")
		}
		if w.Flush() != nil {
			return
		}
	}
}

// TestHostileUpstreamsBoundedMemory checks what upstreams a client chose
// can cost before and after login: twenty that send an endless greeting
// and ten whose LIST runs to 31 MB, all at once, leave the proxy's peak
// resident memory under 256 MB, and a session with an honest upstream is
// served byte for byte meanwhile.
func TestHostileUpstreamsBoundedMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to measure memory")
	}
	const (
		greetings = 20
		listings  = 10
		limitMiB  = 256
	)
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: map[string]string{testUser: testPass}})
	msg := []byte("From: a@example.com\r\nSubject: honest\r\n\r\nstill delivered\r\n")
	d.Deliver(t, testUser, msg)
	greeter := testinfra.ServeLoopback(t, time.Minute, endlessGreeting)
	lister := testinfra.ServeLoopback(t, time.Minute, hugeListing)

	p := startProxyBin(t, plainProxyBin(t), relayConfig()+"limits:\n  max_connections_per_ip: 100\n")
	pid := p.cmd.Process.Pid
	before := procStatusKiB(t, pid, "VmHWM")

	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range greetings {
		c := dialPOP(t, fmt.Sprintf("greeting-%d", i), p.Addr)
		wg.Go(func() {
			<-start
			c.Cmd("USER mallory%"+greeter, "+OK*")
			c.Cmd("PASS x", "-ERR [SYS/TEMP]*")
		})
	}
	for i := range listings {
		c := dialPOP(t, fmt.Sprintf("listing-%d", i), p.Addr)
		wg.Go(func() {
			<-start
			c.Cmd("USER mallory%"+lister, "+OK*")
			c.Cmd("PASS x", "+OK*")
			c.Cmd("LIST", "-ERR [SYS/PERM]*")
			c.ExpectClosed()
		})
	}
	honest := loggedIn(t, "honest", p, d)
	close(start)
	honest.Cmd("RETR 1", "+OK*")
	if got, want := honest.Multi(), upstreamtest.WireForm(msg); !bytes.Equal(got, want) {
		t.Errorf("honest session got %q, want %q", got, want)
	}
	honest.Cmd("QUIT", "+OK*")
	wg.Wait()

	after := procStatusKiB(t, pid, "VmHWM")
	t.Logf("proxy peak RSS: %d KiB before, %d KiB after %d endless greetings and %d LISTs of 31 MB at once",
		before, after, greetings, listings)
	if after > limitMiB<<10 {
		t.Fatalf("peak RSS %d KiB, want under %d MiB", after, limitMiB)
	}
}

// TestIdleClientsCost measures what connections that never log in cost:
// each holds a descriptor and a small buffer until auth_timeout (that no
// more than max_connections are accepted is TestConnectionLimits').
func TestIdleClientsCost(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc to measure memory")
	}
	const clients, limitKiB = 500, 64
	p := startProxyBin(t, plainProxyBin(t), relayConfig()+"limits:\n  max_connections: 500\n  max_connections_per_ip: 1000\n")
	pid := p.cmd.Process.Pid
	before := procStatusKiB(t, pid, "VmRSS")
	conns := make([]net.Conn, 0, clients+1)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range clients {
		c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// A command, so that each connection has read and answered a line.
		if _, err := io.WriteString(c, "CAPA\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == ".\r\n" {
				break
			}
		}
	}
	after := procStatusKiB(t, pid, "VmRSS")
	perConn := (after - before) / clients
	t.Logf("%d idle clients: proxy RSS %d KiB -> %d KiB, %d KiB each", clients, before, after, perConn)
	if perConn > limitKiB {
		t.Errorf("%d KiB per idle client, want at most %d", perConn, limitKiB)
	}
}
