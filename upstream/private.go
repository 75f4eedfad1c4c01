package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// ErrDestinationDenied is wrapped, together with ErrConnection, by Dial's
// error when Options.DenyPrivate refused the destination. Nothing was sent.
var ErrDestinationDenied = errors.New("destination address not allowed")

type special struct {
	prefix netip.Prefix
	kind   string
}

func block(prefix, kind string) special { return special{netip.MustParsePrefix(prefix), kind} }

// specialV4 is the IANA IPv4 Special-Purpose Address Registry (RFC 6890
// §2.2.2 and the RFCs cited, as of 2025) plus multicast, all refused, even
// entries marked globally reachable (anycast in 192.0.0.0/24, AS112): no
// POP3 server lives there. 192.0.0.0/24 covers RFC 7335, 7600, 7723, 8155, 8880.
var specialV4 = []special{
	block("0.0.0.0/8", "unspecified"),           // RFC 791 §3.2; Linux connects 0.0.0.0 to the local host
	block("10.0.0.0/8", "private"),              // RFC 1918
	block("100.64.0.0/10", "shared"),            // RFC 6598, carrier-grade NAT (and Tailscale)
	block("127.0.0.0/8", "loopback"),            // RFC 1122 §3.2.1.3
	block("169.254.0.0/16", "link-local"),       // RFC 3927, cloud metadata services
	block("172.16.0.0/12", "private"),           // RFC 1918
	block("192.0.0.0/24", "special-purpose"),    // RFC 6890 §2.1, IETF protocol assignments
	block("192.0.2.0/24", "documentation"),      // RFC 5737 TEST-NET-1
	block("192.31.196.0/24", "special-purpose"), // RFC 7535, AS112-v4
	block("192.52.193.0/24", "special-purpose"), // RFC 7450, AMT
	block("192.88.99.0/24", "special-purpose"),  // RFC 7526, deprecated 6to4 relay anycast
	block("192.168.0.0/16", "private"),          // RFC 1918
	block("192.175.48.0/24", "special-purpose"), // RFC 7534, AS112 direct delegation
	block("198.18.0.0/15", "benchmarking"),      // RFC 2544
	block("198.51.100.0/24", "documentation"),   // RFC 5737 TEST-NET-2
	block("203.0.113.0/24", "documentation"),    // RFC 5737 TEST-NET-3
	block("224.0.0.0/4", "multicast"),           // RFC 5771
	block("240.0.0.0/4", "reserved"),            // RFC 1112 §4, with the limited broadcast 255.255.255.255/32 (RFC 919 §7, RFC 8190)
}

// specialV6 is the IANA IPv6 Special-Purpose Address Registry (RFC 6890
// §2.2.3, the RFCs cited, as of 2025) in lookup order, plus RFC 4291's other
// blocks bar those carrying IPv4 (embeddedIPv4). The rest outside 2000::/3,
// no global unicast (RFC 4291 §2.4, IANA IPv6 Address Space), is refused.
var specialV6 = []special{
	block("::/128", "unspecified"),             // RFC 4291 §2.5.2
	block("::1/128", "loopback"),               // RFC 4291 §2.5.3
	block("64:ff9b:1::/48", "local-use NAT64"), // RFC 8215
	block("100::/64", "discard-only"),          // RFC 6666
	block("2001:2::/48", "benchmarking"),       // RFC 5180
	// The rest of 2001::/23, RFC 2928: Teredo (2001::/32, RFC 4380, before this
	// list), PCP, TURN, DNS-SD anycast (RFC 7723, 8155, 9665), AMT (2001:3::/32,
	// RFC 7450), AS112 (2001:4:112::/48, RFC 7535), ORCHID (2001:10::/28, RFC
	// 4843), ORCHIDv2 (2001:20::/28, RFC 7343), DETs (2001:30::/28, RFC 9374).
	block("2001::/23", "special-purpose"),
	block("2001:db8::/32", "documentation"),       // RFC 3849
	block("2620:4f:8000::/48", "special-purpose"), // RFC 7534, AS112 direct delegation
	block("3fff::/20", "documentation"),           // RFC 9637
	block("5f00::/16", "segment-routing"),         // RFC 9602, SRv6 SIDs
	block("fc00::/7", "private"),                  // RFC 4193 unique local
	block("fe80::/10", "link-local"),              // RFC 4291 §2.5.6
	block("fec0::/10", "site-local"),              // RFC 3879, deprecated
	block("ff00::/8", "multicast"),                // RFC 4291 §2.7
}

