package spamassassin

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// Tests against a real spamd (Debian package spamd), started by
// scannertest.StartSpamd; skipped when it is not installed, unless
// integration tests are required.

// saHam is ordinary mail, well under SpamAssassin's threshold with local
// tests only.
func saHam(subject string, body string) []byte {
	return []byte("Received: from mail.example.com (mail.example.com [192.0.2.10])\r\n" +
		"\tby mx.example.net with ESMTPS id 4Xyz; Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <20261122100000.12345@mail.example.com>\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"From: Alice Example <alice@example.com>\r\n" +
		"To: Bob Example <bob@example.net>\r\n" +
		"Subject: " + subject + "\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n" + body)
}

const saHamBody = "Hi Bob,\r\n\r\nthe minutes of Tuesday's meeting are below. We agreed to move the\r\n" +
	"review to Thursday afternoon and to keep the current schedule otherwise.\r\n\r\nBest,\r\nAlice\r\n"

func TestSpamAssassinRealSpamd(t *testing.T) {
	sd := scannertest.StartSpamd(t)
	sa := newSA(t, &Filter{Address: "tcp://" + sd.Addr, SubjectPrefix: "[SPAM]"})
	judge := func(t *testing.T, msg []byte) (filter.Verdict, time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		v, err := sa.Judge(ctx, saMessage(msg))
		if err != nil {
			t.Fatalf("Judge: %v\nspamd log:\n%s", err, sd.LogTail(10))
		}
		return v, time.Since(start)
	}

	t.Run("GTUBE", func(t *testing.T) {
		msg := saHam("meeting notes", "Hi Bob,\r\n\r\n"+string(scannertest.GTUBE())+"\r\n")
		v, took := judge(t, msg)
		t.Logf("GTUBE judged in %v; edits:", took)
		for _, e := range v.Edits {
			t.Logf("  %+v", e)
		}
		status, _ := saField(v, "X-Spam-Status")
		var score, required float64
		var tests string
		if _, err := fmt.Sscanf(status, "Yes, score=%f required=%f tests=%s", &score, &required, &tests); err != nil {
			t.Fatalf("X-Spam-Status %q: %v", status, err)
		}
		if score < 1000 || required != 5 {
			t.Errorf("score %v required %v, want >= 1000 and 5", score, required)
		}
		if !slices.Contains(strings.Split(tests, ","), "GTUBE") {
			t.Errorf("tests %q lack GTUBE", tests)
		}
		if flag, ok := saField(v, "X-Spam-Flag"); !ok || flag != "YES" {
			t.Errorf("X-Spam-Flag %q %v", flag, ok)
		}
		if level, _ := saField(v, "X-Spam-Level"); level != strings.Repeat("*", 50) {
			t.Errorf("X-Spam-Level %q", level)
		}
		if !slices.Contains(v.Edits, filter.SubjectPrefix("[SPAM] ")) {
			t.Errorf("no Subject prefix in %+v", v.Edits)
		}
		if v.Action != filter.Continue || !strings.HasPrefix(v.Reason, "spam score 10") {
			t.Errorf("verdict %v %q", v.Action, v.Reason)
		}
	})

	t.Run("ham", func(t *testing.T) {
		v, took := judge(t, saHam("meeting notes", saHamBody))
		status, _ := saField(v, "X-Spam-Status")
		t.Logf("ham judged in %v: X-Spam-Status: %s", took, status)
		if !strings.HasPrefix(status, "No, score=") {
			t.Errorf("X-Spam-Status %q", status)
		}
		for _, e := range v.Edits {
			if e.Op == filter.PrefixSubject || e.Op == filter.AddField && e.Name == "X-Spam-Flag" {
				t.Errorf("ham got %+v", e)
			}
		}
		if v.Action != filter.Continue || v.Reason != "" {
			t.Errorf("verdict %v %q", v.Action, v.Reason)
		}
	})

	// GTUBE is a body rule (docs/scanners.md, spamd sizes and rules): in
	// a header field it does nothing, which shows spamd judged the message
	// as sent. Not the Subject: body rules see it as the body's first line.
	t.Run("GTUBE in a header field", func(t *testing.T) {
		msg := append([]byte("X-Note: "+string(scannertest.GTUBE())+"\r\n"), saHam("notes", saHamBody)...)
		v, _ := judge(t, msg)
		if status, _ := saField(v, "X-Spam-Status"); !strings.HasPrefix(status, "No, ") || strings.Contains(status, "GTUBE") {
			t.Errorf("X-Spam-Status %q", status)
		}
	})

	// Messages spamd sees byte-exact whatever they contain, and with a
	// User header, which spamd -x ignores.
	t.Run("odd bytes and user", func(t *testing.T) {
		sa := newSA(t, &Filter{Address: "tcp://" + sd.Addr, User: "alice"})
		msg := saHam("bytes", "\x00\xff\r\n.\r\nbare\nlf\r\n"+string(scannertest.GTUBE()))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		v, err := sa.Judge(ctx, saMessage(msg))
		if err != nil {
			t.Fatal(err)
		}
		if flag, _ := saField(v, "X-Spam-Flag"); flag != "YES" {
			t.Errorf("GTUBE without a final newline not found: %+v", v.Edits)
		}
	})

	// A message the proxy keeps in a spool file is checked as it is.
	t.Run("spooled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		spam := saHam("spooled", "Hi Bob,\r\n\r\n"+string(scannertest.GTUBE())+"\r\n")
		v, err := sa.Judge(ctx, filtertest.SpooledBytes(t, saMeta, spam))
		if err != nil {
			t.Fatalf("Judge: %v\nspamd log:\n%s", err, sd.LogTail(10))
		}
		if status, _ := saField(v, "X-Spam-Status"); !strings.HasPrefix(status, "Yes, score=10") || !strings.Contains(status, "GTUBE") {
			t.Errorf("spooled GTUBE: X-Spam-Status %q", status)
		}
		v, err = sa.Judge(ctx, filtertest.SpooledBytes(t, saMeta, saHam("spooled", saHamBody)))
		if err != nil {
			t.Fatal(err)
		}
		if status, _ := saField(v, "X-Spam-Status"); !strings.HasPrefix(status, "No, ") {
			t.Errorf("spooled ham: X-Spam-Status %q", status)
		}
	})

	// Judge is called concurrently by sessions; spamd (one child here)
	// queues the connections.
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		start := time.Now()
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := saHam(fmt.Sprintf("note %d", i), saHamBody)
				if i%2 == 0 {
					msg = append(msg, scannertest.GTUBE()...)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				v, err := sa.Judge(ctx, saMessage(msg))
				if err != nil {
					t.Errorf("message %d: %v", i, err)
					return
				}
				if _, spam := saField(v, "X-Spam-Flag"); spam != (i%2 == 0) {
					t.Errorf("message %d: spam=%v", i, spam)
				}
			}()
		}
		wg.Wait()
		t.Logf("4 concurrent checks in %v", time.Since(start))
	})

	// Timing for the largest message the default max_size sends.
	t.Run("near max_size", func(t *testing.T) {
		line := []byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n")
		body := bytes.Repeat(line, int(DefaultMaxSize)/len(line)-20)
		msg := saHam("long", string(body))
		if len(msg) > int(DefaultMaxSize) {
			t.Fatalf("message is %d bytes", len(msg))
		}
		v, took := judge(t, msg)
		status, _ := saField(v, "X-Spam-Status")
		t.Logf("%d-byte message judged in %v: %s", len(msg), took, status)
	})
}
