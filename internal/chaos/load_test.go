//go:build linux

package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The load of TestLoad: with the polite clients, over 1,000 connections.
const (
	idleClients     = 830 // connected, greeted, silent until auth_timeout
	loggedInIdle    = 60  // logged in to the upstream, silent (Dovecot allows 100 pop3 processes)
	slowlorisConns  = 100 // a byte a second, never a whole line
	garbageFlooders = 20  // random bytes as fast as the proxy takes them
	perSourceIP     = 18  // under max_connections_per_ip (20)
	sessionBudget   = 64 << 10
)

// sources hands out loopback addresses 127.0.0.2 and up, perSourceIP
// connections each, so that the per-address limit holds as it would for
// clients on the network.
type sources struct {
	mu sync.Mutex
	n  int
}

func (s *sources) next() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	i := 2 + s.n/perSourceIP
	return fmt.Sprintf("127.0.%d.%d", i/250, 2+i%250)
}

// hostile is the load: idle, logged-in idle, slowloris and flooding
// clients, counted.
type hostile struct {
	w           *World
	src         sources
	open        atomic.Int64 // connections held now
	floodCuts   atomic.Int64 // flooding connections the proxy ended
	floodStalls atomic.Int64 // flooding connections whose writes timed out
	peakRSS     atomic.Int64
	peakConns   atomic.Int64
}

func (h *hostile) run(ctx context.Context) {
	var wg sync.WaitGroup
	hold := func(open func() (net.Conn, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := open()
			if err != nil {
				return
			}
			h.open.Add(1)
			defer h.open.Add(-1)
			defer c.Close()
			<-ctx.Done()
		}()
	}
	for range idleClients {
		hold(func() (net.Conn, error) {
			p, err := dialPOP3(h.w.proxy.Addr, h.src.next(), 10*time.Second)
			if err != nil {
				return nil, err
			}
			return p.c, nil
		})
	}
	users := h.w.sortedUsers()
	for i := range loggedInIdle {
		user := users[i%len(users)]
		hold(func() (net.Conn, error) {
			p, err := dialPOP3(h.w.proxy.Addr, h.src.next(), 10*time.Second)
			if err != nil {
				return nil, err
			}
			if err := p.login(h.w.login(user), h.w.users[user]); err != nil {
				p.Close()
				return nil, err
			}
			return p.c, nil
		})
	}
	for range slowlorisConns {
		src := h.src.next()
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.slowloris(ctx, src)
		}()
	}
	for i := range garbageFlooders {
		src := h.src.next()
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.flood(ctx, src, rand.New(rand.NewPCG(uint64(i), 7)))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if rss := h.w.proxy.RSS(); rss > h.peakRSS.Load() {
				h.peakRSS.Store(rss)
			}
			if m, err := h.w.proxy.Metrics(); err == nil {
				if n := int64(m["pop3proxy_sessions_active"]); n > h.peakConns.Load() {
					h.peakConns.Store(n)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	wg.Wait()
}

// slowloris sends "USER " a byte a second and never ends the line.
func (h *hostile) slowloris(ctx context.Context, src string) {
	p, err := dialPOP3(h.w.proxy.Addr, src, 10*time.Second)
	if err != nil {
		return
	}
	defer p.Close()
	h.open.Add(1)
	defer h.open.Add(-1)
	for i := 0; ctx.Err() == nil; i++ {
		p.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := p.c.Write([]byte{"USER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[i%50]}); err != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// flood connects again and again and writes random lines until the
// proxy hangs up, counting the hang-ups.
func (h *hostile) flood(ctx context.Context, src string, rng *rand.Rand) {
	junk := make([]byte, 16<<10)
	for ctx.Err() == nil {
		p, err := dialPOP3(h.w.proxy.Addr, src, 5*time.Second)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func() { // read what the proxy answers, so that it never blocks on us
			bufio.NewReader(p.c).WriteTo(discard{})
		}()
		for ctx.Err() == nil {
			for i := range junk {
				junk[i] = byte(rng.IntN(256))
				if rng.IntN(64) == 0 {
					junk[i] = '\n'
				}
			}
			p.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := p.c.Write(junk); err != nil {
				// A write that times out is a proxy that stopped reading
				// without closing: not cut off.
				if errors.Is(err, os.ErrDeadlineExceeded) {
					h.floodStalls.Add(1)
				} else {
					h.floodCuts.Add(1)
				}
				break
			}
		}
		p.Close()
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestLoad keeps over 1,000 connections open, idle, logged in, slowloris
// and flooding, while polite clients fetch through the full chain with
// the oracle on; it prints their RETR times with and without the load
// and the proxy's peak memory, and checks that they were all served,
// that the flooders were cut off, and that memory stayed within
// buffer_memory plus 64 KiB a connection.
func TestLoad(t *testing.T) {
	s := seed(t)
	t.Logf("seed %d; replay with POP3PROXY_CHAOS_SEED=%d", s, s)
	w := NewWorld(t, Options{
		Seed: s, Users: 6, Clients: 8, Round: 8 * time.Second, Polite: true, Bin: plainBin,
		MaxConnections: 1300, MaxConnectionsPerIP: 20,
	})
	idleRSS := w.proxy.RSS()
	for _, v := range w.Round(0) {
		t.Error(v)
	}
	quiet := w.Stats.RetrTimes()

	h := &hostile{w: w}
	w.opt.During, w.opt.Round = h.run, 25*time.Second
	failedBefore := w.Stats.Failed.Load()
	for _, v := range w.Round(1) {
		t.Error(v)
	}
	loaded := w.Stats.RetrTimes()

	t.Logf("RETR through the full chain, median and 99th percentile: %s and %s alone (%d), %s and %s beside %d connections (%d)",
		percentile(quiet, 50), percentile(quiet, 99), len(quiet),
		percentile(loaded, 50), percentile(loaded, 99), h.peakConns.Load(), len(loaded))
	budget := idleRSS + 512<<10 + h.peakConns.Load()*sessionBudget
	t.Logf("proxy RSS: %.1f MiB idle, %.1f MiB peak under load (limit %.1f MiB); flooders cut off %d times",
		float64(idleRSS)/(1<<20), float64(h.peakRSS.Load())/(1<<20), float64(budget)/(1<<20), h.floodCuts.Load())
	if h.peakConns.Load() < 1000 {
		t.Errorf("only %d connections were open at once; the load did not happen", h.peakConns.Load())
	}
	if f := w.Stats.Failed.Load() - failedBefore; f > 0 {
		t.Errorf("%d polite sessions failed under load", f)
	}
	if len(loaded) == 0 {
		t.Error("no message was delivered under load")
	}
	// No fault is injected: a RETR the proxy answered -ERR [SYS/TEMP] (a
	// scanner overrun, a spool refused) is a message not served. Other
	// refusals are the upstream's: "expunged" when a client's other device
	// has just deleted the message.
	for text, n := range w.Stats.Refusals() {
		if strings.Contains(text, "[SYS/TEMP]") {
			t.Errorf("%d RETR or TOP answered %q", n, text)
		}
	}
	if n := h.floodStalls.Load(); n > 0 {
		t.Errorf("%d flooders' writes timed out: the proxy stopped reading them without closing", n)
	}
	if h.floodCuts.Load() < garbageFlooders {
		t.Errorf("the flooders were cut off %d times; each should have been at least once", h.floodCuts.Load())
	}
	if h.peakRSS.Load() > budget {
		t.Errorf("peak RSS %d bytes over the budget of %d", h.peakRSS.Load(), budget)
	}
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(100 * time.Microsecond)
}
