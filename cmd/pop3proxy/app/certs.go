package app

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// certCheckInterval is how often GetCertificate looks at the files at most.
const certCheckInterval = time.Second

// certReloader serves the proxy's certificate (tls.cert, tls.key) and
// reloads it without a restart when either file changes: replaced (an
// atomic rename, a symlink swap as in Kubernetes secrets) or rewritten
// (another modification time or size).
//
// The files are looked at during a TLS handshake, at most once per
// certCheckInterval. A pair that does not load (unreadable, not PEM, a key
// that does not match the certificate) leaves the previous certificate in
// use. Because the two files cannot be replaced at the same instant, a
// failure is logged as an error only when it persists at the next check with
// the files unchanged, and then once until they change again; the reload is
// retried at every check in the meantime.
type certReloader struct {
	certFile, keyFile string
	log               *zap.Logger
	now               func() time.Time // time.Now; tests replace it

	mu        sync.Mutex
	cert      *tls.Certificate
	loaded    filePairStamp // of the files cert was loaded from
	lastCheck time.Time
	failed    *filePairStamp // files that failed to load at the last check
	logged    bool           // the failure of failed has been logged
}

// fileStamp identifies one version of a file.
type fileStamp struct {
	info os.FileInfo // nil: the file could not be stat'ed
}

func (a fileStamp) same(b fileStamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil
	}
	return os.SameFile(a.info, b.info) && a.info.ModTime().Equal(b.info.ModTime()) && a.info.Size() == b.info.Size()
}

type filePairStamp struct{ cert, key fileStamp }

func (a filePairStamp) same(b filePairStamp) bool { return a.cert.same(b.cert) && a.key.same(b.key) }

func statFile(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi}
}

// newCertReloader loads the certificate and key at once; the caller logs
// that (loadedFields), at start and in the summary of a reload. Its error,
// for a startup error message, names the file that is missing, unreadable
// or not a usable certificate or key.
func newCertReloader(certFile, keyFile string, log *zap.Logger) (*certReloader, error) {
	if log == nil {
		log = zap.NewNop()
	}
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	stamp := r.stat()
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded, r.lastCheck = cert, stamp, r.now()
	return r, nil
}

// loadedFields describe the certificate in use.
func (r *certReloader) loadedFields() []zap.Field {
	r.mu.Lock()
	defer r.mu.Unlock()
	return certFields(r.certFile, r.cert)
}

func (r *certReloader) stat() filePairStamp {
	return filePairStamp{statFile(r.certFile), statFile(r.keyFile)}
}

// load reads and parses the pair. The stamps are taken before the files are
// read, so a change during the read is seen again at the next check.
func (r *certReloader) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.cert %s with tls.key %s: %w", r.certFile, r.keyFile, err)
	}
	return &cert, nil
}

func certFields(file string, cert *tls.Certificate) []zap.Field {
	fields := []zap.Field{zap.String("file", file)}
	if leaf := cert.Leaf; leaf != nil {
		fields = append(fields, zap.String("subject", leaf.Subject.String()),
			zap.Strings("dns_names", leaf.DNSNames), zap.Time("not_after", leaf.NotAfter))
	}
	return fields
}

// GetCertificate returns the current certificate, for tls.Config; it
// reloads the files first if they have changed.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.lastCheck) >= certCheckInterval || now.Before(r.lastCheck) {
		r.lastCheck = now
		r.reloadLocked()
	}
	return r.cert, nil
}

// reloadLocked loads the files if they differ from those in use.
func (r *certReloader) reloadLocked() {
	stamp := r.stat()
	if stamp.same(r.loaded) {
		r.failed, r.logged = nil, false // changed back: nothing to report
		return
	}
	again := r.failed != nil && r.failed.same(stamp)
	if again && r.logged {
		return // reported; wait for the next change
	}
	cert, err := r.load()
	if err != nil {
		if again {
			r.logged = true
			r.log.Error("TLS certificate reload failed; still using the previous certificate",
				zap.String("cert", r.certFile), zap.String("key", r.keyFile), zap.Error(err))
		} else {
			// Perhaps one file of the pair has been replaced and the
			// other is about to be: try again at the next check.
			r.failed, r.logged = &stamp, false
			r.log.Debug("TLS certificate files changed but do not load yet", zap.Error(err))
		}
		return
	}
	r.cert, r.loaded, r.failed, r.logged = cert, stamp, nil, false
	r.log.Info("TLS certificate reloaded", certFields(r.certFile, cert)...)
}

// tlsConfig is the server TLS configuration for STLS and the implicit-TLS
// listeners: the reloaded certificate, TLS 1.2 or later.
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: r.GetCertificate,
		MinVersion:     tls.VersionTLS12,
	}
}
