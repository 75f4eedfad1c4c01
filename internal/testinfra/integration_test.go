package testinfra

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestIntegrationRequired(t *testing.T) {
	for _, c := range []struct {
		ci, integration string
		want            bool
	}{
		{"", "", false},
		{"true", "", true},
		{"TRUE", "", true},
		{"false", "", false},
		{"", "require", true},
		{"", "skip", false},
	} {
		t.Setenv("CI", c.ci)
		t.Setenv("POP3PROXY_INTEGRATION", c.integration)
		if got := IntegrationRequired(); got != c.want {
			t.Errorf("CI=%q POP3PROXY_INTEGRATION=%q: %v, want %v", c.ci, c.integration, got, c.want)
		}
	}
}

// fakeTB records how NeedBinary ends a test. Skip and Fatal stop the
// calling function (runtime.Goexit in the real thing), here by panicking.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

type stopped struct{}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped = fmt.Sprint(args...)
	panic(stopped{})
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(stopped{})
}

func needBinary(name string) (f *fakeTB, path string) {
	f = &fakeTB{}
	defer func() {
		if r := recover(); r != nil && r != (stopped{}) {
			panic(r)
		}
	}()
	return f, NeedBinary(f, name)
}

func TestNeedBinaryMissing(t *testing.T) {
	const name = "no-such-program-pop3proxy"
	t.Setenv("CI", "")
	t.Setenv("POP3PROXY_INTEGRATION", "")
	f, path := needBinary(name)
	if path != "" || f.failed != "" || !strings.Contains(f.skipped, "integration test skipped: "+name+" not installed") ||
		!strings.Contains(f.skipped, "./test.sh") {
		t.Errorf("without CI: path %q, skipped %q, failed %q", path, f.skipped, f.failed)
	}

	t.Setenv("CI", "true")
	f, _ = needBinary(name)
	if f.skipped != "" || !strings.Contains(f.failed, name) {
		t.Errorf("with CI=true: skipped %q, failed %q", f.skipped, f.failed)
	}

	t.Setenv("CI", "")
	f, _ = needBinary("dovecot-does-not-exist")
	if !strings.Contains(f.skipped, "Debian package dovecot-does-not-exist") {
		t.Errorf("package named after the program: %q", f.skipped)
	}
}

func TestNeedBinaryFound(t *testing.T) {
	f, path := needBinary("sh")
	if path == "" || f.skipped != "" || f.failed != "" {
		t.Fatalf("sh: path %q, skipped %q, failed %q", path, f.skipped, f.failed)
	}
	if st, err := os.Stat(path); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("%s is not an executable: %v", path, err)
	}
}

func TestLookBinarySearchesSbin(t *testing.T) {
	// Daemons are in /usr/sbin, which a normal user's PATH lacks.
	if _, err := os.Stat("/usr/sbin/dovecot"); err != nil {
		t.Skip("no /usr/sbin/dovecot to look for")
	}
	t.Setenv("PATH", "/bin")
	if got := LookBinary("dovecot"); got != "/usr/sbin/dovecot" {
		t.Errorf("LookBinary(dovecot) with PATH=/bin = %q", got)
	}
	if got := LookBinary("no-such-program-pop3proxy"); got != "" {
		t.Errorf("LookBinary of a missing program = %q", got)
	}
}
