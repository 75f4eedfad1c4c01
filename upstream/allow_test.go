package upstream

import (
	"errors"
	"path"
	"testing"
)

func TestAllowList(t *testing.T) {
	a, err := NewAllowList([]string{
		"*:110",
		"*.example.com:995",
		"[::1]:110",
		"[2001:DB8::*]:995",
		"192.0.2.?:1110",
		"POP.Example.NET:*",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want bool
	}{
		{"pop.anything.org:110", true},
		{"192.0.2.1:110", true},
		{"[2001:db8::5]:110", true}, // "*" matches an IPv6 host too
		{"pop.anything.org:995", false},
		{"pop.example.com:995", true},
		{"POP.EXAMPLE.COM:995", true},
		{"a.b.example.com:995", true},
		{"example.com:995", false},
		{"pop.example.com.evil.org:995", false},
		{"pop.example.com:9950", false},
		{"[::1]:110", true},
		{"[0:0:0:0:0:0:0:1]:110", true}, // compared canonically
		{"[::1]:995", false},
		{"[2001:db8::42]:995", true},
		{"[2001:db8:0:0::1:42]:995", true},
		{"[2001:db9::1]:995", false},
		{"192.0.2.7:1110", true},
		{"192.0.2.17:1110", false},
		{"pop.example.net:4242", true},
		{"pop.example.net.:4242", false},
		{"not an address", false},
		{"host:", false},
		{":110", false},
	}
	for _, tt := range tests {
		if got := a.Allows(tt.addr); got != tt.want {
			t.Errorf("Allows(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	// Route.Addr output is what the gateway passes.
	r, err := ParseLogin("u@[2001:db8:0:0::1]:110", "@", "", DefaultPort)
	if err != nil || !a.Allows(r.Addr()) {
		t.Errorf("Allows(%q) = false (%v)", r.Addr(), err)
	}
}

func TestAllowListEmptyAllowsAll(t *testing.T) {
	var nilList *AllowList
	empty, err := NewAllowList(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []*AllowList{nilList, empty} {
		if !a.Allows("anything.example:12345") {
			t.Error("an empty list refused an address")
		}
	}
}

func TestAllowListBadPatterns(t *testing.T) {
	for _, p := range []string{"[:110", "host:[", "*.example.com", "", ":110", "host:", `host:\`, "[::1]", "[::1]110"} {
		if _, err := NewAllowList([]string{"*:110", p}); err == nil {
			t.Errorf("NewAllowList(%q) succeeded", p)
		}
	}
	if _, err := NewAllowList([]string{"a[b:110"}); !errors.Is(err, path.ErrBadPattern) {
		t.Errorf("err = %v, want path.ErrBadPattern", err)
	}
}

// A pattern that looks like an IP address matches only IP literals: a name
// such as 127.0.0.evil.test, which its owner can point anywhere, must not
// pass for 127.0.0.*. IPv4-mapped IPv6 literals are matched as IPv4.
func TestAllowListIPPatternsMatchOnlyIPLiterals(t *testing.T) {
	a, err := NewAllowList([]string{
		"127.0.0.*:110",
		"192.0.2.*:110",
		"10.?.0.1:*",
		"*.*.*.*:143",
		"[2001:db8::*]:995",
		"*.example.com:995",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:110", true},
		{"127.0.0.evil.test:110", false},
		{"127.0.0.1.evil.test:110", false},
		{"[::ffff:127.0.0.1]:110", true},
		{"192.0.2.7:110", true},
		{"192.0.2.evil.test:110", false},
		{"192.0.2.7:111", false},
		{"10.1.0.1:4242", true},
		{"10.x.0.1:4242", false},
		{"10.1.0.1.nip.io:4242", false},
		{"198.51.100.7:143", true},
		{"mail.pop.example.com:143", false},
		{"[2001:db8::1]:995", true},
		{"pop.example.com:995", true}, // name patterns match names, as before
		{"POP.EXAMPLE.COM:995", true},
	} {
		if got := a.Allows(tt.addr); got != tt.want {
			t.Errorf("Allows(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	// The same holds for upstream.destinations, where a match may turn off
	// certificate checks.
	o, err := NewOverrides([]Override{{Match: "192.0.2.*:995", InsecureSkipVerify: ptr(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := o.Lookup("192.0.2.evil.test:995"); ok {
		t.Error("override for 192.0.2.*:995 applies to the name 192.0.2.evil.test")
	}
	if _, ok := o.Lookup("192.0.2.9:995"); !ok {
		t.Error("override for 192.0.2.*:995 does not apply to 192.0.2.9")
	}
}

// CIDR patterns match IP literals by containment, IPv4-mapped IPv6 as IPv4.
func TestAllowListCIDR(t *testing.T) {
	a, err := NewAllowList([]string{
		"192.0.2.0/24:110",
		"10.0.0.0/8:*",
		"198.51.100.77/32:995",
		"[2001:db8::/32]:995",
		"[2001:DB8:0:0:1::/80]:110",
		"[::ffff:203.0.113.0/120]:110",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"192.0.2.0:110", true},
		{"192.0.2.255:110", true},
		{"192.0.3.0:110", false},
		{"192.0.1.255:110", false},
		{"192.0.2.1:111", false},
		{"[::ffff:192.0.2.9]:110", true},
		{"192.0.2.0.evil.test:110", false},
		{"10.255.255.255:4242", true},
		{"11.0.0.0:4242", false},
		{"10.example.com:110", false},
		{"198.51.100.77:995", true},
		{"198.51.100.78:995", false},
		{"[2001:db8:ffff::1]:995", true},
		{"[2001:db9::1]:995", false},
		{"[2001:db8::1]:110", false},
		{"[2001:db8::1:0:0:1]:110", true},
		{"203.0.113.5:110", true}, // the mapped prefix is an IPv4 one
		{"[::ffff:203.0.113.5]:110", true},
	} {
		if got := a.Allows(tt.addr); got != tt.want {
			t.Errorf("Allows(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	for _, p := range []string{
		"192.0.2.0/33:110",
		"[2001:db8::/129]:995",
		"192.0.2.0/24",         // no port
		"[192.0.2.0/24]:110",   // IPv4 goes without brackets
		"2001:db8::/32:995",    // IPv6 goes in brackets
		"example.com/24:110",   // not an address
		"192.0.2.*/24:110",     // not a glob
		"[2001:db8::/32]995",   // no ':' before the port
		"192.0.2.0/24:[",       // bad port glob
		"[2001:db8::*/32]:995", // not a glob either
		"::1:110",              // IPv6 goes in brackets
		"2001:db8::*:995",
	} {
		if _, err := NewAllowList([]string{p}); err == nil {
			t.Errorf("NewAllowList(%q) succeeded", p)
		}
	}
}
