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