var (
	globalUnicast = netip.MustParsePrefix("2000::/3")
	teredo        = netip.MustParsePrefix("2001::/32")
	v4Compatible  = netip.MustParsePrefix("::/96")           // RFC 4291 §2.5.5.1, deprecated
	v4Translated  = netip.MustParsePrefix("::ffff:0:0:0/96") // RFC 2765 §2.1 (SIIT)
	nat64         = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052 §2.1
	sixToFour     = netip.MustParsePrefix("2002::/16")       // RFC 3056 §2: the IPv4 address in bits 16-47
)

// PrivateAddr reports whether Options.DenyPrivate refuses ip, and its kind
// for logs: a block of the IANA Special-Purpose Address Registries (RFC 6890
// and later), multicast, IPv6 outside 2000::/3, Teredo (always), or
// local-interface (the proxy host's own address, which reaches the services
// on it). Forms carrying an IPv4 address are judged by it, the form added to
// the kind, as in "loopback (NAT64)": IPv4-mapped (without the suffix),
// IPv4-compatible, IPv4-translated, NAT64 (64:ff9b::/96) and 6to4. A zone is
// ignored. The host's addresses are cached for a few seconds; if
// net.InterfaceAddrs fails, every address is refused.
func PrivateAddr(ip netip.Addr) (kind string, private bool) {
	if !ip.IsValid() {
		return "invalid", true
	}
	ip = ip.WithZone("").Unmap()
	if kind := specialKind(ip); kind != "" {
		return kind, true
	}
	if own, err := localAddrs.has(ip); err != nil {
		return "unverifiable (cannot list this host's addresses)", true
	} else if own {
		return "local-interface", true
	}
	if v4, form, ok := embeddedIPv4(ip); ok {
		if kind, private := PrivateAddr(v4); private {
			return kind + " (" + form + ")", true
		}
	}
	return "", false
}

// specialKind returns the kind of ip's special block (IPv4 unmapped), or "".
func specialKind(ip netip.Addr) string {
	list := specialV4
	if ip.Is6() {
		if teredo.Contains(ip) {
			// RFC 4380 §4: the client's IPv4 address, inverted, for the log.
			b := ip.As16()
			client := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
			if kind, private := PrivateAddr(client); private {
				return kind + " (Teredo)"
			}
			return "Teredo"
		}
		list = specialV6
	}
	for _, s := range list {
		if s.prefix.Contains(ip) {
			return s.kind
		}
	}
	if ip.Is6() && !globalUnicast.Contains(ip) {
		if _, _, ok := embeddedIPv4(ip); !ok {
			return "reserved"
		}
	}
	return ""
}

// embeddedIPv4 expects IPv4-mapped addresses unmapped already.
func embeddedIPv4(ip netip.Addr) (v4 netip.Addr, form string, ok bool) {
	if !ip.Is6() {
		return netip.Addr{}, "", false
	}
	b := ip.As16()
	last := netip.AddrFrom4([4]byte(b[12:]))
	switch {
	case v4Compatible.Contains(ip):
		return last, "IPv4-compatible", true
	case v4Translated.Contains(ip):
		return last, "IPv4-translated", true
	case nat64.Contains(ip):
		return last, "NAT64", true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), "6to4", true
	}
	return netip.Addr{}, "", false
}

// interfaceCache lists the host's addresses at most once per ttl, not per dial.
type interfaceCache struct {
	mu    sync.Mutex
	list  func() ([]net.Addr, error) // net.InterfaceAddrs; tests replace it
	ttl   time.Duration
	at    time.Time // when addrs was listed; zero for never
	addrs map[netip.Addr]struct{}
	err   error
}

var localAddrs = &interfaceCache{list: net.InterfaceAddrs, ttl: 5 * time.Second}

// has expects ip unmapped and without zone.
func (c *interfaceCache) has(ip netip.Addr) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= c.ttl {
		c.refresh()
	}
	if c.err != nil {
		return false, c.err
	}
	_, ok := c.addrs[ip]
	return ok, nil
}

func (c *interfaceCache) refresh() {
	c.at = time.Now()
	list, err := c.list()
	if err != nil {
		c.addrs, c.err = nil, fmt.Errorf("listing interface addresses: %w", err)
		return
	}
	c.addrs, c.err = make(map[netip.Addr]struct{}, len(list)), nil
	for _, a := range list {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if addr, ok := netip.AddrFromSlice(ip); ok {
			c.addrs[addr.Unmap()] = struct{}{}
		}
	}
}

// denyPrivate is the net.Dialer's ControlContext under Options.DenyPrivate.
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
