package testinfra

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var defaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// PKI is a throwaway CA and a server certificate it signed. ECDSA P-256
// keeps generation to about a millisecond, so every test and every daemon
// gets its own CA and no key material is checked in.
type PKI struct {
	// CA, Cert and Key are PEM files (set by NewPKI and WritePKI only).
	CA, Cert, Key string
	// Pool trusts the CA and nothing else, for a client's RootCAs.
	Pool *x509.CertPool
	// Server serves the certificate, for a Go server under test.
	Server *tls.Config
}

// NewTLS returns a server configuration with a certificate for hosts (default
// localhost, 127.0.0.1 and ::1) and a pool trusting only its CA.
func NewTLS(t testing.TB, hosts ...string) (server *tls.Config, roots *x509.CertPool) {
	t.Helper()
	if len(hosts) == 0 {
		hosts = defaultHosts
	}
	p, _, err := generate(hosts[0], hosts)
	if err != nil {
		t.Fatal(err)
	}
	return p.Server, p.Pool
}

// NewPKI writes a PKI into the test's temp dir, with a certificate for name
// (also its common name, to tell them apart), localhost, 127.0.0.1 and ::1.
func NewPKI(t testing.TB, name string) PKI {
	t.Helper()
	p, err := WritePKI(t.TempDir(), name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// WritePKI is NewPKI into dir, for daemons started outside a test's lifetime.
func WritePKI(dir, name string) (PKI, error) {
	p, ders, err := generate(name, append([]string{name}, defaultHosts...))
	if err != nil {
		return PKI{}, err
	}
	p.CA = filepath.Join(dir, "ca.pem")
	p.Cert = filepath.Join(dir, "server.pem")
	p.Key = filepath.Join(dir, "server.key")
	for _, w := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{p.CA, "CERTIFICATE", ders.ca, 0o644},
		{p.Cert, "CERTIFICATE", ders.cert, 0o644},
		{p.Key, "PRIVATE KEY", ders.key, 0o600},
	} {
		data := pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: w.der})
		if err := os.WriteFile(w.path, data, w.mode); err != nil {
			return PKI{}, fmt.Errorf("write %s: %w", w.path, err)
		}
	}
	return p, nil
}

type derFiles struct{ ca, cert, key []byte }

func generate(cn string, hosts []string) (PKI, derFiles, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PKI{}, derFiles{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pop3proxy test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return PKI{}, derFiles{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return PKI{}, derFiles{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return PKI{}, derFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range slices.Compact(slices.Clone(hosts)) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return PKI{}, derFiles{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return PKI{}, derFiles{}, err
	}
	p := PKI{
		Pool:   x509.NewCertPool(),
		Server: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
	}
	p.Pool.AddCert(ca)
	return p, derFiles{ca: caDER, cert: der, key: keyDER}, nil
}
