package app

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// testPair is a self-signed certificate with its key, PEM-encoded.
type testPair struct {
	name      string // the certificate's common name
	cert, key []byte
	x509      *x509.Certificate
}

func newTestPair(t *testing.T, name string) testPair {
	t.Helper()
	pki := testinfra.NewPKI(t, name)
	p := testPair{name: name}
	var err error
	if p.cert, err = os.ReadFile(pki.Cert); err != nil {
		t.Fatal(err)
	}
	if p.key, err = os.ReadFile(pki.Key); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(p.cert)
	if p.x509, err = x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	return p
}

// replaceFile writes data to a temporary file and renames it over path, as
// certificate tools do.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// reloaderFixture is a certReloader on files in a temp dir with a manual
// clock and observed logs.
type reloaderFixture struct {
	r                 *certReloader
	certFile, keyFile string
	logs              *observer.ObservedLogs
	clockMu           sync.Mutex
	clock             time.Time
}

func newReloaderFixture(t *testing.T, p testPair) *reloaderFixture {
	t.Helper()
	dir := t.TempDir()
	f := &reloaderFixture{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	replaceFile(t, f.certFile, p.cert)
	replaceFile(t, f.keyFile, p.key)
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	r, err := newCertReloader(f.certFile, f.keyFile, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	f.r.mu.Lock()
	f.clock = r.lastCheck
	f.r.now = func() time.Time {
		f.clockMu.Lock()
		defer f.clockMu.Unlock()
		return f.clock
	}
	f.r.mu.Unlock()
	return f
}

func (f *reloaderFixture) advance(d time.Duration) {
	f.clockMu.Lock()
	f.clock = f.clock.Add(d)
	f.clockMu.Unlock()
}

// serving returns the common name of the certificate GetCertificate returns.
func (f *reloaderFixture) serving(t *testing.T) string {
	t.Helper()
	c, err := f.r.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || c == nil {
		t.Fatalf("GetCertificate = %v, %v", c, err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func (f *reloaderFixture) errorLogs() int {
	return f.logs.FilterLevelExact(zap.ErrorLevel).Len()
}

func TestCertReloaderReloadsAfterRename(t *testing.T) {
	a, b := newTestPair(t, "a.example"), newTestPair(t, "b.example")
	f := newReloaderFixture(t, a)
	if got := f.serving(t); got != "a.example" {
		t.Fatalf("serving %s, want a.example", got)
	}
	replaceFile(t, f.certFile, b.cert)
	replaceFile(t, f.keyFile, b.key)
	f.advance(certCheckInterval / 2)
	if got := f.serving(t); got != "a.example" {
		t.Errorf("serving %s half a second after the change, want a.example (checks at most once a second)", got)
	}
	f.advance(certCheckInterval / 2)
	if got := f.serving(t); got != "b.example" {
		t.Fatalf("serving %s after the check interval, want b.example", got)
	}
	if f.logs.FilterMessage("TLS certificate reloaded").Len() != 1 || f.errorLogs() != 0 {
		t.Errorf("logs: %v", f.logs.All())
	}
	// Unchanged files are not loaded again.
	f.advance(certCheckInterval)
	f.serving(t)
	if n := f.logs.FilterMessage("TLS certificate reloaded").Len(); n != 1 {
		t.Errorf("%d reloads, want 1", n)
	}
}

func TestCertReloaderReloadsRewrittenFiles(t *testing.T) {
	a, b := newTestPair(t, "a.example"), newTestPair(t, "b.example")
	f := newReloaderFixture(t, a)
	// Rewritten in place (same inode); make sure the modification time
	// differs even on file systems with coarse timestamps.
	for _, w := range []struct {
		path string
		data []byte
	}{{f.certFile, b.cert}, {f.keyFile, b.key}} {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(w.path, later, later); err != nil {
			t.Fatal(err)
		}
	}
	f.advance(certCheckInterval)
	if got := f.serving(t); got != "b.example" {
		t.Fatalf("serving %s, want b.example", got)
	}
}

func TestCertReloaderKeepsOldCertificateOnBrokenFiles(t *testing.T) {
	a, c := newTestPair(t, "a.example"), newTestPair(t, "c.example")
	f := newReloaderFixture(t, a)
	replaceFile(t, f.certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"))
	for i := range 5 {
		f.advance(certCheckInterval)
		if got := f.serving(t); got != "a.example" {
			t.Fatalf("check %d: serving %s, want the previous a.example", i, got)
		}
	}
	errs := f.logs.FilterLevelExact(zap.ErrorLevel).All()
	if len(errs) != 1 {
		t.Fatalf("%d error logs over 5 checks of one broken change, want 1: %v", len(errs), f.logs.All())
	}
	if msg := errs[0].ContextMap()["error"]; !strings.Contains(msg.(string), f.certFile) {
		t.Errorf("error %q does not name %s", msg, f.certFile)
	}

	// A second broken change is reported again.
	if err := os.Remove(f.keyFile); err != nil {
		t.Fatal(err)
	}
	f.advance(certCheckInterval)
	f.serving(t)
	f.advance(certCheckInterval)
	if got := f.serving(t); got != "a.example" {
		t.Fatalf("serving %s with the key missing, want a.example", got)
	}
	if n := f.errorLogs(); n != 2 {
		t.Errorf("%d error logs after a second broken change, want 2", n)
	}

	// Fixed files are picked up.
	replaceFile(t, f.certFile, c.cert)
	replaceFile(t, f.keyFile, c.key)
	f.advance(certCheckInterval)
	if got := f.serving(t); got != "c.example" {
		t.Fatalf("serving %s after the fix, want c.example", got)
	}
}

// Replacing the certificate and then the key passes through a state where
// they do not match; that is not an error worth logging.
func TestCertReloaderPairReplacedOneFileAtATime(t *testing.T) {
	a, b := newTestPair(t, "a.example"), newTestPair(t, "b.example")
	f := newReloaderFixture(t, a)
	replaceFile(t, f.certFile, b.cert)
	f.advance(certCheckInterval)
	if got := f.serving(t); got != "a.example" {
		t.Fatalf("serving %s with a mismatched pair, want a.example", got)
	}
	replaceFile(t, f.keyFile, b.key)
	f.advance(certCheckInterval)
	if got := f.serving(t); got != "b.example" {
		t.Fatalf("serving %s, want b.example", got)
	}
	if n := f.errorLogs(); n != 0 {
		t.Errorf("%d error logs for a pair replaced in two steps: %v", n, f.logs.All())
	}
}

func TestCertReloaderStartupErrors(t *testing.T) {
	a, b := newTestPair(t, "a.example"), newTestPair(t, "b.example")
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certA, keyA, keyB := write("a.pem", a.cert), write("a.key", a.key), write("b.key", b.key)
	garbage := write("garbage.pem", []byte("hello\n"))
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"missing cert", missing, keyA, missing},
		{"missing key", certA, missing, missing},
		{"not PEM", garbage, keyA, garbage},
		{"key of another certificate", certA, keyB, keyB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := newCertReloader(tc.cert, tc.key, nil)
			if err == nil {
				t.Fatalf("newCertReloader(%s, %s) = %v, want an error", tc.cert, tc.key, r)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

// The configuration serves the current certificate in real handshakes and
// refuses TLS 1.1.
func TestCertReloaderTLSConfig(t *testing.T) {
	a, b := newTestPair(t, "a.example"), newTestPair(t, "b.example")
	f := newReloaderFixture(t, a)
	cfg := f.r.tlsConfig()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x", cfg.MinVersion)
	}
	handshake := func(client *tls.Config) (*tls.ConnectionState, error) {
		cc, sc := net.Pipe()
		defer cc.Close()
		defer sc.Close()
		deadline := time.Now().Add(5 * time.Second)
		cc.SetDeadline(deadline)
		sc.SetDeadline(deadline)
		go func() {
			s := tls.Server(sc, cfg)
			s.Handshake()
			s.Close()
		}()
		c := tls.Client(cc, client)
		if err := c.Handshake(); err != nil {
			return nil, err
		}
		st := c.ConnectionState()
		return &st, nil
	}
	pool := x509.NewCertPool()
	pool.AddCert(a.x509)
	pool.AddCert(b.x509)
	st, err := handshake(&tls.Config{RootCAs: pool, ServerName: "a.example"})
	if err != nil {
		t.Fatal(err)
	}
	if cn := st.PeerCertificates[0].Subject.CommonName; cn != "a.example" {
		t.Errorf("served %s, want a.example", cn)
	}
	replaceFile(t, f.certFile, b.cert)
	replaceFile(t, f.keyFile, b.key)
	f.advance(certCheckInterval)
	st, err = handshake(&tls.Config{RootCAs: pool, ServerName: "b.example"})
	if err != nil {
		t.Fatalf("handshake after the reload: %v", err)
	}
	if cn := st.PeerCertificates[0].Subject.CommonName; cn != "b.example" {
		t.Errorf("served %s after the reload, want b.example", cn)
	}
	if _, err := handshake(&tls.Config{RootCAs: pool, ServerName: "b.example", MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 handshake succeeded")
	}
}

// GetCertificate is called from concurrent handshakes while files change.
func TestCertReloaderConcurrent(t *testing.T) {
	pairs := []testPair{newTestPair(t, "a.example"), newTestPair(t, "b.example")}
	f := newReloaderFixture(t, pairs[0])
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c, err := f.r.GetCertificate(nil); err != nil || c == nil {
					t.Errorf("GetCertificate = %v, %v", c, err)
					return
				}
			}
		})
	}
	for i := range 20 {
		p := pairs[i%2]
		replaceFile(t, f.certFile, p.cert)
		replaceFile(t, f.keyFile, p.key)
		f.advance(certCheckInterval)
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	f.advance(certCheckInterval)
	if got := f.serving(t); got != "b.example" {
		t.Errorf("serving %s after the last change, want b.example", got)
	}
}
