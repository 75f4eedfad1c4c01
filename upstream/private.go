package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrDestinationDenied is wrapped, together with ErrConnection, by Dial's
// error when Options.DenyPrivate refused the destination. Nothing was sent.
var ErrDestinationDenied = errors.New("destination address not allowed")

var (
	thisNetwork  = netip.MustParsePrefix("0.0.0.0/8")     // RFC 791; Linux connects 0.0.0.0 to the local host
	sharedSpace  = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598, carrier-grade NAT (and Tailscale)
	reservedV4   = netip.MustParsePrefix("240.0.0.0/4")   // RFC 1112, with 255.255.255.255
	siteLocal    = netip.MustParsePrefix("fec0::/10")     // RFC 3879, deprecated
	v4Compatible = netip.MustParsePrefix("::/96")         // RFC 4291 §2.5.5.1, deprecated
	nat64        = netip.MustParsePrefix("64:ff9b::/96")  // RFC 6052, IPv4 in the last 32 bits
)

// PrivateAddr reports whether Options.DenyPrivate refuses ip, and names its
// kind for logs: loopback, link-local, private, unspecified, multicast,
// shared, reserved, site-local or IPv4-compatible. IPv4-mapped and NAT64
// addresses are judged by the IPv4 address they carry; a zone is ignored.
func PrivateAddr(ip netip.Addr) (kind string, private bool) {
	if !ip.IsValid() {
		return "invalid", true
	}
	ip = ip.WithZone("").Unmap()
	switch {
	case ip.IsUnspecified() || thisNetwork.Contains(ip):
		return "unspecified", true
	case ip.IsLoopback():
		return "loopback", true
	case ip.IsLinkLocalUnicast():
		return "link-local", true
	case ip.IsPrivate():
		return "private", true
	case ip.IsMulticast():
		return "multicast", true
	case sharedSpace.Contains(ip):
		return "shared", true
	case reservedV4.Contains(ip):
		return "reserved", true
	case siteLocal.Contains(ip):
		return "site-local", true
	case v4Compatible.Contains(ip):
		return "IPv4-compatible", true
	case nat64.Contains(ip):
		b := ip.As16()
		if kind, private := PrivateAddr(netip.AddrFrom4([4]byte(b[12:]))); private {
			return kind + " (NAT64)", true
		}
	}
	return "", false
}

// denyPrivate is the net.Dialer's ControlContext under Options.DenyPrivate.
// An address it cannot parse is refused too.
func denyPrivate(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot check address %q", ErrDestinationDenied, address)
	}
	if kind, private := PrivateAddr(ap.Addr()); private {
		return fmt.Errorf("%w: %s is a %s address (upstream.allow_private)", ErrDestinationDenied, ap.Addr(), kind)
	}
	return nil
}
