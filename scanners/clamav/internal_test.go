package clamav

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/pop3proxy/pop3proxy/filter"
)

func TestParseClamdReply(t *testing.T) {
	for _, tc := range []struct {
		reply, virus string
		tooLarge     bool // an error wrapping ErrTooLarge
		ok           bool
	}{
		{reply: "stream: OK", ok: true},
		{reply: "stream: Eicar-Test-Signature FOUND", virus: "Eicar-Test-Signature", ok: true},
		{reply: "stream: Eicar-Test-Signature-NDB.UNOFFICIAL FOUND", virus: "Eicar-Test-Signature-NDB.UNOFFICIAL", ok: true},
		{reply: "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND", virus: "Heuristics.Limits.Exceeded.MaxFileSize", ok: true},
		{reply: "stream: Win.Test.Name With Space FOUND", virus: "Win.Test.Name With Space", ok: true},
		{reply: "stream:  FOUND", virus: "unknown", ok: true},
		{reply: "stream: Evil\rBcc: x FOUND", virus: "Evil?Bcc: x", ok: true},
		{reply: "INSTREAM size limit exceeded. ERROR", tooLarge: true},
		{reply: "COMMAND READ TIMED OUT"},
		{reply: "stream: Can't allocate memory ERROR"},
		{reply: "UNKNOWN COMMAND"},
		{reply: ""},
		{reply: "stream: FOUND"},
		{reply: "stream: OK "},
		{reply: "stream:OK"},
		{reply: "Stream: OK"},
		{reply: "OK"},
		{reply: "PONG"},
		{reply: "1: stream: OK"},
		{reply: "stream: Eicar FOUND "},
	} {
		virus, err := parseClamdReply(tc.reply)
		switch {
		case tc.ok && (err != nil || virus != tc.virus):
			t.Errorf("%q: got (%q, %v), want (%q, nil)", tc.reply, virus, err, tc.virus)
		case !tc.ok && err == nil:
			t.Errorf("%q: got (%q, nil), want an error", tc.reply, virus)
		case !tc.ok && errors.Is(err, ErrTooLarge) != tc.tooLarge:
			t.Errorf("%q: error %v; wraps ErrTooLarge: %v, want %v", tc.reply, err, !tc.tooLarge, tc.tooLarge)
		case !tc.ok && errors.Is(err, filter.ErrTooLarge) != tc.tooLarge:
			t.Errorf("%q: error %v; wraps filter.ErrTooLarge: %v, want %v", tc.reply, err, !tc.tooLarge, tc.tooLarge)
		}
	}
}

func TestClamdSafeName(t *testing.T) {
	for in, want := range map[string]string{
		"Eicar-Test-Signature.UNOFFICIAL": "Eicar-Test-Signature.UNOFFICIAL",
		"a\r\nb":                          "a??b",
		"a\x00b\x7f\xc3\xa4":              "a?b???",
		"":                                "unknown",
		" \t":                             "unknown",
		"\r\n":                            "unknown",
		"  spaced  ":                      "spaced",
		strings.Repeat("n", 300):          strings.Repeat("n", clamdMaxName-3) + "...",
	} {
		if got := clamdSafeName(in); got != want {
			t.Errorf("clamdSafeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteClamdStream(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{"", "zINSTREAM\x00\x00\x00\x00\x00"},
		{"abc", "zINSTREAM\x00\x00\x00\x00\x03abc\x00\x00\x00\x00"},
	} {
		var b bytes.Buffer
		if err := writeClamdStream(&b, strings.NewReader(tc.msg), int64(len(tc.msg))); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("%q: wrote %q, want %q", tc.msg, b.String(), tc.want)
		}
	}
	msg := bytes.Repeat([]byte("0123456789abcdef"), (2*clamdChunk+5)/16+1)[:2*clamdChunk+5]
	var b bytes.Buffer
	if err := writeClamdStream(&b, bytes.NewReader(msg), int64(len(msg))); err != nil {
		t.Fatal(err)
	}
	want := []byte("zINSTREAM\x00")
	for _, part := range [][]byte{msg[:clamdChunk], msg[clamdChunk : 2*clamdChunk], msg[2*clamdChunk:]} {
		want = append(want, byte(len(part)>>24), byte(len(part)>>16), byte(len(part)>>8), byte(len(part)))
		want = append(want, part...)
	}
	want = append(want, 0, 0, 0, 0)
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("a %d-byte message is not framed as three chunks of at most %d bytes", len(msg), clamdChunk)
	}
}

