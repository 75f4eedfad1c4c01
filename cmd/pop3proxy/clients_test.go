package main

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

const (
	testUser = "alice"
	testPass = "alice-secret"
)

// trickyMessages are the messages every client must get through the proxy
// exactly as they get them from Dovecot directly: lines that begin with a
// dot (RFC 1939 §3 byte-stuffing), a line that is a lone dot, a line far
// beyond RFC 5322's 998 octets, and 8-bit bytes.
func trickyMessages() [][]byte {
	long := strings.Repeat("0123456789", 2000) // 20,000 octets on one line
	return [][]byte{
		[]byte("From: a@example.com\r\nTo: alice@example.com\r\nSubject: plain\r\nMessage-ID: <1@example.com>\r\n\r\nHello.\r\n"),
		[]byte("From: a@example.com\r\nSubject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n. space\r\n...\r\n"),
		[]byte("From: a@example.com\r\nSubject: long line\r\n\r\n" + long + "\r\nshort\r\n"),
		[]byte("From: a@example.com\r\nSubject: =?ISO-8859-1?Q?=E4?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xe4\xf6\xfc \xc3\xa4 \xff\xfe\r\n\tindented\r\n"),
	}
}

// mailbox starts Dovecot with the tricky messages delivered to alice.
func mailbox(t *testing.T) *upstreamtest.Dovecot {
	t.Helper()
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: map[string]string{testUser: testPass}})
	for _, m := range trickyMessages() {
		d.Deliver(t, testUser, m)
	}
	return d
}

// relayConfig is the proxy configuration for tests against one Dovecot.
func relayConfig() string {
	return "upstream:\n  allow: [\"127.0.0.1:*\"]\n"
}

// proxyLogin is the login that routes alice to the Dovecot at addr.
func proxyLogin(sep, addr string) string { return testUser + sep + addr }

// Raw wire: what the proxy sends for each message is exactly what Dovecot
// sends, and matches the stored bytes.
func TestRelayIsByteExact(t *testing.T) {
	d := mailbox(t)
	p := startProxy(t, relayConfig())

	direct := dialPOP(t, "direct", d.Addr)
	direct.Cmd("USER "+testUser, "+OK*")
	direct.Cmd("PASS "+testPass, "+OK*")
	via := dialPOP(t, "proxy", p.Addr)
	via.Cmd("USER "+proxyLogin("%", d.Addr), "+OK*")
	via.Cmd("PASS "+testPass, "+OK*")

	stored := d.Messages(t, testUser)
	for i := range trickyMessages() {
		n := i + 1
		direct.Cmd(fmt.Sprintf("RETR %d", n), "+OK*")
		want := direct.Multi()
		via.Cmd(fmt.Sprintf("RETR %d", n), "+OK*")
		got := via.Multi()
		if !bytes.Equal(got, want) {
			t.Errorf("message %d through the proxy differs from direct:\n got %q\nwant %q", n, clip(got), clip(want))
		}
		if w := upstreamtest.WireForm(stored[i]); !bytes.Equal(got, w) {
			t.Errorf("message %d differs from the stored message:\n got %q\nwant %q", n, clip(got), clip(w))
		}
	}
	via.Cmd("QUIT", "+OK*")
	direct.Cmd("QUIT", "+OK*")
}

func clip(b []byte) []byte {
	if len(b) > 300 {
		return append(append([]byte{}, b[:300]...), "..."...)
	}
	return b
}

const poplibScript = `
import json, poplib, sys
poplib._MAXLINE = 1 << 20  # the 20,000-octet line
host, port, user, password, mode = sys.argv[1:6]
p = poplib.POP3(host, int(port), timeout=20)
p.user(user)
p.pass_(password)
count, _ = p.stat()
out = {"count": count, "uidl": [u.decode() for u in p.uidl()[1]], "list": [l.decode() for l in p.list()[1]]}
msgs, tops = [], []
for i in range(1, count + 1):
    msgs.append(b"\r\n".join(p.retr(i)[1]).hex())
    tops.append([b"\r\n".join(p.top(i, n)[1]).hex() for n in (0, 2, 99999999)])
out["retr"], out["top"] = msgs, tops
out["uidl1"] = p.uidl(1).decode().split(" ", 1)[1]
p.quit()
json.dump(out, sys.stdout)
`

