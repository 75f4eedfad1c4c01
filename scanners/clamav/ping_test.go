package clamav_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// clamPinged answers a zPING with reply, and records what it was sent.
func clamPinged(reply string, got chan<- string) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 6)
		n, _ := io.ReadFull(c, buf)
		got <- string(buf[:n])
		io.WriteString(c, reply)
	}
}

// Ping sends zPING and takes exactly PONG for an answer; anything else,
// silence or no daemon is an error naming the configured address.
func TestClamAVPing(t *testing.T) {
	got := make(chan string, 1)
	pong, _ := clamNew(t, clamav.Filter{Address: clamFake(t, "unix", clamPinged("PONG\x00", got))})
	if err := pong.Ping(t.Context()); err != nil {
		t.Errorf("Ping of a daemon that answers PONG: %v", err)
	}
	if sent := <-got; sent != "zPING\x00" {
		t.Errorf("sent %q, want zPING and NUL", sent)
	}

	garbage, _ := clamNew(t, clamav.Filter{Address: clamFake(t, "tcp", clamPinged("UNKNOWN COMMAND\x00", make(chan string, 1)))})
	if err := garbage.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), `answered "UNKNOWN COMMAND"`) {
		t.Errorf("Ping of a daemon that answers nonsense: %v", err)
	}

	silent, _ := clamNew(t, clamav.Filter{Address: clamFake(t, "tcp", func(c net.Conn) { time.Sleep(2 * time.Second) })})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := silent.Ping(ctx); err == nil || time.Since(start) > time.Second {
		t.Errorf("Ping of a silent daemon: %v after %v", err, time.Since(start))
	}

	addr := "tcp://" + testinfra.FreeAddr(t)
	down, _ := clamNew(t, clamav.Filter{Address: addr})
	if err := down.Ping(t.Context()); err == nil || !strings.HasPrefix(err.Error(), "clamd at "+addr+" does not answer: ") {
		t.Errorf("Ping of no daemon: %v", err)
	}
}

func TestClamAVRealClamdPing(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	for _, address := range []string{clamd.UnixURL(), clamd.TCPURL()} {
		p, _ := clamNew(t, clamav.Filter{Address: address})
		if err := p.Ping(t.Context()); err != nil {
			t.Errorf("%s: %v", address, err)
		}
	}
}

// clamVersioned answers nVERSION with the reply and counts the questions.
func clamVersioned(reply *atomic.Value, asked *atomic.Int32) func(net.Conn) {
	return func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line != "nVERSION\n" {
			io.WriteString(c, "UNKNOWN COMMAND\n")
			return
		}
		asked.Add(1)
		io.WriteString(c, reply.Load().(string))
	}
}

// Generation is clamd's VERSION answer, signature database version
// included, asked once for many messages; a reply that is not clamd's is
// an error, so that no cached verdict is used.
func TestClamAVGeneration(t *testing.T) {
	var reply atomic.Value
	var asked atomic.Int32
	reply.Store("ClamAV 1.4.6/27480/Thu Nov 26 09:37:22 2026\n")
	p, _ := clamNew(t, clamav.Filter{Address: clamFake(t, "tcp", clamVersioned(&reply, &asked))})
	for range 5 {
		g, err := p.Generation(t.Context())
		if err != nil || g != "ClamAV 1.4.6/27480/Thu Nov 26 09:37:22 2026" {
			t.Fatalf("Generation = %q, %v", g, err)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("clamd asked %d times for 5 messages, want once", n)
	}
	// After the interval, a signature update shows.
	defer clamav.SetGenerationInterval(10 * time.Millisecond)()
	reply.Store("ClamAV 1.4.6/27481/Fri Nov 27 09:37:22 2026\n")
	time.Sleep(20 * time.Millisecond)
	if g, err := p.Generation(t.Context()); err != nil || !strings.Contains(g, "/27481/") {
		t.Errorf("Generation after an update = %q, %v", g, err)
	}

	reply.Store("UNKNOWN COMMAND\n")
	bad, _ := clamNew(t, clamav.Filter{Address: clamFake(t, "tcp", clamVersioned(&reply, &asked))})
	if g, err := bad.Generation(t.Context()); err == nil {
		t.Errorf("Generation of a daemon that answers nonsense: %q", g)
	}
	down, _ := clamNew(t, clamav.Filter{Address: "tcp://" + testinfra.FreeAddr(t)})
	if _, err := down.Generation(t.Context()); err == nil {
		t.Error("Generation without clamd is no error")
	}
}

func TestClamAVRealClamdGeneration(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	p, _ := clamNew(t, clamav.Filter{Address: clamd.UnixURL()})
	g, err := p.Generation(t.Context())
	if err != nil || !strings.HasPrefix(g, "ClamAV ") {
		t.Errorf("Generation = %q, %v", g, err)
	}
}
