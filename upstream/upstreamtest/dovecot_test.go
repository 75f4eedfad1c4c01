package upstreamtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
)

// testMessages covers what a proxy must pass through untouched: dot-leading
// lines (including a lone "." that would end the response if not stuffed),
// 8-bit bytes, bare-LF storage and a missing final newline.
var testMessages = [][]byte{
	[]byte("From: a@example.org\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"),
	[]byte("From: b@example.org\nSubject: =?UTF-8?Q?8bit?=\n\ngr\xc3\xbc\xc3\x9fe \xff\xfe\nsecond line\n"),
	[]byte("From: c@example.org\r\nSubject: unterminated\r\n\r\nno final newline"),
}

func deliverAll(t *testing.T, d *Dovecot, user string, msgs [][]byte) {
	t.Helper()
	for _, m := range msgs {
		d.Deliver(t, user, m)
	}
}

func checkMessages(t *testing.T, d *Dovecot, user string, want [][]byte) {
	t.Helper()
	got := d.Messages(t, user)
	if len(got) != len(want) {
		t.Fatalf("%d messages in the Maildir, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("stored message %d = %q, want %q", i+1, got[i], want[i])
		}
	}
	if n := d.Count(t, user); n != len(want) {
		t.Errorf("Count = %d, want %d", n, len(want))
	}
}

var uidlLine = regexp.MustCompile(`^(\d+) ([0-9a-f]{16})$`)

func TestDovecotRetrieve(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	deliverAll(t, d, "alice", testMessages)
	checkMessages(t, d, "alice", testMessages)

	p := dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")

	var total int64
	for _, m := range testMessages {
		total += ListSize(m)
	}
	if got, want := p.ok("STAT"), fmt.Sprintf("+OK %d %d", len(testMessages), total); got != want {
		t.Errorf("STAT = %q, want %q", got, want)
	}

	p.ok("LIST")
	var want strings.Builder
	for i, m := range testMessages {
		fmt.Fprintf(&want, "%d %d\r\n", i+1, ListSize(m))
	}
	if got := string(p.multi()); got != want.String() {
		t.Errorf("LIST = %q, want %q", got, want.String())
	}

	// pop3_uidl_format = %08Xu%08Xv: UID and UIDVALIDITY, 16 hex digits.
	p.ok("UIDL")
	uidls := strings.Split(strings.TrimSuffix(string(p.multi()), "\r\n"), "\r\n")
	if len(uidls) != len(testMessages) {
		t.Fatalf("UIDL listed %q", uidls)
	}
	seen := map[string]bool{}
	for i, l := range uidls {
		m := uidlLine.FindStringSubmatch(l)
		if m == nil || m[1] != strconv.Itoa(i+1) || seen[m[2]] {
			t.Errorf("UIDL line %q", l)
			continue
		}
		seen[m[2]] = true
	}

	for i, m := range testMessages {
		status := p.ok(fmt.Sprintf("RETR %d", i+1))
		if want := fmt.Sprintf("+OK %d octets", ListSize(m)); status != want {
			t.Errorf("RETR %d status %q, want %q", i+1, status, want)
		}
		if got := p.multi(); !bytes.Equal(got, WireForm(m)) {
			t.Errorf("RETR %d = %q, want %q", i+1, got, WireForm(m))
		}
	}
	p.ok("QUIT")

	// Reading changes nothing but the location (new/ -> cur/).
	checkMessages(t, d, "alice", testMessages)
}

func TestDovecotDeleQuitRemoves(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	deliverAll(t, d, "alice", testMessages)

	p := dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	p.ok("DELE 2")
	p.ok("QUIT")
	// Dovecot expunges before answering QUIT.
	checkMessages(t, d, "alice", [][]byte{testMessages[0], testMessages[2]})

	// Numbers are reassigned in the next session.
	p = dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	p.ok("RETR 2")
	if got := p.multi(); !bytes.Equal(got, WireForm(testMessages[2])) {
		t.Errorf("RETR 2 after expunge = %q", got)
	}
	p.ok("QUIT")
}

