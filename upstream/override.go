package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// Override, an entry of upstream.destinations, changes the TLS settings of
// the destinations it matches; a nil field keeps the default.
type Override struct {
	Match string   // a "host:port" pattern as in AllowList
	TLS   *TLSMode // replaces Options.TLS
	// RootCAs replaces Options.TLSConfig.RootCAs. It is the whole set the
	// certificate is checked against, so a pool meant to add a private CA
	// should start from x509.SystemCertPool.
	RootCAs *x509.CertPool
	// InsecureSkipVerify replaces Options'; false also clears it in TLSConfig.
	InsecureSkipVerify *bool
}

// Apply returns opt overridden; opt.TLSConfig is cloned, never modified.
func (o Override) Apply(opt Options) Options {
	if o.TLS != nil {
		opt.TLS = *o.TLS
	}
	if o.InsecureSkipVerify != nil {
		opt.InsecureSkipVerify = *o.InsecureSkipVerify
	}
	clearSkip := o.InsecureSkipVerify != nil && !*o.InsecureSkipVerify &&
		opt.TLSConfig != nil && opt.TLSConfig.InsecureSkipVerify
	if o.RootCAs != nil || clearSkip {
		cfg := &tls.Config{}
		if opt.TLSConfig != nil {
			cfg = opt.TLSConfig.Clone()
		}
		if o.RootCAs != nil {
			cfg.RootCAs = o.RootCAs
		}
		if clearSkip {
			cfg.InsecureSkipVerify = false
		}
		opt.TLSConfig = cfg
	}
	return opt
}

// Overrides picks the first matching Override; a nil *Overrides matches nothing.
type Overrides struct {
	list     []Override
	patterns []hostPortPattern
}

// NewOverrides fails on a pattern AllowList would refuse or a bad TLS mode.
func NewOverrides(list []Override) (*Overrides, error) {
	o := &Overrides{}
	for i, ov := range list {
		p, err := parseHostPortPattern(ov.Match)
		if err != nil {
			return nil, fmt.Errorf("destination override %d: pattern %q: %w", i, ov.Match, err)
		}
		if ov.TLS != nil {
			if _, _, err := planTLS(*ov.TLS, DefaultPort); err != nil {
				return nil, fmt.Errorf("destination override %d (%s): %w", i, ov.Match, err)
			}
		}
		o.list = append(o.list, ov)
		o.patterns = append(o.patterns, p)
	}
	return o, nil
}

// Lookup returns the first Override matching addr (as Route.Addr returns it).
func (o *Overrides) Lookup(addr string) (Override, bool) {
	if o == nil {
		return Override{}, false
	}
	t, ok := parseTarget(addr)
	if !ok {
		return Override{}, false
	}
	for i, p := range o.patterns {
		if p.match(t) {
			return o.list[i], true
		}
	}
	return Override{}, false
}
