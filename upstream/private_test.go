package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

func TestPrivateAddr(t *testing.T) {
	noInterfaces(t)
	tests := []struct {
		ip   string
		kind string // "" for a public address
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"169.254.169.254", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"febf::1", "link-local"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"fc00::1", "private"},
		{"fd12:3456::1", "private"},
		{"::ffff:10.0.0.1", "private"},
		{"::ffff:192.168.0.1", "private"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"::ffff:0.0.0.0", "unspecified"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"ff02::1", "multicast"},
		{"ff0e::1", "multicast"},
		{"100.64.0.1", "shared"},
		{"100.127.255.255", "shared"},
		{"255.255.255.255", "reserved"},
		{"240.0.0.1", "reserved"},
		{"fec0::1", "site-local"},
		{"::7f00:1", "loopback (IPv4-compatible)"},
		{"64:ff9b::7f00:1", "loopback (NAT64)"},
		{"64:ff9b::a00:1", "private (NAT64)"},
		// Public.
		{"8.8.8.8", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"169.253.255.255", ""},
		{"1.0.0.0", ""},
		{"223.255.255.255", ""},
		{"2a00:1450:4001::1", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""},
	}
	for _, tt := range tests {
		kind, private := PrivateAddr(netip.MustParseAddr(tt.ip))
		if kind != tt.kind || private != (tt.kind != "") {
			t.Errorf("PrivateAddr(%s) = %q, %v; want %q", tt.ip, kind, private, tt.kind)
		}
	}
	if _, private := PrivateAddr(netip.Addr{}); !private {
		t.Error("the zero Addr is not refused")
	}
}