func TestDovecotDeleWithoutQuitKeeps(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	deliverAll(t, d, "alice", testMessages)

	p := dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	p.ok("DELE 1")
	p.ok("DELE 3")
	p.c.Close()
	// The mail process logs the session's end after it has (not)
	// expunged; only then is the Maildir's state final. del=0/3: nothing
	// was expunged (a QUIT would log del=2/3).
	d.WaitLog(t, "Disconnected: Connection closed top=0/0, retr=0/0, del=0/3")
	checkMessages(t, d, "alice", testMessages)

	p = dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	if got := p.ok("STAT"); !strings.HasPrefix(got, "+OK 3 ") {
		t.Errorf("STAT after a dropped session = %q", got)
	}
	p.ok("QUIT")
}

// TestDovecotStorageEdgeCases checks the rules WireForm and ListSize encode
// against the running Dovecot, so a Dovecot that behaves differently fails
// here instead of confusing the proxy's tests.
func TestDovecotStorageEdgeCases(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	for _, c := range wireCases {
		d.Deliver(t, "alice", []byte(c.stored))
	}
	p := dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	for i, c := range wireCases {
		status := p.ok(fmt.Sprintf("RETR %d", i+1))
		if want := fmt.Sprintf("+OK %d octets", c.listedSize); status != want {
			t.Errorf("%s: status %q, want %q", c.name, status, want)
		}
		if got := p.multi(); string(got) != c.wire {
			t.Errorf("%s: stored %q, retrieved %q, want %q", c.name, c.stored, got, c.wire)
		}
	}
	p.ok("QUIT")
}

// TestDovecotDeliveryOrder delivers faster than the clock's resolution and
// checks that message numbers follow delivery order, which Messages and the
// tests rely on.
func TestDovecotDeliveryOrder(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	const n = 40
	var msgs [][]byte
	for i := range n {
		m := fmt.Appendf(nil, "Subject: %d\r\n\r\nmessage %d\r\n", i, i)
		msgs = append(msgs, m)
		d.Deliver(t, "alice", m)
	}
	checkMessages(t, d, "alice", msgs)
	p := dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	for i, m := range msgs {
		p.ok(fmt.Sprintf("RETR %d", i+1))
		if got := p.multi(); !bytes.Equal(got, m) {
			t.Fatalf("RETR %d = %q, want %q", i+1, got, m)
		}
	}
	p.ok("QUIT")
}

func TestDovecotUsers(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{Users: map[string]string{
		"bob":               "pw with spaces",
		"carol@example.org": "c",
	}})
	d.Deliver(t, "bob", []byte("Subject: for bob\r\n\r\nx\r\n"))

	p := dialPOP3(t, d.Addr)
	p.login("bob", "pw with spaces")
	if got := p.ok("STAT"); !strings.HasPrefix(got, "+OK 1 ") {
		t.Errorf("bob STAT = %q", got)
	}
	p.ok("QUIT")

	p = dialPOP3(t, d.Addr)
	p.login("carol@example.org", "c")
	if got := p.ok("STAT"); got != "+OK 0 0" {
		t.Errorf("carol STAT = %q", got)
	}
	p.ok("QUIT")

	p = dialPOP3From(t, d.Addr, "127.0.0.2")
	p.ok("USER bob")
	if got := p.send("PASS wrong"); !strings.HasPrefix(got, "-ERR [AUTH]") {
		t.Errorf("wrong password answered %q", got)
	}
	p = dialPOP3From(t, d.Addr, "127.0.0.3")
	p.ok("USER alice")
	if got := p.send("PASS alice-secret"); !strings.HasPrefix(got, "-ERR") {
		t.Errorf("default user exists although Users was given: %q", got)
	}
}

func TestDovecotLockSession(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{LockSession: true})
	first := dialPOP3(t, d.Addr)
	first.login("alice", "alice-secret")
	second := dialPOP3(t, d.Addr)
	second.ok("USER alice")
	second.timeout = 40 * time.Second // Dovecot waits ~10 s for the lock
	if got := second.send("PASS alice-secret"); !strings.HasPrefix(got, "-ERR [IN-USE]") {
		t.Errorf("second session answered %q, want -ERR [IN-USE]", got)
	}
	first.ok("QUIT")
}

