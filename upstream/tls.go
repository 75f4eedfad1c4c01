package upstream

import (
	"crypto/tls"
	"fmt"
	"strconv"
	"strings"
)

// TLSMode is how Dial secures the connection to the upstream server.
type TLSMode int

const (
	// TLSNone is plain POP3: the password crosses the network in clear.
	TLSNone TLSMode = iota
	// TLSImplicit starts TLS on connect (POP3S, port 995), as RFC 8314 §3 prefers.
	TLSImplicit
	// TLSStartTLS upgrades with STLS (RFC 2595 §4), failing if CAPA lacks it.
	TLSStartTLS
	// TLSAuto uses implicit TLS on port 995, elsewhere STLS if CAPA offers it,
	// else plain text. An attacker on the path can strip STLS from CAPA, so
	// prefer TLSStartTLS or TLSImplicit for servers known to support TLS.
	TLSAuto
)

var tlsModeNames = [...]string{TLSNone: "none", TLSImplicit: "implicit", TLSStartTLS: "starttls", TLSAuto: "auto"}

// String returns the name ParseTLSMode accepts.
func (m TLSMode) String() string {
	if m >= 0 && int(m) < len(tlsModeNames) {
		return tlsModeNames[m]
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// ParseTLSMode parses "none", "implicit", "starttls" or "auto", in any case.
func ParseTLSMode(s string) (TLSMode, error) {
	for m, name := range tlsModeNames {
		if strings.EqualFold(s, name) {
			return TLSMode(m), nil
		}
	}
	return 0, fmt.Errorf("unknown upstream TLS mode %q (want none, implicit, starttls or auto)", s)
}

// MarshalText implements encoding.TextMarshaler, for configuration files.
func (m TLSMode) MarshalText() ([]byte, error) {
	if m < 0 || int(m) >= len(tlsModeNames) {
		return nil, fmt.Errorf("invalid upstream TLS mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseTLSMode.
func (m *TLSMode) UnmarshalText(b []byte) error {
	v, err := ParseTLSMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

type stlsPolicy uint8

const (
	stlsNever stlsPolicy = iota
	stlsIfOffered
	stlsRequired
)

const implicitTLSPort = 995 // POP3S (RFC 8314 §3)

// planTLS is apart from Dial to test TLSAuto on 995, a port tests cannot bind.
func planTLS(mode TLSMode, port int) (implicit bool, stls stlsPolicy, err error) {
	switch mode {
	case TLSNone:
		return false, stlsNever, nil
	case TLSImplicit:
		return true, stlsNever, nil
	case TLSStartTLS:
		return false, stlsRequired, nil
	case TLSAuto:
		if port == implicitTLSPort {
			return true, stlsNever, nil
		}
		return false, stlsIfOffered, nil
	}
	return false, stlsNever, fmt.Errorf("%w: TLS mode %d", ErrBadArgument, int(mode))
}

// clientTLSConfig's serverName may be an IP address.
func clientTLSConfig(base *tls.Config, serverName string, insecure bool) *tls.Config {
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverName
	}
	if insecure {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}