// clamavTestOriginal has every field the notice keeps, in an unusual
// order and spelling, folded, with an encoded word, plus fields it drops.
const clamavTestOriginal = "Received: from mx.example.com by pop.example.net; Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
	"Message-Id: <virus.1@example.com>\r\n" +
	"From: \"Mallory Sender\" <mallory@example.com>\r\n" +
	"To: alice@example.net,\r\n\tbob@example.net\r\n" +
	"cc: carol@example.net\r\n" +
	"Subject: =?UTF-8?B?w6TDtsO8?=\r\n invoice   attached\r\n" +
	"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"b\"\r\n" +
	"X-Virus-Status: Clean\r\n" +
	"\r\n" +
	"--b\r\nContent-Type: application/octet-stream\r\n\r\nPAYLOAD\r\n--b--\r\n"

func TestClamavNotice(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 5, 0, 0, time.UTC)
	notice := virusNotice(strings.NewReader(clamavTestOriginal), "Eicar-Test-Signature", "20261122T100500Z-0123456789abcdef.eml", now)
	t.Logf("notice:\n%s", notice)
	s := string(notice)
	for _, want := range []string{
		"Message-Id: <virus.1@example.com>\r\n",
		"From: \"Mallory Sender\" <mallory@example.com>\r\n",
		"To: alice@example.net,\r\n\tbob@example.net\r\n",
		"cc: carol@example.net\r\n",
		"Subject: [VIRUS REMOVED] =?UTF-8?B?w6TDtsO8?=\r\n invoice   attached\r\n",
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n",
		"\r\n    20261122T100500Z-0123456789abcdef.eml\r\n",
		"\r\n    Eicar-Test-Signature\r\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("notice lacks %q", want)
		}
	}
	for _, bad := range []string{"Received:", "multipart", "PAYLOAD", "X-Virus-Status: Clean", "boundary"} {
		if strings.Contains(s, bad) {
			t.Errorf("notice contains %q from the original", bad)
		}
	}
	if !strings.HasPrefix(s, "X-Virus-Status: Infected\r\nX-Virus-Name: Eicar-Test-Signature\r\n") {
		t.Errorf("notice does not start with its status fields")
	}
	clamavCheckNotice(t, notice)

	// Not kept; missing fields get placeholders.
	notice = virusNotice(strings.NewReader("To: alice@example.net\r\n\r\nbody\r\n"), "V", "", now)
	s = string(notice)
	for _, want := range []string{"From: pop3proxy virus filter <postmaster@pop3proxy.invalid>\r\n",
		"Date: Sun, 22 Nov 2026 10:05:00 +0000\r\n", "Subject: [VIRUS REMOVED]\r\n", "To: alice@example.net\r\n",
		"The original message was not kept."} {
		if !strings.Contains(s, want) {
			t.Errorf("notice without From, Date and Subject lacks %q:\n%s", want, s)
		}
	}
	clamavCheckNotice(t, notice)

	// A header that does not parse (an mbox From_ line).
	notice = virusNotice(strings.NewReader("From mallory Sun Nov 22 10:00:00 2026\r\nSubject: x\r\n\r\nbody\r\n"), "V", "", now)
	if !strings.Contains(string(notice), "Subject: [VIRUS REMOVED] (original header unreadable)\r\n") {
		t.Errorf("notice for an unreadable header:\n%s", notice)
	}
	clamavCheckNotice(t, notice)

	// A header longer than maxHeader is not trusted either.
	huge := "Subject: big\r\nX-Pad: " + strings.Repeat("p", maxHeader) + "\r\n\r\nbody\r\n"
	if notice = virusNotice(strings.NewReader(huge), "V", "", now); !strings.Contains(string(notice), "(original header unreadable)") {
		t.Errorf("header over the limit was read")
	}
	clamavCheckNotice(t, notice)
}

// clamavCheckNotice checks that a notice is a well-formed message: CRLF
// only, lines under 998 octets, 7-bit body, a header that parses with the
// MIME fields.
func clamavCheckNotice(t *testing.T, notice []byte) {
	t.Helper()
	for i, c := range notice {
		if c == '\n' && (i == 0 || notice[i-1] != '\r') {
			t.Fatalf("bare LF at %d", i)
		}
		if c == '\r' && (i+1 == len(notice) || notice[i+1] != '\n') {
			t.Fatalf("bare CR at %d", i)
		}
	}
	for _, line := range strings.Split(string(notice), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line of %d octets", len(line))
		}
	}
	br := bufio.NewReader(bytes.NewReader(notice))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatalf("notice header does not parse: %v", err)
	}
	for k, v := range map[string]string{"Mime-Version": "1.0", "Content-Type": "text/plain; charset=utf-8",
		"Content-Transfer-Encoding": "7bit", "X-Virus-Status": "Infected"} {
		if got := h.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want [%q]", k, got, v)
		}
	}
	body, _ := br.ReadBytes(0)
	for _, c := range body {
		if c >= 0x80 {
			t.Fatalf("8-bit byte in the body")
		}
	}
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		t.Errorf("body does not end in CRLF")
	}
}

