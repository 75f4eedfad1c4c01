package clamav_test

import (
	"context"
	"io"
	"net"
	"strings"
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
