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

	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

func TestPrivateAddr(t *testing.T) {
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
		{"::7f00:1", "IPv4-compatible"},
		{"64:ff9b::7f00:1", "loopback (NAT64)"},
		{"64:ff9b::a00:1", "private (NAT64)"},
		// Public.
		{"192.0.2.1", ""},
		{"8.8.8.8", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"169.253.255.255", ""},
		{"1.0.0.0", ""},
		{"223.255.255.255", ""},
		{"2001:db8::1", ""},
		{"2a00:1450:4001::1", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""},
		{"fe00::1", ""},
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

// countingListener is an address on loopback that counts the connections
// it accepts.
func countingListener(t *testing.T) (port string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	_, port, _ = net.SplitHostPort(ln.Addr().String())
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
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"192.0.2.1:110", true},
		{"[2001:db8::1]:995", true},
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
