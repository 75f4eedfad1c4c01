package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// refCRLF is an independent statement of the conversion: normalise CRLF to
// LF, then turn every LF into CRLF; bare CRs are untouched either way.
func refCRLF(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

var crlfCases = []string{
	"",
	"\n",
	"\n\n\n",
	"\r\n",
	"\r",
	"\r\r\n\n",
	"a\nb\r\nc\rd\n",
	"no newline",
	"Subject: x\n\n.dot\n",
	strings.Repeat("x", 70000) + "\n" + strings.Repeat("\r\n\n", 20000),
}

func readAllWith(t *testing.T, r io.Reader, bufSize int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, bufSize)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestCRLFReader(t *testing.T) {
	for _, in := range crlfCases {
		want := refCRLF(in)
		for _, size := range []int{1, 2, 3, 7, 4096, 100000} {
			// OneByteReader splits every CRLF across source reads too.
			for name, src := range map[string]io.Reader{
				"whole":    strings.NewReader(in),
				"one byte": iotest.OneByteReader(strings.NewReader(in)),
			} {
				got := readAllWith(t, newCRLFReader(io.NopCloser(src)), size)
				if string(got) != want {
					t.Fatalf("%s source, %d-byte reads of %.40q: got %.60q, want %.60q", name, size, in, got, want)
				}
			}
		}
		n, err := crlfSize(strings.NewReader(in))
		if err != nil || n != int64(len(want)) {
			t.Errorf("crlfSize(%.40q) = %d, %v; want %d", in, n, err, len(want))
		}
		if n != upstreamtest.ListSize([]byte(in)) {
			t.Errorf("crlfSize(%.40q) = %d, Dovecot lists %d", in, n, upstreamtest.ListSize([]byte(in)))
		}
	}
}

func TestCRLFReaderRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("\r\n.a")
	for range 2000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		want := refCRLF(string(b))
		got := readAllWith(t, newCRLFReader(io.NopCloser(iotest.HalfReader(bytes.NewReader(b)))), 1+rng.IntN(5))
		if string(got) != want {
			t.Fatalf("%q: got %q, want %q", b, got, want)
		}
	}
}

func TestCRLFReaderPassesErrors(t *testing.T) {
	r := newCRLFReader(io.NopCloser(iotest.DataErrReader(iotest.ErrReader(errors.New("disk on fire")))))
	if _, err := io.ReadAll(r); err == nil || err.Error() != "disk on fire" {
		t.Fatalf("error %v", err)
	}
}