// TestClamavNoticeUnsafeFields: the notice copies a field only when it is
// at most maxNoticeField octets unfolded and printable, and only the first
// of each name; the others are left out or replaced by the proxy's own.
func TestClamavNoticeUnsafeFields(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 5, 0, 0, time.UTC)
	exact := "Subject: " + strings.Repeat("s", maxNoticeField-len("Subject: ")-10) + "\r\n " + strings.Repeat("t", 9)
	for _, tc := range []struct {
		name       string
		header     string
		want, lack []string
	}{
		{
			name:   "long and control characters",
			header: "From: \"M\x01\" <m@example.com>\r\nTo: alice@example.net\r\nSubject: " + strings.Repeat("x", maxNoticeField) + "\r\n",
			want: []string{"From: pop3proxy virus filter <postmaster@pop3proxy.invalid>\r\n", "To: alice@example.net\r\n",
				"Subject: [VIRUS REMOVED] (original subject not shown)\r\n", "left out"},
			lack: []string{"m@example.com", "xxxxxxxxxx"},
		},
		{
			name:   "exactly the limit, folded",
			header: exact + "\r\nFrom: a@example.com\r\n",
			want:   []string{"Subject: [VIRUS REMOVED] " + exact[len("Subject: "):] + "\r\n", "From: a@example.com\r\n"},
		},
		{
			name:   "one over the limit",
			header: exact + "t\r\nFrom: a@example.com\r\n",
			want:   []string{"Subject: [VIRUS REMOVED] (original subject not shown)\r\n"},
			lack:   []string{"sssss"},
		},
		{
			name:   "UTF-8: printable kept, format characters and invalid bytes not",
			header: "Cc: J\xc3\xb6rg <j@example.com>\r\nTo: \xe2\x80\xaeevil@example.com\r\nDate: Sun, 22 Nov 2026 10:00:00 \xff\r\nSubject: bare\rCR\r\n",
			want:   []string{"Cc: J\xc3\xb6rg <j@example.com>\r\n", "Date: Sun, 22 Nov 2026 10:05:00 +0000\r\n", "Subject: [VIRUS REMOVED] (original subject not shown)\r\n"},
			lack:   []string{"evil", "\xff", "bare"},
		},
		{
			name:   "first of each name only",
			header: "Message-ID: <one@example.com>\r\nMessage-ID: <two@example.com>\r\nSubject: one\r\nsubject: two\r\n",
			want:   []string{"Message-ID: <one@example.com>\r\n", "Subject: [VIRUS REMOVED] one\r\n"},
			lack:   []string{"two"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notice := virusNotice(strings.NewReader(tc.header+"\r\nbody\r\n"), "V", "", now)
			t.Logf("notice:\n%s", notice)
			for _, want := range tc.want {
				if !bytes.Contains(notice, []byte(want)) {
					t.Errorf("notice lacks %q", want)
				}
			}
			for _, lack := range tc.lack {
				if bytes.Contains(notice, []byte(lack)) {
					t.Errorf("notice contains %q", lack)
				}
			}
			clamavCheckNotice(t, notice)
		})
	}
}

// TestQuarantineRefusalLog: a refusal is logged at most once a minute,
// with the number of refusals since the last one logged.
func TestQuarantineRefusalLog(t *testing.T) {
	var r refusalLog
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		at    time.Duration
		count int
		log   bool
	}{
		{0, 1, true}, {10 * time.Second, 0, false}, {59 * time.Second, 0, false},
		{60 * time.Second, 3, true}, {61 * time.Second, 0, false}, {10 * time.Minute, 2, true},
	} {
		count, log := r.note(t0.Add(step.at))
		if count != step.count || log != step.log {
			t.Errorf("refusal at %v: (%d, %v), want (%d, %v)", step.at, count, log, step.count, step.log)
		}
	}
}

// endlessReader yields its byte forever.
type endlessReader byte

func (e endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(e)
	}
	return len(p), nil
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestClamavNoticeReadsOnlyTheHeader: the notice reads at most maxHeader
// bytes of the original, however long its body or its header.
func TestClamavNoticeReadsOnlyTheHeader(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 5, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, start, want string
	}{
		{"endless body", "Subject: short\r\n\r\n", "Subject: [VIRUS REMOVED] short\r\n"},
		{"endless header", "Subject: short\r\nX-Pad: ", "(original header unreadable)"},
	} {
		src := &countingReader{r: io.MultiReader(strings.NewReader(tc.start), endlessReader('x'))}
		notice := virusNotice(src, "V", "", now)
		if src.n > maxHeader {
			t.Errorf("%s: read %d bytes of the original, more than maxHeader (%d)", tc.name, src.n, maxHeader)
		}
		if !bytes.Contains(notice, []byte(tc.want)) {
			t.Errorf("%s: notice lacks %q:\n%s", tc.name, tc.want, notice)
		}
		clamavCheckNotice(t, notice)
	}
}
