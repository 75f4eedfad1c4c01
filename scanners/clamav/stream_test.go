package clamav_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/clamav"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// clamJudgeMessage is clamJudge for a Message.
func clamJudgeMessage(p *clamav.Filter, m *filter.Message, timeout time.Duration) (filter.Verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Judge(ctx, m)
}

// TestClamAVRealClamdSpooled: a message the proxy keeps in a spool file is
// scanned as it is, over both sockets: EICAR in it is found, clean mail is
// clean.
func TestClamAVRealClamdSpooled(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	infected := []byte("From: v@example.com\r\nTo: alice@example.net\r\nSubject: spooled\r\n\r\nHello,\r\n" +
		string(scannertest.EICAR()) + "\r\n")
	clean := []byte("From: a@example.com\r\nTo: alice@example.net\r\nSubject: spooled\r\n\r\nHello.\r\n")
	for _, address := range []string{clamd.UnixURL(), clamd.TCPURL()} {
		p, _ := clamNew(t, clamav.Filter{Address: address, Action: "tag"})
		v, err := clamJudgeMessage(p, filtertest.SpooledBytes(t, clamMeta, infected), 30*time.Second)
		if err != nil || v.Reason != "virus "+scannertest.ClamdEICARVirus {
			t.Errorf("%s: spooled EICAR: %+v, %v; want virus %s", address, v, err, scannertest.ClamdEICARVirus)
		}
		v, err = clamJudgeMessage(p, filtertest.SpooledBytes(t, clamMeta, clean), 30*time.Second)
		if err != nil || v.Reason != "" || len(v.Edits) != 4 {
			t.Errorf("%s: spooled clean message: %+v, %v", address, v, err)
		}
	}
}