// testMaildir makes an empty Maildir.
func testMaildir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func put(t *testing.T, dir, sub, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, sub, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readMessage(t *testing.T, mb *mailbox, n int) string {
	t.Helper()
	rc, err := mb.Open(n)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMailboxListing(t *testing.T) {
	dir := testMaildir(t)
	longName := "1700000004.M1P1." + strings.Repeat("h", 80)
	// Written out of order, spread over new/ and cur/ (with flags).
	put(t, dir, "cur", "1700000002.M500P9.host:2,S", "Subject: b\r\n\r\ncrlf\r\n")
	put(t, dir, "new", "1700000001.M999999P9.host", "Subject: a\n\nlf\n.dot\n")
	put(t, dir, "new", "1700000002.M40P9.host", "Subject: ab\n\nunterminated")
	put(t, dir, "new", longName, "x\n")
	put(t, dir, "new", "1700000005.M1P1.has space", "y\r\n")
	put(t, dir, "new", ".hidden", "not a message\n")
	if err := os.Mkdir(filepath.Join(dir, "new", "1700000006.subdir"), 0o700); err != nil {
		t.Fatal(err)
	}

	mb, err := openMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()

	want := []struct {
		base, content string
	}{
		{"1700000001.M999999P9.host", "Subject: a\n\nlf\n.dot\n"},
		{"1700000002.M40P9.host", "Subject: ab\n\nunterminated"},
		{"1700000002.M500P9.host", "Subject: b\r\n\r\ncrlf\r\n"},
		{longName, "x\n"},
		{"1700000005.M1P1.has space", "y\r\n"},
	}
	infos := mb.Messages()
	if len(infos) != len(want) {
		t.Fatalf("%d messages, want %d: %+v", len(infos), len(want), infos)
	}
	uids := map[string]bool{}
	for i, w := range want {
		mi := infos[i]
		if mi.Size != upstreamtest.ListSize([]byte(w.content)) {
			t.Errorf("message %d (%s): size %d, want %d", i+1, w.base, mi.Size, upstreamtest.ListSize([]byte(w.content)))
		}
		got := readMessage(t, mb, i+1)
		if got != refCRLF(w.content) {
			t.Errorf("message %d: Open = %q, want %q", i+1, got, refCRLF(w.content))
		}
		if int64(len(got)) != mi.Size {
			t.Errorf("message %d: size %d but Open returned %d octets", i+1, mi.Size, len(got))
		}
		if !regexp.MustCompile(`^[\x21-\x7e]{1,70}$`).MatchString(mi.UID) || uids[mi.UID] {
			t.Errorf("message %d: invalid or duplicate UID %q", i+1, mi.UID)
		}
		uids[mi.UID] = true
	}
	if infos[0].UID != want[0].base || infos[2].UID != want[2].base {
		t.Errorf("UIDs %q, %q: want the base names without flags", infos[0].UID, infos[2].UID)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(infos[3].UID) || infos[3].UID == uidFor(want[4].base) {
		t.Errorf("long name UID %q", infos[3].UID)
	}
	if _, err := mb.Open(len(want) + 1); !errors.Is(err, pop3server.ErrNoSuchMessage) {
		t.Errorf("Open past the end: %v", err)
	}
}

func TestUIDStable(t *testing.T) {
	// The UID must not change when another reader moves the file to cur/
	// or sets flags, or clients would download the message again.
	dir := testMaildir(t)
	put(t, dir, "new", "1700000001.M1P1.host", "a\n")
	mb, err := openMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	before := mb.Messages()[0].UID
	mb.Close()
	if err := os.Rename(filepath.Join(dir, "new", "1700000001.M1P1.host"), filepath.Join(dir, "cur", "1700000001.M1P1.host:2,RS")); err != nil {
		t.Fatal(err)
	}
	mb, err = openMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	if after := mb.Messages()[0].UID; after != before {
		t.Errorf("UID changed from %q to %q", before, after)
	}
}

func TestMailboxDelete(t *testing.T) {
	dir := testMaildir(t)
	put(t, dir, "new", "1700000001.M1P1.host", "one\n")
	put(t, dir, "new", "1700000002.M1P1.host", "two\n")
	put(t, dir, "cur", "1700000003.M1P1.host:2,", "three\n")
	mb, err := openMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Another reader moves message 1 to cur/ during the session: it must
	// still be found, read and deleted.
	if err := os.Rename(filepath.Join(dir, "new", "1700000001.M1P1.host"), filepath.Join(dir, "cur", "1700000001.M1P1.host:2,S")); err != nil {
		t.Fatal(err)
	}
	if got := readMessage(t, mb, 1); got != "one\r\n" {
		t.Errorf("moved message reads %q", got)
	}
	if err := mb.Delete([]int{1, 3}); err != nil {
		t.Fatal(err)
	}
	mb.Close()

	var left []string
	for _, sub := range []string{"new", "cur"} {
		des, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, de := range des {
			left = append(left, sub+"/"+de.Name())
		}
	}
	if len(left) != 1 || left[0] != "new/1700000002.M1P1.host" {
		t.Errorf("left after Delete: %q", left)
	}
}

func TestMailboxDeleteFailure(t *testing.T) {
	dir := testMaildir(t)
	put(t, dir, "new", "1700000001.M1P1.host", "one\n")
	mb, err := openMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	// A non-empty directory in the message's place cannot be removed,
	// not even by root.
	path := filepath.Join(dir, "new", "1700000001.M1P1.host")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = mb.Delete([]int{1})
	var perr *pop3server.Error
	if !errors.As(err, &perr) || perr.Message != "some deleted messages not removed" || perr.Err == nil {
		t.Errorf("Delete of an unremovable file: %v", err)
	}
}

func TestMailboxLock(t *testing.T) {
	dir := testMaildir(t)
	first, err := openMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openMailbox(dir); !errors.Is(err, pop3server.ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := openMailbox(dir)
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	second.Close()
	if err := second.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestBackendAuth(t *testing.T) {
	dir := testMaildir(t)
	b := &backend{dir: dir, user: "demo", password: "pw"}
	ctx := context.Background()
	for _, c := range []struct{ user, pass string }{{"demo", "wrong"}, {"other", "pw"}, {"demo", ""}, {"", "pw"}, {"demo", "pw "}} {
		if _, err := b.Login(ctx, nil, c.user, c.pass); !errors.Is(err, pop3server.ErrAuthFailed) {
			t.Errorf("Login(%q, %q): %v", c.user, c.pass, err)
		}
	}
	sess, err := b.Login(ctx, nil, "demo", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Login(ctx, nil, "demo", "pw"); !errors.Is(err, pop3server.ErrInUse) {
		t.Errorf("second login: %v, want ErrInUse", err)
	}
	sess.Close()

	// RFC 1939's example, with this backend's password.
	ts := "<1896.697170952@dbc.mtview.ca.us>"
	digest := pop3server.APOPDigest(ts, "pw")
	if _, err := b.LoginAPOP(ctx, nil, "demo", ts, pop3server.APOPDigest(ts, "wrong")); !errors.Is(err, pop3server.ErrAuthFailed) {
		t.Errorf("APOP with a wrong digest: %v", err)
	}
	if _, err := b.LoginAPOP(ctx, nil, "other", ts, digest); !errors.Is(err, pop3server.ErrAuthFailed) {
		t.Errorf("APOP as another user: %v", err)
	}
	sess, err = b.LoginAPOP(ctx, nil, "demo", ts, strings.ToUpper(digest))
	if err != nil {
		t.Fatalf("APOP: %v", err)
	}
	sess.Close()
}

func TestInitMaildir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "Maildir")
	n, err := initMaildir(dir)
	if err != nil || n != len(sampleMessages) {
		t.Fatalf("initMaildir = %d, %v", n, err)
	}
	if err := checkMaildir(dir); err != nil {
		t.Fatal(err)
	}
	// A second -init leaves a Maildir with mail alone.
	if n, err := initMaildir(dir); err != nil || n != 0 {
		t.Fatalf("second initMaildir = %d, %v", n, err)
	}
	mb, err := openMailbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	if got := len(mb.Messages()); got != len(sampleMessages) {
		t.Fatalf("%d messages after -init", got)
	}
	for i, want := range sampleMessages {
		got := readMessage(t, mb, i+1)
		if got != refCRLF(want) {
			t.Errorf("sample %d out of order or changed: %.60q", i+1, got)
		}
		if _, err := mail.ReadMessage(strings.NewReader(got)); err != nil {
			t.Errorf("sample %d is not a message: %v", i+1, err)
		}
	}
	if !strings.Contains(readMessage(t, mb, 2), "\r\n.\r\n") {
		t.Error("the dot sample has no lone-dot line")
	}

	// The multipart sample has an attachment.
	msg, err := mail.ReadMessage(strings.NewReader(readMessage(t, mb, 3)))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var files []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.FileName() != "" {
			files = append(files, p.FileName())
		}
	}
	if len(files) != 1 || files[0] != "hello.txt" {
		t.Errorf("attachments %q", files)
	}
}

func TestCheckMaildir(t *testing.T) {
	dir := t.TempDir()
	if err := checkMaildir(dir); err == nil || !strings.Contains(err.Error(), "-init") {
		t.Errorf("empty dir: %v", err)
	}
	if err := checkMaildir(testMaildir(t)); err != nil {
		t.Error(err)
	}
}
