//go:build linux

package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// proxyBin is the proxy built with the race detector: a data race the
// faults provoke ends the process, which the harness reports as a crash.
// plainBin is built without it, for memory figures.
var proxyBin, plainBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pop3proxy-chaos")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if proxyBin, err = Build(filepath.Join(dir, "race"), true); err == nil {
		plainBin, err = Build(dir, false)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// seed is POP3PROXY_CHAOS_SEED, or a new one each run: every run tries
// other schedules, and a failing one is replayed with the seed it prints.
func seed(t *testing.T) uint64 {
	if s := os.Getenv("POP3PROXY_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("POP3PROXY_CHAOS_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return d
}

// TestChaos is the short seeded run of the test command: every fault at
// least once (Cover), against real daemons, with the oracle and the leak
// checks after every round. POP3PROXY_CHAOS_TIME sets its length.
func TestChaos(t *testing.T) {
	s := seed(t)
	t.Logf("seed %d; replay with POP3PROXY_CHAOS_SEED=%d", s, s)
	length := envDuration(t, "POP3PROXY_CHAOS_TIME", 100*time.Second)
	w := NewWorld(t, Options{
		Seed: s, Users: 6, Clients: 8, Round: 8 * time.Second,
		Faults: AllKinds(), Rate: 0.5, Bin: proxyBin, Logf: t.Logf, Cover: true,
	})
	start := time.Now()
	rounds := max(1, (len(w.opt.Faults)+2)/3)
	for n := 0; n < rounds || time.Since(start) < length; n++ {
		for _, v := range w.Round(n) {
			t.Error(v)
		}
		if t.Failed() {
			break
		}
	}
	t.Logf("%d rounds, %d sessions (%d with OAuth2 tokens), %d messages checked, %d delivered (%d verdicts replayed from the cache, %d messages scanned ahead), %d refused, %d faults and %d client hang-ups injected",
		w.Stats.Rounds.Load(), w.Stats.Sessions.Load(), w.Stats.TokenLogins.Load(), w.Stats.Checked.Load(), w.Stats.Delivered.Load(),
		w.Stats.Replayed.Load(), w.Stats.ScannedAhead.Load(), w.Stats.Refused.Load(), w.Stats.Faults.Load(), w.Stats.ClientFaults.Load())
	for text, n := range w.Stats.Refusals() {
		t.Logf("%4d × %s", n, text)
	}
	// What the run must have exercised, or it proved little.
	for what, n := range map[string]int64{
		"messages delivered": w.Stats.Delivered.Load(), "OAuth2 logins": w.Stats.TokenLogins.Load(),
		"verdicts replayed": w.Stats.Replayed.Load(), "messages scanned ahead": w.Stats.ScannedAhead.Load(),
		"client hang-ups": w.Stats.ClientFaults.Load(),
	} {
		if n == 0 {
			t.Errorf("no %s in the whole run", what)
		}
	}
}

// TestSoak fetches continuously through the full chain with faults at a
// low rate, printing a line a minute, for POP3PROXY_SOAK (e.g. 30m). On
// demand only (README, Reliability):
//
//	POP3PROXY_SOAK=30m go test -run TestSoak -timeout 0 -v ./internal/chaos/
func TestSoak(t *testing.T) {
	length := envDuration(t, "POP3PROXY_SOAK", 0)
	if length == 0 {
		t.Skip("the soak runs on demand: set POP3PROXY_SOAK=30m")
	}
	s := seed(t)
	t.Logf("seed %d; replay with POP3PROXY_CHAOS_SEED=%d", s, s)
	w := NewWorld(t, Options{
		Seed: s, Users: 6, Clients: 8, Round: 20 * time.Second,
		Faults: AllKinds(), Rate: 0.15, Bin: proxyBin,
	})
	start, next := time.Now(), time.Now().Add(time.Minute)
	report := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		idle := w.idle()
		t.Logf("%5.1f min: %d rounds, %d messages checked, %d delivered, %d faults + %d client hang-ups injected, %d violations; proxy RSS %.1f MiB, %v goroutines, %d fds",
			time.Since(start).Minutes(), w.Stats.Rounds.Load(), w.Stats.Checked.Load(), w.Stats.Delivered.Load(),
			w.Stats.Faults.Load(), w.Stats.ClientFaults.Load(), w.Stats.Violations.Load(),
			float64(w.proxy.RSS())/(1<<20), idle.goroutines, idle.fds)
	}
	for n := 0; time.Since(start) < length; n++ {
		for _, v := range w.Round(n) {
			t.Error(v)
		}
		if time.Now().After(next) {
			report()
			next = next.Add(time.Minute)
		}
	}
	if time.Until(next) < 50*time.Second {
		report()
	}
}
