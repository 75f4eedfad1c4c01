package spamassassin_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	"github.com/pop3proxy/pop3proxy/scanners/spamassassin"
)

// loadRelay forwards loopback TCP connections to a daemon and records the
// most requests the daemon had at once. A request counts from the
// relay's accept until the daemon's first reply byte, which the daemon
// sends once its check is done; the count drops before the client can
// have the reply, so a client that dials as soon as it has one is never
// counted twice.
type loadRelay struct {
	addr      string
	cur, peak atomic.Int32
}

func startLoadRelay(t *testing.T, target string) *loadRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &loadRelay{addr: ln.Addr().String()}
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
			n := r.cur.Add(1)
			for p := r.peak.Load(); n > p && !r.peak.CompareAndSwap(p, n); p = r.peak.Load() {
			}
			wg.Go(func() { r.relay(c, target) })
		}
	})
	return r
}

func (r *loadRelay) relay(c net.Conn, target string) {
	defer c.Close()
	counted := true
	done := func() {
		if counted {
			r.cur.Add(-1)
			counted = false
		}
	}
	defer done()
	d, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	defer d.Close()
	// No relay outlives its test by more than this.
	deadline := time.Now().Add(60 * time.Second)
	c.SetDeadline(deadline)
	d.SetDeadline(deadline)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		// spamd reads to the client's half-close (docs/scanners.md, spamd
		// requests).
		io.Copy(d, c)
		d.(*net.TCPConn).CloseWrite()
	}()
	defer func() {
		c.Close()
		<-copied
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := d.Read(buf)
		if n > 0 {
			done()
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestRealDaemonsConcurrent: 30 messages checked at once through a chain
// of clamav and spamassassin against the real clamd and a spamd with its
// default --max-children all get their verdicts, none a temporary
// failure, and neither daemon is ever asked for more than it serves at
// once (max_concurrent's defaults: clamd's MaxThreads, spamd's
// --max-children).
func TestRealDaemonsConcurrent(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	spamd := scannertest.StartSpamdWith(t, scannertest.SpamdOptions{MaxChildren: scannertest.SpamdDefaultMaxChildren})
	clamRelay, spamRelay := startLoadRelay(t, clamd.TCPAddr), startLoadRelay(t, spamd.Addr)
	ch := filtertest.MustChain(t, fmt.Sprintf(`
- type: clamav
  address: tcp://%s
  action: tag
- type: spamassassin
  address: tcp://%s
`, clamRelay.addr, spamRelay.addr))

	const runs = 30
	eicar, gtube := string(scannertest.EICAR()), string(scannertest.GTUBE())
	var wg sync.WaitGroup
	start := time.Now()
	for i := range runs {
		virus, spam := i%3 == 0, i%2 == 0
		body := fmt.Sprintf("Hello Bob,\r\n\r\nnote number %d.\r\n", i)
		if virus {
			body += eicar + "\r\n"
		}
		if spam {
			body += gtube + "\r\n"
		}
		msg := []byte(fmt.Sprintf("From: alice@example.com\r\nTo: bob@example.net\r\nSubject: note %d\r\n"+
			"Message-ID: <note.%d@example.com>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n%s", i, i, body))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res := ch.Run(ctx, filter.NewMessage(msg, filter.Meta{User: "alice", Number: i + 1}))
			defer res.Close()
			if res.Outcome != filter.Deliver {
				t.Errorf("message %d: %v by %s (%s)", i, res.Outcome, res.Filter, res.Reason)
				return
			}
			out, err := res.Message.Bytes()
			if err != nil {
				t.Errorf("message %d: %v", i, err)
				return
			}
			header, _, _ := strings.Cut(string(out), "\r\n\r\n")
			header += "\r\n"
			for field, want := range map[string]bool{
				filter.UnscannedField + ":":                             false,
				clamav.StatusField + ": Infected\r\n":                   virus,
				clamav.ScannedField + ": " + clamav.CleanValue + "\r\n": !virus,
				"X-Spam-Flag: YES\r\n":                                  spam,
			} {
				if strings.Contains(header, field) != want {
					t.Errorf("message %d (virus %v, spam %v): has %q: %v, want %v\n%s", i, virus, spam, field, !want, want, header)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d messages in %v; at most %d scans at once in clamd, %d checks in spamd", runs, time.Since(start), clamRelay.peak.Load(), spamRelay.peak.Load())
	if p := clamRelay.peak.Load(); p > clamav.DefaultMaxConcurrent {
		t.Errorf("clamd had %d scans at once, more than its MaxThreads (%d)", p, clamav.DefaultMaxConcurrent)
	}
	if p := spamRelay.peak.Load(); p > spamassassin.DefaultMaxConcurrent {
		t.Errorf("spamd had %d checks at once, more than its --max-children (%d)", p, spamassassin.DefaultMaxConcurrent)
	}
}
