package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestOverridesLookup(t *testing.T) {
	o, err := NewOverrides([]Override{
		{Match: "legacy.example.com:110", TLS: ptr(TLSNone)},
		{Match: "*.example.com:*", TLS: ptr(TLSImplicit)},
		{Match: "[2001:DB8::*]:995", InsecureSkipVerify: ptr(true)},
		{Match: "*:110", TLS: ptr(TLSStartTLS)},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr  string
		match string // "" for none
	}{
		{"legacy.example.com:110", "legacy.example.com:110"}, // first match wins over *.example.com and *:110
		{"LEGACY.Example.com:110", "legacy.example.com:110"},
		{"legacy.example.com:995", "*.example.com:*"},
		{"pop.example.com:110", "*.example.com:*"},
		{"[2001:db8:0:0::1]:995", "[2001:DB8::*]:995"}, // compared canonically
		{"[2001:db8::1]:110", "*:110"},
		{"pop.example.net:110", "*:110"},
		{"pop.example.net:995", ""},
		{"example.com:995", ""},
		{"not an address", ""},
	}
	for _, tt := range tests {
		got, ok := o.Lookup(tt.addr)
		if ok != (tt.match != "") || got.Match != tt.match {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tt.addr, got.Match, ok, tt.match)
		}
	}
	var none *Overrides
	if _, ok := none.Lookup("pop.example.com:110"); ok {
		t.Error("a nil *Overrides matched")
	}
	empty, err := NewOverrides(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := empty.Lookup("pop.example.com:110"); ok {
		t.Error("an empty *Overrides matched")
	}
}

func TestNewOverridesErrors(t *testing.T) {
	for _, o := range []Override{
		{Match: ""},
		{Match: "pop.example.com"}, // no port
		{Match: "[::1]"},
		{Match: "*:110", TLS: ptr(TLSMode(9))},
	} {
		if _, err := NewOverrides([]Override{{Match: "*:995"}, o}); err == nil {
			t.Errorf("NewOverrides(%+v) succeeded", o)
		}
	}
	if _, err := NewOverrides([]Override{{Match: "a[b:110"}}); !errors.Is(err, path.ErrBadPattern) {
		t.Errorf("err = %v, want path.ErrBadPattern", err)
	}
}

func TestOverrideApply(t *testing.T) {
	pool := x509.NewCertPool()
	basePool := x509.NewCertPool()
	base := Options{TLS: TLSAuto, TLSConfig: &tls.Config{RootCAs: basePool, MinVersion: tls.VersionTLS12}}

	if got := (Override{Match: "*:*"}).Apply(base); got.TLS != TLSAuto || got.TLSConfig != base.TLSConfig || got.InsecureSkipVerify {
		t.Errorf("an empty override changed %+v", got)
	}

	got := Override{TLS: ptr(TLSNone), RootCAs: pool, InsecureSkipVerify: ptr(true)}.Apply(base)
	if got.TLS != TLSNone || !got.InsecureSkipVerify {
		t.Errorf("TLS %v, InsecureSkipVerify %v", got.TLS, got.InsecureSkipVerify)
	}
	if got.TLSConfig == base.TLSConfig || got.TLSConfig.RootCAs != pool || got.TLSConfig.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLSConfig %+v, want a clone with the override's pool", got.TLSConfig)
	}
	if base.TLSConfig.RootCAs != basePool {
		t.Error("Apply modified the defaults' TLSConfig")
	}

	if got := (Override{RootCAs: pool}).Apply(Options{}); got.TLSConfig == nil || got.TLSConfig.RootCAs != pool {
		t.Errorf("RootCAs without a base TLSConfig: %+v", got.TLSConfig)
	}

	// false wins over the defaults, wherever they set it.
	insecure := Options{InsecureSkipVerify: true, TLSConfig: &tls.Config{InsecureSkipVerify: true}}
	got = Override{InsecureSkipVerify: ptr(false)}.Apply(insecure)
	if got.InsecureSkipVerify || got.TLSConfig.InsecureSkipVerify {
		t.Errorf("InsecureSkipVerify false left verification off: %v, %v", got.InsecureSkipVerify, got.TLSConfig.InsecureSkipVerify)
	}
	if !insecure.TLSConfig.InsecureSkipVerify {
		t.Error("Apply modified the defaults' TLSConfig")
	}
}
