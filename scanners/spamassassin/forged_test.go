package spamassassin_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	_ "github.com/pop3proxy/pop3proxy/scanners/clamav"
	_ "github.com/pop3proxy/pop3proxy/scanners/spamassassin"
)

// fakeSpamd reads a request to the client's half-close and calls it spam.
func fakeSpamd(c net.Conn) {
	io.ReadAll(c)
	io.WriteString(c, "SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 7.5 / 5.0\r\n\r\nGTUBE")
}

// fakeClamd reads one INSTREAM request (docs/scanners.md, Commands and
// framing) and finds a virus in it.
func fakeClamd(c net.Conn) {
	cmd := make([]byte, len("zINSTREAM\x00"))
	if _, err := io.ReadFull(c, cmd); err != nil {
		return
	}
	for {
		var n uint32
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			return
		}
		if n == 0 {
			break
		}
		if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
			return
		}
	}
	io.WriteString(c, "stream: Eicar-Test-Signature FOUND\x00")
}

// TestForgedFieldsInAnyHeader: whatever a mailbox holds in the header (a
// line without a colon, an mbox From_ line, no body, LF line ends, folded
// fields), the sender's own spam and virus verdicts are removed, the
// proxy's are added at the top, the Subject is prefixed in place, and every
// other byte is the original's.
func TestForgedFieldsInAnyHeader(t *testing.T) {
	spamd, clamd := testinfra.ServeLoopback(t, 10*time.Second, fakeSpamd), testinfra.ServeLoopback(t, 10*time.Second, fakeClamd)
	ch := filtertest.MustChain(t, fmt.Sprintf(`
- type: spamassassin
  address: tcp://%s
  subject_prefix: "[SPAM]"
  timeout: 5s
- type: clamav
  address: tcp://%s
  action: tag
  timeout: 5s
`, spamd, clamd))
	const added = "X-Spam-Flag: YES\r\nX-Spam-Level: *******\r\n" +
		"X-Spam-Status: Yes, score=7.5 required=5.0 tests=GTUBE version=pop3proxy\r\n" +
		"X-Virus-Status: Infected\r\nX-Virus-Name: Eicar-Test-Signature\r\n"
	for _, tc := range []struct{ name, msg, want string }{
		{
			name: "line without a colon",
			msg: "Received: from mx.example.com by pop.example.net\r\nthis line has no colon\r\n" +
				"From: mallory@example.com\r\nX-Spam-Flag: NO\r\nSubject: cheap pills\r\n" +
				"X-Spam-Status: No, score=-5.0\r\nX-Virus-Status: Clean\r\nX-Virus-Scanned: clean (forged)\r\n\r\nbody\r\n",
			want: "Received: from mx.example.com by pop.example.net\r\nthis line has no colon\r\n" +
				"From: mallory@example.com\r\nSubject: [SPAM] cheap pills\r\n\r\nbody\r\n",
		},
		{
			name: "mbox From_ line",
			msg: "From mallory@example.com Sun Nov 22 10:00:00 2026\r\nX-Spam-Status: No\r\nSubject: hi\r\n" +
				"X-Spam-Level: \r\nX-Virus-Name: none\r\nTo: alice@example.net\r\n\r\nbody\r\n",
			want: "From mallory@example.com Sun Nov 22 10:00:00 2026\r\nSubject: [SPAM] hi\r\nTo: alice@example.net\r\n\r\nbody\r\n",
		},
		{
			name: "header without a body",
			msg:  "Subject: no body\r\nX-Spam-Flag: NO\r\nX-Virus-Status: Clean",
			want: "Subject: [SPAM] no body\r\n",
		},
		{
			name: "LF line ends",
			msg:  "From: m@example.com\nX-Spam-Flag: NO\nSubject: lf\nX-Virus-Status: Clean\n\nX-Spam-Flag: in the body\n",
			want: "From: m@example.com\nSubject: [SPAM] lf\n\nX-Spam-Flag: in the body\n",
		},
		{
			name: "folded forged fields",
			msg: "From mallory Sun Nov 22 10:00:00 2026\r\nX-Spam-Status: No, score=-5.0\r\n\ttests=ALL_TRUSTED\r\n autolearn=ham\r\n" +
				"Subject: folded\r\n subject\r\nX-Spam-Flag\t: NO\r\nX-Virus-Status:\r\n Clean\r\n\r\nbody\r\n",
			want: "From mallory Sun Nov 22 10:00:00 2026\r\nSubject: [SPAM] folded\r\n subject\r\n\r\nbody\r\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := ch.Run(context.Background(), filter.NewMessage([]byte(tc.msg), filter.Meta{User: "alice", Number: 1}))
			defer res.Close()
			if res.Outcome != filter.Deliver {
				t.Fatalf("outcome %v (%s: %s)", res.Outcome, res.Filter, res.Reason)
			}
			got, err := res.Message.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if want := added + tc.want; string(got) != want {
				t.Errorf("delivered\n%q\nwant\n%q", got, want)
			}
		})
	}
}
