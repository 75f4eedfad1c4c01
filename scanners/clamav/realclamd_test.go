package clamav_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// clamBase64 wraps base64 at 76 characters, as MIME does.
func clamBase64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	out.WriteString(s + "\r\n")
	return out.String()
}

// clamPadded returns a clean text message of about size bytes.
func clamPadded(size int) []byte {
	b := bytes.NewBufferString("From: a@example.com\r\nTo: alice@example.net\r\nSubject: padded\r\n\r\n")
	for b.Len() < size {
		b.WriteString(strings.Repeat("lorem ipsum ", 6) + "\r\n")
	}
	return b.Bytes()
}

// TestClamAVRealClamd: against a real clamd, over both sockets: EICAR in a
// text body and as a base64 attachment is found, clean mail is clean, and a
// message over clamd's StreamMaxLength (1M here) is an error, not clean.
func TestClamAVRealClamd(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	eicar := scannertest.EICAR()
	inline := []byte("From: v@example.com\r\nTo: alice@example.net\r\nSubject: inline virus\r\n" +
		"Message-ID: <inline@example.com>\r\n\r\nHello,\r\n" + string(eicar) + "\r\nBye.\r\n")
	attached := []byte("From: v@example.com\r\nTo: alice@example.net\r\nSubject: attached virus\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"t.com\"\r\n" +
		"Content-Disposition: attachment; filename=\"t.com\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		clamBase64(eicar) + "--b1--\r\n")
	if bytes.Contains(attached, eicar) {
		t.Fatal("the attachment test message holds EICAR undecoded")
	}
	clean := []byte("From: a@example.com\r\nTo: alice@example.net\r\nSubject: clean\r\n\r\n.dot line\r\nHello.\r\n")

	for _, address := range []string{clamd.UnixURL(), clamd.TCPURL()} {
		network, _, _ := strings.Cut(address, ":")
		t.Run(network, func(t *testing.T) {
			p, _ := clamNew(t, clamav.Filter{Address: address, Action: "tag"})
			for _, tc := range []struct {
				name  string
				msg   []byte
				virus bool
			}{
				{"inline", inline, true},
				{"attachment", attached, true},
				{"clean", clean, false},
				{"clean 900KiB", clamPadded(900 << 10), false},
			} {
				start := time.Now()
				v, err := clamJudge(t, p, tc.msg, 30*time.Second)
				t.Logf("%s (%d bytes): %v", tc.name, len(tc.msg), time.Since(start))
				if err != nil {
					t.Errorf("%s: %v", tc.name, err)
					continue
				}
				switch {
				case tc.virus && v.Reason != "virus "+scannertest.ClamdEICARVirus:
					t.Errorf("%s: reason %q, want virus %s", tc.name, v.Reason, scannertest.ClamdEICARVirus)
				case tc.virus && !strings.Contains(v.Reason, "Eicar"):
					t.Errorf("%s: reason %q does not name Eicar", tc.name, v.Reason)
				case !tc.virus && (v.Reason != "" || len(v.Edits) != 4 || v.Edits[3] != filter.Add("X-Virus-Scanned", clamav.CleanValue)):
					t.Errorf("%s: verdict %+v, want clean", tc.name, v)
				}
			}

			// Over clamd's StreamMaxLength, under max_stream: clamd
			// refuses while the message is still being sent.
			big := clamPadded(1<<20 + 100<<10)
			v, err := clamJudge(t, p, big, 30*time.Second)
			clamAssertError(t, v, err, "size limit exceeded")
			if !errors.Is(err, clamav.ErrTooLarge) || !errors.Is(err, filter.ErrTooLarge) {
				t.Errorf("over StreamMaxLength: %v does not wrap clamav.ErrTooLarge and filter.ErrTooLarge", err)
			}
		})
	}
	if log := clamd.Log(); !strings.Contains(log, "Size limit reached") {
		t.Errorf("clamd's log does not show the refused stream:\n%s", log)
	}
}

// TestClamAVRealClamdReplace runs the whole path with a real clamd: the
// chain, a quarantine, the notice.
func TestClamAVRealClamdReplace(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	dir := t.TempDir()
	p, logs := clamNew(t, clamav.Filter{Address: clamd.TCPURL(), QuarantineDir: dir})
	orig := []byte("From: \"V\" <v@example.com>\r\nTo: alice@example.net\r\nSubject: inline\r\n virus\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <inline@example.com>\r\n\r\n" +
		string(scannertest.EICAR()) + "\r\n")
	v, err := clamJudge(t, p, orig, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != filter.Replace {
		t.Fatalf("verdict %v %q", v.Action, v.Reason)
	}
	t.Logf("notice:\n%s", v.Replacement)
	if bytes.Contains(v.Replacement, scannertest.EICAR()) {
		t.Errorf("the notice contains EICAR")
	}
	for _, want := range []string{"From: \"V\" <v@example.com>\r\n", "To: alice@example.net\r\n",
		"Subject: [VIRUS REMOVED] inline\r\n virus\r\n", "Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n",
		"Message-ID: <inline@example.com>\r\n", "X-Virus-Name: " + scannertest.ClamdEICARVirus + "\r\n"} {
		if !bytes.Contains(v.Replacement, []byte(want)) {
			t.Errorf("notice lacks %q", want)
		}
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("quarantine holds %d files", len(files))
	}
	if got, _ := os.ReadFile(dir + "/" + files[0].Name()); !bytes.Equal(got, orig) {
		t.Errorf("quarantined bytes differ from the original")
	}
	if len(logs.FilterMessage("virus found").All()) != 1 {
		t.Errorf("hit not logged: %v", logs.All())
	}
}

// TestClamAVRealClamdTimes logs scan times against the real clamd (go test
// -v -run ClamdTimes). It fails only when a scan takes longer than a filter
// timeout would allow.
func TestClamAVRealClamdTimes(t *testing.T) {
	if testing.Short() {
		t.Skip("timing only; skipped with -short")
	}
	clamd := scannertest.StartClamdWith(t, scannertest.ClamdOptions{StreamMaxLength: "25M"})
	for _, address := range []string{clamd.UnixURL(), clamd.TCPURL()} {
		network, _, _ := strings.Cut(address, ":")
		p, _ := clamNew(t, clamav.Filter{Address: address})
		for _, size := range []int{1 << 10, 100 << 10, 1 << 20, 10 << 20} {
			const n = 3
			var total, worst time.Duration
			for i := range n {
				// A new message each time: clamd caches the results of
				// clean data by hash.
				msg := append(clamPadded(size), fmt.Sprintf("%s %d\r\n", network, i)...)
				start := time.Now()
				if _, err := clamJudge(t, p, msg, 30*time.Second); err != nil {
					t.Fatal(err)
				}
				took := time.Since(start)
				total += took
				worst = max(worst, took)
			}
			t.Logf("%-4s %8s: mean %v, worst %v", network, fmt.Sprintf("%dKiB", size>>10), total/n, worst)
			if worst > 10*time.Second {
				t.Errorf("a %d-byte scan took %v", size, worst)
			}
		}
	}
}

// TestClamAVRealClamdNoticeIsClean: what replaces an infected message is
// clean to the real clamd, wherever in the original the virus was: in the
// Subject or From (fields a notice would copy) or in the body. When the
// fields are safe the notice keeps them.
func TestClamAVRealClamdNoticeIsClean(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	eicar := string(scannertest.EICAR())
	const date, msgid = "Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n", "Message-ID: <notice@example.com>\r\n"
	for _, tc := range []struct {
		name string
		msg  string
		kept []string // fields the notice must copy
	}{
		{"virus in the Subject", "From: v@example.com\r\nTo: alice@example.net\r\nSubject: " + eicar + "\r\n" + date + msgid + "\r\nHello.\r\n", nil},
		{"virus in From", "From: " + eicar + "\r\nTo: alice@example.net\r\nSubject: hello\r\n" + date + msgid + "\r\nHello.\r\n", nil},
		{"virus in the body", "From: v@example.com\r\nTo: alice@example.net\r\nSubject: hello\r\n" + date + msgid + "\r\n" + eicar + "\r\n",
			[]string{"From: v@example.com\r\n", "To: alice@example.net\r\n", "Subject: [VIRUS REMOVED] hello\r\n", date, msgid}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p, logs := clamNew(t, clamav.Filter{Address: clamd.TCPURL(), QuarantineDir: dir})
			v, err := clamJudge(t, p, []byte(tc.msg), 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if v.Action != filter.Replace {
				t.Fatalf("verdict %v %q, want replace", v.Action, v.Reason)
			}
			// EICAR is printable and short: only the scan of the notice
			// can catch it in a field.
			if withheld := len(logs.FilterMessageSnippet("found a virus in the notice").All()) == 1; withheld != (tc.kept == nil) {
				t.Errorf("the notice's own scan found a virus: %v, want %v", withheld, tc.kept == nil)
			}
			notice := v.Replacement
			if bytes.Contains(notice, []byte(eicar)) {
				t.Errorf("the notice contains EICAR")
			}
			check, _ := clamNew(t, clamav.Filter{Address: clamd.UnixURL(), Action: "tag"})
			cv, err := clamJudge(t, check, notice, 30*time.Second)
			if err != nil || cv.Reason != "" {
				t.Errorf("the real clamd scans the notice: %q, %v; want clean", cv.Reason, err)
			}
			files, _ := os.ReadDir(dir)
			if len(files) != 1 {
				t.Fatalf("quarantine holds %d files", len(files))
			}
			for _, want := range append([]string{"X-Virus-Name: " + scannertest.ClamdEICARVirus + "\r\n", "\r\n    " + files[0].Name() + "\r\n"}, tc.kept...) {
				if !bytes.Contains(notice, []byte(want)) {
					t.Errorf("notice lacks %q:\n%s", want, notice)
				}
			}
		})
	}
}