// TestClamAVRealClamdLargeSpooled: a 40 MB spooled message with EICAR at
// its very end is sent whole (clamd finds the virus), quarantined byte
// for byte and replaced by a notice with its fields, while the process
// allocates a small fraction of its size: the message is streamed from
// the spool, never read into memory.
func TestClamAVRealClamdLargeSpooled(t *testing.T) {
	clamd := scannertest.StartClamdWith(t, scannertest.ClamdOptions{StreamMaxLength: "50M"})
	const size = 40 << 20
	const header = "From: \"V\" <v@example.com>\r\nTo: alice@example.net\r\nSubject: big\r\n" +
		"Message-ID: <big@example.com>\r\n\r\n"
	tail := append(scannertest.EICAR(), "\r\n"...)
	m := filtertest.Spooled(t, clamMeta, func(w io.Writer) error {
		if _, err := io.WriteString(w, header); err != nil {
			return err
		}
		line := []byte(strings.Repeat("lorem ipsum ", 6) + "\r\n")
		block := bytes.Repeat(line, (64<<10)/len(line))
		for left := size - len(header) - len(tail); left > 0; left -= len(block) {
			if _, err := w.Write(block[:min(left, len(block))]); err != nil {
				return err
			}
		}
		_, err := w.Write(tail)
		return err
	})
	if m.Size() != size {
		t.Fatalf("test message is %d bytes", m.Size())
	}

	dir := t.TempDir()
	p, _ := clamNew(t, clamav.Filter{Address: clamd.UnixURL(), QuarantineDir: dir, MaxStreamSize: 50 << 20})
	var v filter.Verdict
	var err error
	start := time.Now()
	allocated, grown := testinfra.AllocatedDuring(func() { v, err = clamJudgeMessage(p, m, 120*time.Second) })
	t.Logf("%d-byte message judged in %v; allocated %d bytes, heap grew by %d", size, time.Since(start), allocated, grown)
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != filter.Replace || v.Reason != "virus "+scannertest.ClamdEICARVirus {
		t.Fatalf("verdict %v %q, want the virus at the end found", v.Action, v.Reason)
	}
	if allocated >= 8<<20 {
		t.Errorf("judging a %d MiB message allocated %d bytes: it is held in memory", size>>20, allocated)
	}
	for _, want := range []string{"From: \"V\" <v@example.com>\r\n", "Subject: [VIRUS REMOVED] big\r\n", "Message-ID: <big@example.com>\r\n"} {
		if !bytes.Contains(v.Replacement, []byte(want)) {
			t.Errorf("notice lacks %q:\n%s", want, v.Replacement)
		}
	}

	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("quarantine holds %d files, want 1", len(files))
	}
	f, err := os.Open(filepath.Join(dir, files[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kept, orig := sha256.New(), sha256.New()
	n, err := io.Copy(kept, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(orig, m.Open()); err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(kept.Sum(nil), orig.Sum(nil)) {
		t.Errorf("quarantined %d bytes differ from the %d-byte original", n, size)
	}
}

// TestClamAVTooLarge: a message over max_stream is a permanent failure
// (filter.ErrTooLarge), for which the chain applies its oversize policy,
// not on_error: tag delivers it marked, pass unmarked, reject refuses it;
// none answers with a temporary failure the client would retry forever.
func TestClamAVTooLarge(t *testing.T) {
	var conns atomic.Int32
	addr := clamFake(t, "tcp", func(c net.Conn) {
		conns.Add(1)
		clamReplying(t, "stream: OK\x00", nil)(c)
	})
	msg := []byte("Subject: big\r\n\r\n" + strings.Repeat("x", 1001-len("Subject: big\r\n\r\n")))
	p, _ := clamNew(t, clamav.Filter{Address: addr, MaxStreamSize: 1000})
	v, err := clamJudge(t, p, msg, 5*time.Second)
	clamAssertError(t, v, err, "max_stream is 1000")
	if !errors.Is(err, filter.ErrTooLarge) {
		t.Errorf("error %v does not wrap filter.ErrTooLarge", err)
	}

	for _, tc := range []struct {
		oversize filter.Oversize
		outcome  filter.Outcome
		prefix   string
	}{
		{filter.OversizeTag, filter.Deliver, "X-Pop3proxy-Unscanned: clamav: too large (1001 octets)\r\n"},
		{filter.OversizePass, filter.Deliver, ""},
		{filter.OversizeReject, filter.Refuse, ""},
	} {
		t.Run(tc.oversize.String(), func(t *testing.T) {
			ch := filtertest.MustChain(t, fmt.Sprintf("- {type: clamav, address: %s, max_stream: 1000, on_error: tempfail, timeout: 5s}\n", addr))
			ch.SetOversize(tc.oversize)
			res, out := clamRun(t, ch, msg)
			if res.Outcome != tc.outcome {
				t.Fatalf("outcome %v (%s: %s), want %v", res.Outcome, res.Filter, res.Reason, tc.outcome)
			}
			if tc.outcome == filter.Deliver && string(out) != tc.prefix+string(msg) {
				t.Errorf("delivered\n%q\nwant\n%q", out, tc.prefix+string(msg))
			}
		})
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections to clamd for messages over max_stream", n)
	}
}

// TestClamAVRealClamdTooLarge: a real clamd whose StreamMaxLength is below
// max_stream refuses the stream; that is filter.ErrTooLarge too, and the
// chain delivers the message tagged instead of failing it temporarily.
func TestClamAVRealClamdTooLarge(t *testing.T) {
	clamd := scannertest.StartClamdWith(t, scannertest.ClamdOptions{StreamMaxLength: "1M"})
	big := clamPadded(1<<20 + 100<<10)
	p, _ := clamNew(t, clamav.Filter{Address: clamd.TCPURL()})
	v, err := clamJudgeMessage(p, filtertest.SpooledBytes(t, clamMeta, big), 30*time.Second)
	clamAssertError(t, v, err, "size limit exceeded")
	if !errors.Is(err, filter.ErrTooLarge) {
		t.Errorf("error %v does not wrap filter.ErrTooLarge", err)
	}

	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: clamav, address: %s, on_error: tempfail, timeout: 30s}\n", clamd.UnixURL()))
	ch.SetOversize(filter.OversizeTag)
	res, out := clamRunMessage(t, ch, filtertest.SpooledBytes(t, clamMeta, big))
	if res.Outcome != filter.Deliver {
		t.Fatalf("outcome %v (%s: %s), want the message delivered tagged", res.Outcome, res.Filter, res.Reason)
	}
	want := fmt.Sprintf("X-Pop3proxy-Unscanned: clamav: too large (%d octets)\r\n", len(big))
	if !bytes.Equal(out, append([]byte(want), big...)) {
		t.Errorf("delivered message does not start with %q followed by the original", want)
	}
}

// TestClamAVMaxStreamLimitsMaxSize: the proxy can refuse a max_size above
// max_stream, which would let messages in between pass unscanned.
func TestClamAVMaxStreamLimitsMaxSize(t *testing.T) {
	ch := filtertest.MustChain(t, "- {type: clamav, name: big, address: tcp://127.0.0.1:3310, max_stream: 50MiB}\n"+
		"- {type: clamav, name: default, address: tcp://127.0.0.1:3310}\n")
	if errs := ch.CheckMaxSize(25 << 20); len(errs) != 0 {
		t.Errorf("max_size equal to the default max_stream: %v", errs)
	}
	errs := ch.CheckMaxSize(25<<20 + 1)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "filters[1].max_stream") {
		t.Errorf("max_size over the default max_stream: %v, want one error naming filters[1].max_stream", errs)
	}
	if errs := ch.CheckMaxSize(50<<20 + 1); len(errs) != 2 || !strings.Contains(errs[0].Error(), "filters[0].max_stream") {
		t.Errorf("max_size over max_stream 50MiB: %v, want errors for both filters", errs)
	}
}

// TestClamAVMaxConcurrentDefault: without max_concurrent, the chain sends
// clamd as many scans at once as its MaxThreads serves, 10, and no more.
// The fake holds each scan until 10 are in progress, and then a while
// longer for any eleventh to arrive.
func TestClamAVMaxConcurrentDefault(t *testing.T) {
	const limit, runs = 10, 15
	crowd := scannertest.NewCrowd(limit)
	addr := clamFake(t, "tcp", func(c net.Conn) {
		if _, _, err := clamReadStream(c); err != nil {
			t.Errorf("fake clamd: %v", err)
			return
		}
		crowd.Hold()
		io.WriteString(c, "stream: OK\x00")
	})
	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: clamav, address: %s, timeout: 20s}\n", addr))
	scannertest.RunAtOnce(t, ch, runs, clamMeta)
	if p := crowd.Peak(); p != limit {
		t.Errorf("%d scans at once, want %d (clamd's MaxThreads)", p, limit)
	}
}

// TestClamAVSourceFails: a message that cannot be read to its end is an
// error, never a verdict, and clamd never gets a terminated stream to
// call clean.
func TestClamAVSourceFails(t *testing.T) {
	streams := make(chan error, 1)
	addr := clamFake(t, "unix", func(c net.Conn) {
		_, _, err := clamReadStream(c)
		streams <- err
		if err == nil {
			io.WriteString(c, "stream: OK\x00")
		}
	})
	p, _ := clamNew(t, clamav.Filter{Address: addr})
	m := filtertest.FailingMessage(100<<10, 300<<10, clamMeta)
	start := time.Now()
	v, err := clamJudgeMessage(p, m, 5*time.Second)
	clamAssertError(t, v, err, "reading the message")
	if !errors.Is(err, filtertest.ErrDiskOnFire) || errors.Is(err, filter.ErrTooLarge) {
		t.Errorf("error %v does not wrap the read error alone", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v", took)
	}
	if serr := <-streams; serr == nil {
		t.Error("clamd received a complete stream of a message that could not be read")
	}
}