// Python's poplib sees the same STAT, LIST, UIDL, RETR and TOP through the
// proxy as directly.
func TestPythonPoplib(t *testing.T) {
	py := testinfra.NeedBinary(t, "python3")
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	host, port := splitAddr(t, d.Addr)
	phost, pport := splitAddr(t, p.Addr)

	direct := runTool(t, 60*time.Second, py, "-c", poplibScript, host, port, testUser, testPass, "x")
	via := runTool(t, 60*time.Second, py, "-c", poplibScript, phost, pport, proxyLogin("%", d.Addr), testPass, "x")
	if !bytes.Equal(via, direct) {
		t.Errorf("poplib through the proxy:\n%s\ndirect:\n%s", clip(via), clip(direct))
	}
	if !bytes.Contains(direct, []byte(`"count": 4`)) {
		t.Errorf("direct poplib saw an unexpected mailbox: %s", clip(direct))
	}
}

// curl fetches every message byte-identically, logging in with a login
// that carries host and port (percent-encoded: docs/clients.md, curl).
func TestCurl(t *testing.T) {
	curl := testinfra.NeedBinary(t, "curl")
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	for _, sep := range []string{"%", "@", "#"} {
		for n := 1; n <= len(trickyMessages()); n++ {
			u := url.URL{Scheme: "pop3", Host: p.Addr, Path: fmt.Sprintf("/%d", n),
				User: url.UserPassword(proxyLogin(sep, d.Addr), testPass)}
			via := runTool(t, 30*time.Second, curl, "-sS", "--max-time", "20", u.String())
			du := url.URL{Scheme: "pop3", Host: d.Addr, Path: fmt.Sprintf("/%d", n), User: url.UserPassword(testUser, testPass)}
			direct := runTool(t, 30*time.Second, curl, "-sS", "--max-time", "20", du.String())
			if !bytes.Equal(via, direct) {
				t.Errorf("sep %q message %d: curl through the proxy %q, direct %q", sep, n, clip(via), clip(direct))
			}
		}
	}
}

// fetchmail (keep, fetchall) delivers every message through an MDA; the
// proxy's copy must equal Dovecot's.
func TestFetchmail(t *testing.T) {
	fetchmail := testinfra.NeedBinary(t, "fetchmail")
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	run := func(server, login string) [][]byte {
		dir := t.TempDir()
		host, port := splitAddr(t, server)
		rc := filepath.Join(dir, "fetchmailrc")
		out := filepath.Join(dir, "out")
		os.Mkdir(out, 0o700)
		conf := fmt.Sprintf("set no syslog\nset no bouncemail\npoll %s service %s protocol pop3 auth password no uidl\n"+
			"  user %q password %q keep fetchall no rewrite\n  mda \"/bin/sh -c 'cat > %s/$$.eml'\"\n",
			host, port, login, testPass, out)
		if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		runTool(t, 60*time.Second, fetchmail, "--nodetach", "--fetchmailrc", rc, "--pidfile", filepath.Join(dir, "pid"),
			"--idfile", filepath.Join(dir, "ids"), "--sslproto", "", "--nosslcertck")
		return readDeliveries(t, out, "Received:")
	}
	direct := run(d.Addr, testUser)
	via := run(p.Addr, proxyLogin("%", d.Addr))
	compareDeliveries(t, "fetchmail", via, direct, len(trickyMessages()))
}

// mpop delivers into a Maildir.
func TestMpop(t *testing.T) {
	mpop := testinfra.NeedBinary(t, "mpop")
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	run := func(server, login string) [][]byte {
		dir := t.TempDir()
		md := newMaildir(t, dir)
		host, port := splitAddr(t, server)
		rc := filepath.Join(dir, "mpoprc")
		conf := fmt.Sprintf("account default\nhost %s\nport %s\nuser %s\npassword %s\nauth user\ntls off\n"+
			"keep on\nonly_new off\nreceived_header off\ndelivery maildir %s\n", host, port, login, testPass, md)
		if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		runTool(t, 60*time.Second, mpop, "-C", rc, "--uidls-file", filepath.Join(dir, "uidls"), "-q")
		return readDeliveries(t, filepath.Join(md, "new"), "")
	}
	direct := run(d.Addr, testUser)
	via := run(p.Addr, proxyLogin("%", d.Addr))
	compareDeliveries(t, "mpop", via, direct, len(trickyMessages()))
}