func TestDovecotTLS(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{TLS: true})
	if d.TLSAddr == "" || d.TLSAddr == d.Addr {
		t.Fatalf("TLSAddr %q, Addr %q", d.TLSAddr, d.Addr)
	}
	pem, err := os.ReadFile(d.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CAFile %s holds no certificate", d.CAFile)
	}
	d.Deliver(t, "alice", testMessages[0])

	for _, name := range []string{"127.0.0.1", "localhost"} {
		t.Run("implicit "+name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: pool, ServerName: name}
			c, err := tls.DialWithDialer(netDialer(), "tcp", d.TLSAddr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := newPOP3Client(t, c)
			p.login("alice", "alice-secret")
			p.ok("RETR 1")
			if got := p.multi(); !bytes.Equal(got, WireForm(testMessages[0])) {
				t.Errorf("RETR 1 over TLS = %q", got)
			}
			p.ok("QUIT")
		})
	}

	t.Run("STLS", func(t *testing.T) {
		p := dialPOP3(t, d.Addr)
		p.ok("CAPA")
		if capa := string(p.multi()); !strings.Contains(capa, "STLS\r\n") {
			t.Fatalf("CAPA without STLS: %q", capa)
		}
		p.starttls(d.TLSConfig())
		p.login("alice", "alice-secret")
		p.ok("QUIT")
	})

	t.Run("untrusted", func(t *testing.T) {
		// The certificate must not verify against the system roots.
		c, err := tls.DialWithDialer(netDialer(), "tcp", d.TLSAddr, &tls.Config{ServerName: "127.0.0.1"})
		if err == nil {
			c.Close()
			t.Fatal("handshake verified without the test CA")
		}
	})
}

func TestDovecotWithoutTLS(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{})
	if d.TLSAddr != "" || d.CAFile != "" || d.TLSConfig() != nil {
		t.Errorf("TLS fields set without TLS: %q %q", d.TLSAddr, d.CAFile)
	}
	p := dialPOP3(t, d.Addr)
	p.ok("CAPA")
	if capa := string(p.multi()); strings.Contains(capa, "STLS") {
		t.Errorf("STLS offered without TLS: %q", capa)
	}
}

func TestDovecotStopsOnCleanup(t *testing.T) {
	t.Parallel()
	var addr string
	t.Run("inner", func(t *testing.T) {
		addr = StartDovecot(t, DovecotOptions{}).Addr
	})
	if c, err := netDialer().Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after the test ended", addr)
	}
}

func TestDovecotUIDLFormatAndStop(t *testing.T) {
	t.Parallel()
	d := StartDovecot(t, DovecotOptions{UIDLFormat: "%u"})
	deliverAll(t, d, "alice", testMessages[:2])
	p := dialPOP3(t, d.Addr)
	p.login("alice", "alice-secret")
	p.ok("UIDL")
	if got := string(p.multi()); got != "1 1\r\n2 2\r\n" {
		t.Fatalf("UIDL with pop3_uidl_format = %%u: %q, want the UIDs", got)
	}
	p.ok("QUIT")
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := netDialer().Dial("tcp", d.Addr); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", d.Addr)
	}
}

func netDialer() *net.Dialer { return &net.Dialer{Timeout: 5 * time.Second} }

// TestDovecotUnprivileged runs TestDovecotRetrieve and TestDovecotTLS again
// as the user nobody, so that the settings for running Dovecot without root
// (used by developers who run go test as themselves) stay tested on CI,
// which runs as root.
func TestDovecotUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: the other tests already run Dovecot unprivileged")
	}
	testinfra.NeedBinary(t, "dovecot")
	setpriv := testinfra.NeedBinary(t, "setpriv") // util-linux, essential in Debian
	t.Parallel()

	// The test binary lives under go's 0700 build cache: copy it where
	// nobody can execute it.
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "upstreamtest.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "-test.run=^(TestDovecotRetrieve|TestDovecotTLS)$", "-test.v", "-test.count=1")
	// No /usr/sbin in PATH, as for most users: LookBinary must still find
	// dovecot. TMPDIR must be writable by nobody.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "TMPDIR=/tmp", "POP3PROXY_INTEGRATION=require"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %v\n%s", err, out)
	}
	for _, want := range []string{"--- PASS: TestDovecotRetrieve", "--- PASS: TestDovecotTLS"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("as nobody: no %q in\n%s", want, out)
		}
	}
}
