package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// scannedMailbox holds one message of each kind the filter chain must
// handle, in this order.
func scannedMailbox() [][]byte {
	eicar := scannertest.EICAR()
	b64 := base64.StdEncoding.EncodeToString(eicar)
	big := bytes.NewBufferString("From: big@example.com\r\nSubject: big and infected\r\n\r\n")
	big.Write(eicar)
	big.WriteString("\r\n")
	for big.Len() < 300<<10 {
		big.WriteString(strings.Repeat("x", 76) + "\r\n")
	}
	return [][]byte{
		[]byte("From: a@example.com\r\nTo: alice@example.com\r\nSubject: clean\r\nMessage-ID: <clean@example.com>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n.dot line\r\nHello.\r\n"),
		[]byte("From: v@example.com\r\nTo: alice@example.com\r\nSubject: inline virus\r\nMessage-ID: <inline@example.com>\r\n\r\n" + string(eicar) + "\r\n"),
		[]byte("From: v@example.com\r\nTo: alice@example.com\r\nSubject: attached virus\r\nMessage-ID: <attached@example.com>\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--b1\r\n" +
			"Content-Type: application/octet-stream; name=\"t.com\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 + "\r\n--b1--\r\n"),
		[]byte("From: s@example.com\r\nTo: alice@example.com\r\nSubject: cheap pills\r\nMessage-ID: <spam@example.com>\r\n\r\n" + string(scannertest.GTUBE()) + "\r\n"),
		big.Bytes(),
	}
}

// poplibFetch retrieves every message (RETR) and TOP n 99999999 of each.
const poplibFetch = `
import json, poplib, sys
host, port, user, password = sys.argv[1:5]
p = poplib.POP3(host, int(port), timeout=60)
p.user(user)
p.pass_(password)
out = {"retr": [], "top": [], "errors": {}}
for i in range(1, p.stat()[0] + 1):
    try:
        out["retr"].append((b"\r\n".join(p.retr(i)[1]) + b"\r\n").hex())
        out["top"].append((b"\r\n".join(p.top(i, 99999999)[1]) + b"\r\n").hex())
    except poplib.error_proto as e:
        out["errors"][str(i)] = e.args[0].decode()
        out["retr"].append(""); out["top"].append("")
p.quit()
json.dump(out, sys.stdout)
`

type fetched struct {
	Retr, Top []string
	Errors    map[string]string
}

func fetchAll(t *testing.T, addr, login string) (retr, top [][]byte, errs map[string]string) {
	t.Helper()
	py := testinfra.NeedBinary(t, "python3")
	host, port := splitAddr(t, addr)
	var f fetched
	if err := json.Unmarshal(runTool(t, 120*time.Second, py, "-c", poplibFetch, host, port, login, testPass), &f); err != nil {
		t.Fatal(err)
	}
	dec := func(hexes []string) [][]byte {
		out := make([][]byte, len(hexes))
		for i, h := range hexes {
			fmt.Sscanf(h, "%x", &out[i])
		}
		return out
	}
	return dec(f.Retr), dec(f.Top), f.Errors
}

func scannerConfig(clamd, spamd, quarantine string) string {
	return fmt.Sprintf(`max_size: 200KiB
upstream:
  allow: ["127.0.0.1:*"]
filters:
  - type: clamav
    address: tcp://%s
    timeout: 30s
    on_error: tempfail
    action: replace
    quarantine_dir: %q
  - type: spamassassin
    address: tcp://%s
    timeout: 30s
    on_error: pass
    subject_prefix: "[SPAM] "
  - type: header
    add: {X-Scanned-By: pop3proxy}
`, clamd, quarantine, spamd)
}

// The whole product against the real daemons: a real client fetching
// through the proxy gets clean mail with its bytes intact and headers
// added, viruses (inline and attached) replaced by a notice with the
// original quarantined, spam flagged with its subject prefixed and its body
// untouched, a message over max_size marked unscanned and otherwise
// byte-identical, and TOP n 99999999 no way around any of it.
func TestScannersEndToEnd(t *testing.T) {
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: map[string]string{testUser: testPass}})
	for _, m := range scannedMailbox() {
		d.Deliver(t, testUser, m)
	}
	clamd, spamd := scannertest.StartClamd(t), scannertest.StartSpamd(t)
	quarantine := t.TempDir()
	p := startProxy(t, scannerConfig(clamd.TCPAddr, spamd.Addr, quarantine))

	direct, _, _ := fetchAll(t, d.Addr, testUser)
	via, top, errs := fetchAll(t, p.Addr, proxyLogin("%", d.Addr))
	if len(errs) > 0 {
		t.Fatalf("errors through the proxy: %v", errs)
	}
	eicar := scannertest.EICAR()

	// 1: clean: only added fields at the top, then the original bytes.
	if !bytes.HasSuffix(via[0], direct[0]) {
		t.Errorf("clean message changed:\n%s", via[0])
	}
	added := string(via[0][:len(via[0])-len(direct[0])])
	for _, want := range []string{"X-Scanned-By: pop3proxy", "X-Virus-Scanned:", "X-Spam-Status: No"} {
		if !strings.Contains(added, want) {
			t.Errorf("clean message lacks %q in its added header fields:\n%s", want, added)
		}
	}
	// 2, 3: viruses replaced; the notice keeps the original's identity.
	for i, subject := range map[int]string{1: "inline virus", 2: "attached virus"} {
		for name, got := range map[string][]byte{"RETR": via[i], "TOP": top[i]} {
			if bytes.Contains(got, eicar) || bytes.Contains(got, []byte(base64.StdEncoding.EncodeToString(eicar))) {
				t.Errorf("%s %d delivered the virus", name, i+1)
			}
			if !bytes.Contains(got, []byte(subject)) || !bytes.Contains(got, []byte("Eicar")) {
				t.Errorf("%s %d is not a notice naming %q and the virus:\n%s", name, i+1, subject, got)
			}
		}
	}
	stored := d.Messages(t, testUser)
	quarantined, _ := filepath.Glob(filepath.Join(quarantine, "*"))
	kept := map[string]bool{}
	for _, q := range quarantined {
		b, _ := os.ReadFile(q)
		if !bytes.Equal(b, stored[1]) && !bytes.Equal(b, stored[2]) {
			t.Errorf("quarantined %s is not an original message", q)
		}
		kept[string(b)] = true
	}
	if len(kept) != 2 {
		t.Errorf("quarantine holds %d distinct originals, want both infected messages", len(kept))
	}
	_, directBody, _ := strings.Cut(string(direct[3]), "\r\n\r\n")
	for name, got := range map[string][]byte{"RETR": via[3], "TOP": top[3]} {
		// 4: spam flagged, subject prefixed, body untouched.
		spam := string(got)
		if !strings.Contains(spam, "X-Spam-Flag: YES") || !strings.Contains(spam, "Subject: [SPAM] cheap pills") {
			t.Errorf("%s: spam not flagged:\n%s", name, spam)
		}
		if _, body, _ := strings.Cut(spam, "\r\n\r\n"); body != directBody {
			t.Errorf("%s: spam body changed", name)
		}
	}
	for name, got := range map[string][]byte{"RETR": via[4], "TOP": top[4]} {
		// 5: over max_size: unscanned, marked by one field in front of the
		// original bytes, virus and all (oversize: tag, the default).
		if mark, rest, _ := bytes.Cut(got, []byte("\r\n")); !bytes.HasPrefix(mark, []byte("X-Pop3proxy-Unscanned: too large (")) || !bytes.Equal(rest, direct[4]) {
			t.Errorf("%s: message over max_size not delivered marked and otherwise intact (%d bytes, direct %d): %.80q", name, len(got), len(direct[4]), got)
		}
	}
	// Oversize messages are counted: RETR and TOP of message 5.
	p.signal(t, syscall.SIGTERM)
	if err := p.waitExit(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if logs := p.logs.String(); !strings.Contains(logs, `"over_max_size": 2`) || !strings.Contains(logs, `"replaced": 4`) {
		t.Errorf("filter statistics not logged as expected:\n%s", logs[max(0, len(logs)-600):])
	}
}

