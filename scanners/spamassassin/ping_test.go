package spamassassin

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// saPinged answers a PING request with reply and records the request.
func saPinged(reply string, got chan<- string) func(net.Conn) {
	return func(c net.Conn) {
		br := bufio.NewReader(c)
		var req strings.Builder
		for {
			line, err := br.ReadString('\n')
			req.WriteString(line)
			if err != nil || line == "\r\n" {
				break
			}
		}
		got <- req.String()
		io.WriteString(c, reply)
	}
}

// Ping sends spamc's PING and takes "SPAMD/x.y 0 PONG" for an answer;
// anything else, silence or no daemon is an error naming the address.
func TestSpamAssassinPing(t *testing.T) {
	got := make(chan string, 1)
	pong := newSA(t, &Filter{Address: startSAFake(t, "unix", saPinged("SPAMD/1.5 0 PONG\r\n", got)).addr})
	if err := pong.Ping(t.Context()); err != nil {
		t.Errorf("Ping of a daemon that answers PONG: %v", err)
	}
	if req := <-got; req != "PING SPAMC/1.5\r\n\r\n" {
		t.Errorf("sent %q", req)
	}

	refused := newSA(t, &Filter{Address: startSAFake(t, "tcp", saPinged("SPAMD/1.0 76 Bad header line: PING\r\n", make(chan string, 1))).addr})
	if err := refused.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), "instead of PONG") {
		t.Errorf("Ping of a daemon that refuses it: %v", err)
	}

	silent := newSA(t, &Filter{Address: startSAFake(t, "tcp", func(c net.Conn) { time.Sleep(2 * time.Second) }).addr})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := silent.Ping(ctx); err == nil || time.Since(start) > time.Second {
		t.Errorf("Ping of a silent daemon: %v after %v", err, time.Since(start))
	}

	addr := "tcp://" + testinfra.FreeAddr(t)
	down := newSA(t, &Filter{Address: addr})
	if err := down.Ping(t.Context()); err == nil || !strings.HasPrefix(err.Error(), "spamd at "+addr+" does not answer: ") {
		t.Errorf("Ping of no daemon: %v", err)
	}
}

func TestSpamAssassinRealSpamdPing(t *testing.T) {
	spamd := scannertest.StartSpamd(t)
	sa := newSA(t, &Filter{Address: "tcp://" + spamd.Addr})
	if err := sa.Ping(t.Context()); err != nil {
		t.Error(err)
	}
}