// TestPrivateAddrRegistry checks every block of the IANA IPv4 and IPv6
// Special-Purpose Address Registries (RFC 6890 and the RFCs that added to
// them), and the other ranges no upstream can be in, at their first and
// last address, and the public addresses just outside where there are
// some.
func TestPrivateAddrRegistry(t *testing.T) {
	noInterfaces(t)
	for _, tt := range []struct {
		prefix string
		kind   string
		before string // the public address just below, or ""
		after  string // the public address just above, or ""
	}{
		{"0.0.0.0/8", "unspecified", "", "1.0.0.0"},
		{"10.0.0.0/8", "private", "9.255.255.255", "11.0.0.0"},
		{"100.64.0.0/10", "shared", "100.63.255.255", "100.128.0.0"},
		{"127.0.0.0/8", "loopback", "126.255.255.255", "128.0.0.0"},
		{"169.254.0.0/16", "link-local", "169.253.255.255", "169.255.0.0"},
		{"172.16.0.0/12", "private", "172.15.255.255", "172.32.0.0"},
		{"192.0.0.0/24", "special-purpose", "191.255.255.255", "192.0.1.0"},
		{"192.0.2.0/24", "documentation", "192.0.1.255", "192.0.3.0"},
		{"192.31.196.0/24", "special-purpose", "192.31.195.255", "192.31.197.0"},
		{"192.52.193.0/24", "special-purpose", "192.52.192.255", "192.52.194.0"},
		{"192.88.99.0/24", "special-purpose", "192.88.98.255", "192.88.100.0"},
		{"192.168.0.0/16", "private", "192.167.255.255", "192.169.0.0"},
		{"192.175.48.0/24", "special-purpose", "192.175.47.255", "192.175.49.0"},
		{"198.18.0.0/15", "benchmarking", "198.17.255.255", "198.20.0.0"},
		{"198.51.100.0/24", "documentation", "198.51.99.255", "198.51.101.0"},
		{"203.0.113.0/24", "documentation", "203.0.112.255", "203.0.114.0"},
		{"224.0.0.0/4", "multicast", "223.255.255.255", ""},
		{"240.0.0.0/4", "reserved", "", ""},
		{"255.255.255.255/32", "reserved", "", ""},

		{"::/128", "unspecified", "", ""},
		{"::1/128", "loopback", "", ""},
		{"64:ff9b:1::/48", "local-use NAT64", "", ""},
		{"100::/64", "discard-only", "", ""},
		{"2001::/32", "Teredo", "", ""},
		{"2001:2::/48", "benchmarking", "", ""},
		{"2001:10::/28", "special-purpose", "", ""},
		{"2001:20::/28", "special-purpose", "", ""},
		{"2001::/23", "special-purpose", "", "2001:200::"},
		{"2001:db8::/32", "documentation", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"},
		{"2620:4f:8000::/48", "special-purpose", "2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", "2620:4f:8001::"},
		{"3fff::/20", "documentation", "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", ""},
		{"5f00::/16", "segment-routing", "", ""},
		{"fc00::/7", "private", "", ""},
		{"fe80::/10", "link-local", "", ""},
		{"fec0::/10", "site-local", "", ""},
		{"ff00::/8", "multicast", "", ""},
		// Outside 2000::/3, IPv6 has no global unicast (RFC 4291 §2.4).
		{"4000::/3", "reserved", "", ""},
		{"100:0:0:1::/64", "reserved", "", ""}, // the dummy prefix
		{"fe00::/9", "reserved", "", ""},
	} {
		p := netip.MustParsePrefix(tt.prefix)
		first, last := p.Masked().Addr(), lastAddr(p)
		for _, ip := range []netip.Addr{first, last} {
			// Teredo and the rest of 2001::/23 differ in kind inside.
			if tt.prefix == "2001::/23" && netip.MustParsePrefix("2001::/32").Contains(ip) {
				continue
			}
			// Teredo names the client's kind first: "loopback (Teredo)".
			if kind, private := PrivateAddr(ip); !private || !strings.Contains(kind, tt.kind) {
				t.Errorf("%s: PrivateAddr(%s) = %q, %v; want %q", tt.prefix, ip, kind, private, tt.kind)
			}
		}
		for _, s := range []string{tt.before, tt.after} {
			if s == "" {
				continue
			}
			if kind, private := PrivateAddr(netip.MustParseAddr(s)); private {
				t.Errorf("%s: PrivateAddr(%s) = %q, want public", tt.prefix, s, kind)
			}
		}
	}
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for bit := p.Bits(); bit < len(b)*8; bit++ {
		b[bit/8] |= 0x80 >> (bit % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Forms that carry an IPv4 address are judged by it.
func TestPrivateAddrEmbeddedIPv4(t *testing.T) {
	noInterfaces(t)
	for _, tt := range []struct {
		ip   string
		kind string
	}{
		{"::ffff:10.1.2.3", "private"}, // IPv4-mapped (RFC 4291 §2.5.5.2)
		{"::ffff:198.18.0.1", "benchmarking"},
		{"::ffff:8.8.8.8", ""},
		{"::10.1.2.3", "private (IPv4-compatible)"}, // RFC 4291 §2.5.5.1
		{"::127.0.0.1", "loopback (IPv4-compatible)"},
		{"::8.8.8.8", ""},
		{"::ffff:0:10.1.2.3", "private (IPv4-translated)"}, // RFC 2765 §2.1
		{"::ffff:0:169.254.169.254", "link-local (IPv4-translated)"},
		{"::ffff:0:8.8.8.8", ""},
		{"64:ff9b::10.1.2.3", "private (NAT64)"}, // RFC 6052 §2.1
		{"64:ff9b::192.0.0.170", "special-purpose (NAT64)"},
		{"64:ff9b::8.8.8.8", ""},
		{"2002:a01:203::1", "private (6to4)"}, // RFC 3056 §2: 10.1.2.3
		{"2002:7f00:1::1", "loopback (6to4)"},
		{"2002:c612:1::1", "benchmarking (6to4)"},
		{"2002:808:808::1", ""},
		// Teredo (RFC 4380 §4): the client is the inverted last 32 bits;
		// the block is refused whatever it carries.
		{"2001:0:4136:e378:8000:63bf:f5fe:fdfc", "private (Teredo)"},  // client 10.1.2.3
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback (Teredo)"}, // client 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo"},            // client 8.8.8.8
	} {
		kind, private := PrivateAddr(netip.MustParseAddr(tt.ip))
		if kind != tt.kind || private != (tt.kind != "") {
			t.Errorf("PrivateAddr(%s) = %q, %v; want %q", tt.ip, kind, private, tt.kind)
		}
	}
}

// setInterfaces makes PrivateAddr see addrs as the host's own, and counts
// how often they are listed.
func setInterfaces(t *testing.T, addrs []net.Addr, err error) (listed *atomic.Int32) {
	t.Helper()
	listed = new(atomic.Int32)
	localAddrs.mu.Lock()
	saved := localAddrs.list
	localAddrs.list = func() ([]net.Addr, error) { listed.Add(1); return addrs, err }
	localAddrs.at = time.Time{}
	localAddrs.mu.Unlock()
	t.Cleanup(func() {
		localAddrs.mu.Lock()
		localAddrs.list, localAddrs.at = saved, time.Time{}
		localAddrs.mu.Unlock()
	})
	return listed
}

// noInterfaces makes the tables alone decide, whatever addresses the test
// machine has.
func noInterfaces(t *testing.T) { setInterfaces(t, nil, nil) }

// The proxy host's own addresses reach the services on it, the proxy
// included, whatever range they are in.
func TestPrivateAddrOwnInterfaces(t *testing.T) {
	listed := setInterfaces(t, []net.Addr{
		&net.IPNet{IP: net.ParseIP("8.8.4.4"), Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: net.ParseIP("2a00:1450:4001::17"), Mask: net.CIDRMask(64, 128)},
		&net.IPAddr{IP: net.ParseIP("9.9.9.9")},
	}, nil)
	for _, tt := range []struct {
		ip   string
		kind string
	}{
		{"8.8.4.4", "local-interface"},
		{"::ffff:8.8.4.4", "local-interface"},
		{"2a00:1450:4001::17", "local-interface"},
		{"9.9.9.9", "local-interface"},
		{"64:ff9b::8.8.4.4", "local-interface (NAT64)"},
		{"8.8.4.5", ""}, // only the address, not its subnet
		{"2a00:1450:4001::18", ""},
	} {
		kind, private := PrivateAddr(netip.MustParseAddr(tt.ip))
		if kind != tt.kind || private != (tt.kind != "") {
			t.Errorf("PrivateAddr(%s) = %q, %v; want %q", tt.ip, kind, private, tt.kind)
		}
	}
	if n := listed.Load(); n != 1 {
		t.Errorf("interfaces listed %d times for one batch of checks, want once (cached)", n)
	}
	if err := denyPrivate(context.Background(), "tcp", "8.8.4.4:110", nil); !errors.Is(err, ErrDestinationDenied) ||
		!strings.Contains(err.Error(), "local-interface") {
		t.Errorf("denyPrivate(own address) = %v, want ErrDestinationDenied", err)
	}

	// If the interfaces cannot be listed, nothing public can be told from
	// the host's own addresses: refuse.
	setInterfaces(t, nil, errors.New("netlink: permission denied"))
	if kind, private := PrivateAddr(netip.MustParseAddr("8.8.8.8")); !private {
		t.Errorf("PrivateAddr with interfaces unknown = %q, %v; want refused", kind, private)
	}
}

// The machine's real interface addresses are refused.
func TestPrivateAddrRealInterfaces(t *testing.T) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("cannot list interfaces: %v", err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP)
		if kind, private := PrivateAddr(ip); !private {
			t.Errorf("PrivateAddr(%s) = %q, false; it is this host's", ip, kind)
		}
	}
}

// countingListener is an address on loopback that counts the connections
// it accepts.
func countingListener(t *testing.T) (port string, accepted *atomic.Int32) {
	t.Helper()
	accepted = new(atomic.Int32)
	addr := testinfra.ServeLoopback(t, time.Second, func(net.Conn) { accepted.Add(1) })
	_, port, _ = net.SplitHostPort(addr)
	return port, accepted
}

// TestDenyPrivate: a loopback destination is refused before the connect,
// whether it is named by address or by a name that resolves to it.
func TestDenyPrivate(t *testing.T) {
	port, accepted := countingListener(t)
	for _, host := range []string{"127.0.0.1", "localhost", "[::ffff:127.0.0.1]"} {
		addr := host + ":" + port
		_, err := Dial(context.Background(), addr, "", Options{DenyPrivate: true, DialTimeout: 2 * time.Second})
		if !errors.Is(err, ErrDestinationDenied) || !errors.Is(err, ErrConnection) {
			t.Errorf("Dial(%s) = %v, want ErrDestinationDenied and ErrConnection", addr, err)
			continue
		}
		if !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Dial(%s) = %v, want the reason named", addr, err)
		}
	}
	// Any connection would have been accepted by now: Dial returns only
	// after its connect attempt.
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load(); n != 0 {
		t.Fatalf("%d connections reached a refused destination", n)
	}
}

func TestDenyPrivateOff(t *testing.T) {
	srv := pop3test.NewServer(t, greeting+"S!next\n"+greeting)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		_, port, _ := net.SplitHostPort(srv.Addr())
		c, err := Dial(context.Background(), net.JoinHostPort(host, port), "", Options{DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatalf("Dial(%s) without DenyPrivate: %v", host, err)
		}
		c.Abort()
	}
	srv.Wait(t)
}

func TestDenyPrivateControl(t *testing.T) {
	noInterfaces(t)
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"8.8.8.8:110", true},
		{"[2a00:1450:4001::1]:995", true},
		{"[2001:db8::1]:995", false},
		{"127.0.0.1:110", false},
		{"[fe80::1%lo]:110", false},
		{"[::ffff:169.254.169.254]:80", false},
		{"pop.example.com:110", false}, // not resolved: cannot be checked
		{"", false},
	} {
		err := denyPrivate(context.Background(), "tcp", tt.addr, nil)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrDestinationDenied)) {
			t.Errorf("denyPrivate(%q) = %v, want ok=%v", tt.addr, err, tt.ok)
		}
	}
}