// With clamd down, on_error decides: tempfail answers -ERR [SYS/TEMP] and
// the message stays on the server; pass delivers it marked unscanned.
func TestScannerDown(t *testing.T) {
	d := mailbox(t)
	dead := testinfra.FreeAddr(t)
	for _, tc := range []struct{ onError, reply string }{{"tempfail", "-ERR [SYS/TEMP]*"}, {"pass", "+OK*"}} {
		t.Run(tc.onError, func(t *testing.T) {
			p := startProxy(t, fmt.Sprintf("upstream:\n  allow: [\"127.0.0.1:*\"]\nfilters:\n  - type: clamav\n    address: tcp://%s\n    timeout: 5s\n    on_error: %s\n", dead, tc.onError))
			c := loggedIn(t, "client", p, d)
			c.Cmd("RETR 1", tc.reply)
			if tc.onError == "pass" {
				if got := c.Multi(); !bytes.HasPrefix(got, []byte("X-Pop3proxy-Unscanned: clamav failed\r\n")) {
					t.Errorf("unscanned message not marked:\n%s", got)
				}
			}
			c.Cmd("QUIT", "+OK*")
			stableCount(t, d, 4)
		})
	}
}

// A scanner that accepts the connection and never answers costs at most
// the filter's timeout.
func TestHungScanner(t *testing.T) {
	addr := testinfra.Silent(t)
	d := mailbox(t)
	p := startProxy(t, fmt.Sprintf("upstream:\n  allow: [\"127.0.0.1:*\"]\nfilters:\n  - type: clamav\n    address: tcp://%s\n    timeout: 1s\n", addr))
	c := loggedIn(t, "client", p, d)
	start := time.Now()
	c.Cmd("RETR 1", "-ERR [SYS/TEMP]*")
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("a hung scanner with a 1s timeout held RETR for %v", elapsed)
	}
	c.Cmd("QUIT", "+OK*")
}
