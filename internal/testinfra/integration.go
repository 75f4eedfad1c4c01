package testinfra

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// IntegrationRequired reports whether missing integration software fails
// tests instead of skipping them (CI=true or POP3PROXY_INTEGRATION=require),
// so a machine where ./test.sh could not install a program does not go green.
func IntegrationRequired() bool {
	return strings.EqualFold(os.Getenv("CI"), "true") ||
		os.Getenv("POP3PROXY_INTEGRATION") == "require"
}

// debianPackage names a program's Debian package where the names differ.
var debianPackage = map[string]string{
	"dovecot": "dovecot-pop3d",
	"getmail": "getmail6",
	"clamd":   "clamav-daemon",
	"python3": "python3",
	// The image test copies busybox into a scratch image: it must be static.
	"busybox":         "busybox-static",
	"systemd-analyze": "systemd",
}

// sbinDirs are searched after PATH: daemons live in /usr/sbin, which is
// missing from the PATH of many non-root shells.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// LookBinary returns an installed program's path (PATH, then sbinDirs) or "".
func LookBinary(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if strings.ContainsRune(name, filepath.Separator) {
		return ""
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

var warned sync.Map

// NeedBinary returns the path of an installed program, or else skips the
// test (fails it when IntegrationRequired). go test shows skip messages only
// with -v, so the first skip for a program is also written to stderr.
func NeedBinary(t testing.TB, name string) string {
	t.Helper()
	if p := LookBinary(name); p != "" {
		return p
	}
	pkg := debianPackage[name]
	if pkg == "" {
		pkg = name
	}
	msg := fmt.Sprintf("integration test skipped: %s not installed (Debian package %s); run ./test.sh as root to install it", name, pkg)
	if IntegrationRequired() {
		t.Fatalf("%s is required here (CI=true or POP3PROXY_INTEGRATION=require) but not installed (Debian package %s); run ./test.sh as root to install it", name, pkg)
	}
	if _, loaded := warned.LoadOrStore(name, true); !loaded {
		fmt.Fprintf(os.Stderr, "\n*** WARNING: %s ***\n\n", msg)
	}
	t.Skip(msg)
	return ""
}
