package pop3server

import (
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is a settable time source.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// ipN returns the key of a distinct IPv4 client per n.
func ipN(n int) netip.Prefix {
	return clientKey(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}))
}

// delayAfter is the failed-login delay of the n-th failure with the
// default options.
func delayAfter(n int) time.Duration {
	return failedLoginDelay(n, DefaultFailedLoginDelay, DefaultMaxFailedLoginDelay)
}

func TestFailureTableExpiry(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	ft := newFailureTable()
	ft.now = clk.now
	a, b := ipN(1), ipN(2)
	for i, want := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		if got := delayAfter(ft.fail(a)); got != want*time.Second {
			t.Errorf("failure %d: delay %v, want %v", i+1, got, want*time.Second)
		}
		clk.advance(time.Minute)
	}
	// 15 minutes without failures from a: forgotten; b is unaffected.
	clk.advance(failureMemory - time.Minute)
	if got := delayAfter(ft.fail(b)); got != time.Second {
		t.Errorf("first failure of b: delay %v", got)
	}
	if ft.len() != 1 {
		t.Errorf("table holds %d addresses after a's entry expired, want 1", ft.len())
	}
	if got := delayAfter(ft.fail(a)); got != time.Second {
		t.Errorf("a after 15 quiet minutes: delay %v, want 1s", got)
	}
	// Just under 15 minutes is not enough.
	clk.advance(failureMemory - time.Second)
	if got := delayAfter(ft.fail(a)); got != 2*time.Second {
		t.Errorf("a after 14:59: delay %v, want 2s", got)
	}
}

// TestFailureTableBounded checks that the table never holds more than
// maxTrackedIPs addresses and drops the one idle longest first.
func TestFailureTableBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	ft := newFailureTable()
	ft.now = clk.now
	ft.fail(ipN(0))
	ft.fail(ipN(0)) // ip 0 is at 2 failures
	clk.advance(time.Second)
	ft.fail(ipN(1))
	ft.fail(ipN(0)) // ip 0 failed last, ip 1 is now the oldest
	for i := 2; i < maxTrackedIPs+1; i++ {
		ft.fail(ipN(i))
	}
	if n := ft.len(); n != maxTrackedIPs {
		t.Fatalf("table holds %d addresses, want %d", n, maxTrackedIPs)
	}
	if got := delayAfter(ft.fail(ipN(0))); got != 8*time.Second {
		t.Errorf("ip 0 (recent) lost its history: delay %v, want 8s", got)
	}
	if got := delayAfter(ft.fail(ipN(1))); got != time.Second {
		t.Errorf("ip 1 (oldest) still known: delay %v, want 1s", got)
	}
}

func TestLimitLog(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	ll := newLimitLog(zap.New(core))
	ll.now = clk.now
	log := zap.New(core)
	a, b := ipN(1), ipN(2)

	for i := 0; i < 5; i++ {
		ll.hit(log, "per_ip", a, "hit")
		clk.advance(time.Second)
	}
	ll.hit(log, "per_ip", b, "hit")
	ll.hit(log, "total", netip.Prefix{}, "hit")
	ll.hit(log, "total", netip.Prefix{}, "hit")
	if n := logs.Len(); n != 3 {
		t.Fatalf("%d entries, want one per key (3)", n)
	}
	logs.TakeAll()

	// After the interval, the next hit is logged with the suppressed count.
	clk.advance(limitLogInterval)
	ll.hit(log, "per_ip", a, "hit")
	entries := logs.TakeAll()
	var own, summary int
	for _, e := range entries {
		m := e.ContextMap()
		switch e.Message {
		case "hit":
			own++
			if m["suppressed"] != int64(4) {
				t.Errorf("entry %v, want suppressed=4", m)
			}
		case "limit hit again":
			// The sweep reports the "total" key's suppressed hit.
			summary++
			if m["limit"] != "total" || m["suppressed"] != int64(1) {
				t.Errorf("summary %v, want limit=total suppressed=1", m)
			}
		}
	}
	if own != 1 || summary != 1 {
		t.Errorf("got %d entries and %d summaries (%v), want 1 and 1", own, summary, entries)
	}
}

// TestLimitLogBounded checks that addresses beyond maxTrackedIPs share one
// key per limit, so a client cycling through addresses cannot flood the log.
func TestLimitLogBounded(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	ll := newLimitLog(zap.New(core))
	ll.now = clk.now
	log := zap.New(core)
	for i := 0; i < maxTrackedIPs+500; i++ {
		ll.hit(log, "per_ip", ipN(i), "hit")
	}
	if n := logs.Len(); n != maxTrackedIPs+1 {
		t.Errorf("%d entries, want %d", n, maxTrackedIPs+1)
	}
	if n := len(ll.keys); n > maxTrackedIPs+1 {
		t.Errorf("%d keys kept", n)
	}
}

// TestClientKey checks how clients are grouped for the per-address limits:
// IPv4 per address, IPv4-mapped IPv6 as IPv4, IPv6 per /64.
func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.7", "192.0.2.7/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
	} {
		if got := clientKey(netip.MustParseAddr(tc.ip)); got.String() != tc.want {
			t.Errorf("clientKey(%s) = %v, want %s", tc.ip, got, tc.want)
		}
	}
	if k := clientKey(netip.Addr{}); k.IsValid() {
		t.Errorf("clientKey of no address = %v, want the invalid zero Prefix", k)
	}
}