// getmail, with the "@" login form (docs/clients.md, getmail).
func TestGetmail(t *testing.T) {
	getmail := testinfra.NeedBinary(t, "getmail")
	d := mailbox(t)
	p := startProxy(t, relayConfig())
	run := func(server, login string) [][]byte {
		dir := t.TempDir()
		md := newMaildir(t, dir)
		host, port := splitAddr(t, server)
		deliverAs := rootDeliveryUser(t, dir)
		conf := fmt.Sprintf("[retriever]\ntype = SimplePOP3Retriever\nserver = %s\nport = %s\nusername = %s\npassword = %s\n\n"+
			"[destination]\ntype = Maildir\npath = %s/\n%s\n[options]\nread_all = true\ndelete = false\n"+
			"delivered_to = false\nreceived = false\nmessage_log_syslog = false\nverbose = 0\n", host, port, login, testPass, md, deliverAs)
		if err := os.WriteFile(filepath.Join(dir, "getmailrc"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		runTool(t, 60*time.Second, getmail, "--getmaildir", dir, "--rcfile", "getmailrc")
		return readDeliveries(t, filepath.Join(md, "new"), "Return-Path:")
	}
	direct := run(d.Addr, testUser)
	via := run(p.Addr, proxyLogin("@", d.Addr))
	compareDeliveries(t, "getmail", via, direct, len(trickyMessages()))
}

// newMaildir creates an empty Maildir under dir for a client to deliver to.
func newMaildir(t *testing.T, dir string) string {
	t.Helper()
	md := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(md, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return md
}

// rootDeliveryUser returns getmail's "user = nobody" destination setting
// when the tests run as root, since getmail refuses to deliver as root,
// and hands dir (and the directories above it, up to the temp root) to
// that user.
func rootDeliveryUser(t *testing.T, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("getmail as root needs a user to deliver as: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err = filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(path, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(dir); p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755) // t.TempDir's parents are 0700
	}
	return "user = nobody"
}

// readDeliveries reads every file a client delivered, in name order,
// dropping header lines starting with dropPrefix that a client adds itself
// (fetchmail's Received:, getmail's Return-Path:) since they name the
// server and the time.
func readDeliveries(t *testing.T, dir, dropPrefix string) [][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if dropPrefix != "" {
			b = dropAddedHeaders(b, dropPrefix)
		}
		msgs = append(msgs, b)
	}
	// Clients name files by time and pid; order by content for comparison.
	sort.Slice(msgs, func(i, j int) bool { return bytes.Compare(msgs[i], msgs[j]) < 0 })
	return msgs
}

// dropAddedHeaders removes leading header fields named by prefix, with
// their folded continuation lines.
func dropAddedHeaders(b []byte, prefix string) []byte {
	for bytes.HasPrefix(b, []byte(prefix)) {
		for {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				return b
			}
			b = b[i+1:]
			if len(b) == 0 || (b[0] != ' ' && b[0] != '\t') {
				break
			}
		}
	}
	return b
}

func compareDeliveries(t *testing.T, client string, via, direct [][]byte, want int) {
	t.Helper()
	if len(direct) != want {
		t.Fatalf("%s directly delivered %d messages, want %d", client, len(direct), want)
	}
	if len(via) != len(direct) {
		t.Fatalf("%s through the proxy delivered %d messages, directly %d", client, len(via), len(direct))
	}
	for i := range via {
		if !bytes.Equal(via[i], direct[i]) {
			t.Errorf("%s message %d differs:\nproxy  %q\ndirect %q", client, i, clip(via[i]), clip(direct[i]))
		}
	}
}

func splitAddr(t *testing.T, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		t.Fatalf("bad address %q", addr)
	}
	return addr[:i], addr[i+1:]
}
