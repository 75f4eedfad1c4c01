package spamassassin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// TestSpamAssassinLargeSpooled: a 20 MB message in a spool file reaches
// spamd whole, byte for byte, after an exact Content-length and followed
// by the half-close, while the process allocates a small fraction of its
// size: it is streamed, never read into memory. The fake spamd hashes
// what it receives without keeping it.
func TestSpamAssassinLargeSpooled(t *testing.T) {
	const size = 20 << 20
	line := []byte(strings.Repeat("lorem ipsum ", 6) + "\r\n")
	m := filtertest.Spooled(t, saMeta, func(w io.Writer) error {
		if _, err := io.WriteString(w, "Subject: big\r\n\r\n"); err != nil {
			return err
		}
		block := bytes.Repeat(line, (64<<10)/len(line))
		for left := size - len("Subject: big\r\n\r\n"); left > 0; left -= len(block) {
			if _, err := w.Write(block[:min(left, len(block))]); err != nil {
				return err
			}
		}
		return nil
	})
	want := sha256.New()
	if _, err := io.Copy(want, m.Open()); err != nil {
		t.Fatal(err)
	}

	type received struct {
		head    string
		n       int64
		sum     []byte
		halfEOF bool
	}
	got := make(chan received, 1)
	f := startSAFake(t, "tcp", func(c net.Conn) {
		br := bufio.NewReader(c)
		var r received
		for {
			l, err := br.ReadString('\n')
			r.head += l
			if err != nil || l == "\r\n" {
				break
			}
		}
		h := sha256.New()
		n, err := io.Copy(h, br)
		r.n, r.sum, r.halfEOF = n, h.Sum(nil), err == nil
		got <- r
		io.WriteString(c, saHamReply)
	})
	sa := newSA(t, &Filter{Address: f.addr, MaxSize: 32 << 20})
	var v filter.Verdict
	var err error
	allocated, grown := testinfra.AllocatedDuring(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		v, err = sa.Judge(ctx, m)
	})
	t.Logf("%d-byte message judged; allocated %d bytes, heap grew by %d", size, allocated, grown)
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := saField(v, "X-Spam-Status"); !strings.HasPrefix(status, "No, ") {
		t.Errorf("X-Spam-Status %q", status)
	}
	if allocated >= 8<<20 {
		t.Errorf("judging a %d MiB message allocated %d bytes: it is held in memory", size>>20, allocated)
	}
	r := <-got
	if r.head != "SYMBOLS SPAMC/1.5\r\nContent-length: "+strconv.Itoa(size)+"\r\n\r\n" {
		t.Errorf("request head %q", r.head)
	}
	if r.n != size || !bytes.Equal(r.sum, want.Sum(nil)) || !r.halfEOF {
		t.Errorf("spamd received %d bytes (half-close seen: %v), different from the %d-byte message", r.n, r.halfEOF, size)
	}
}

// TestSpamAssassinSourceFails: a message that cannot be read to its end is
// an error, never a verdict, and spamd never gets the bytes Content-length
// announced.
func TestSpamAssassinSourceFails(t *testing.T) {
	f, reqs := saReplyingFake(t, "tcp", saHamReply)
	sa := newSA(t, &Filter{Address: f.addr, MaxSize: 1 << 20})
	const size, good = 300 << 10, 100 << 10
	m := filtertest.FailingMessage(good, size, saMeta)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := sa.Judge(ctx, m)
	if err == nil {
		t.Fatalf("verdict %+v and no error for a message that cannot be read", v)
	}
	if !errors.Is(err, filtertest.ErrDiskOnFire) || !strings.Contains(err.Error(), "reading the message") {
		t.Errorf("error %v does not report the read error", err)
	}
	if ctx.Err() != nil {
		t.Errorf("took the whole timeout: %v", err)
	}
	req := <-reqs
	if head := len(spamdRequest("SYMBOLS", size, "")); len(req.Raw) >= head+size {
		t.Errorf("spamd received %d bytes, a whole request of %d", len(req.Raw), head+size)
	}
}

// TestSpamAssassinMaxConcurrentDefault: without max_concurrent, the chain
// sends spamd as many messages at once as its default --max-children
// serves, 5, and no more. The fake holds each request until 5 are in
// progress, and then a while longer for any sixth to arrive.
func TestSpamAssassinMaxConcurrentDefault(t *testing.T) {
	const limit, runs = 5, 8
	crowd := scannertest.NewCrowd(limit)
	f := startSAFake(t, "tcp", func(c net.Conn) {
		readSARequest(c)
		crowd.Hold()
		io.WriteString(c, saHamReply)
	})
	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: spamassassin, address: %s, timeout: 20s}\n", f.addr))
	scannertest.RunAtOnce(t, ch, runs, saMeta)
	if p := crowd.Peak(); p != limit {
		t.Errorf("%d checks at once, want %d (spamd's --max-children)", p, limit)
	}
}
