package rspamd

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// Tests against a real rspamd (Debian package rspamd), started by
// scannertest.StartRspamd; skipped when it is not installed, unless
// integration tests are required.

// realHam is ordinary mail as a mailbox holds it: the delivering MTA's
// Return-Path and Received on top (docs/scanners.md, rspamd without an
// envelope).
func realHam(subject, body string) []byte {
	return []byte("Return-Path: <alice@example.com>\r\n" +
		"Received: from mail.example.com (mail.example.com [192.0.2.10])\r\n" +
		"\tby mx.example.net with ESMTPS id 4Xyz; Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <20261122100000.12345@mail.example.com>\r\n" +
		"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
		"From: Alice Example <alice@example.com>\r\n" +
		"To: Bob Example <bob@example.net>\r\n" +
		"Cc: carol@example.net\r\n" +
		"Subject: " + subject + "\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n" + body)
}

const realHamBody = "Hi Bob,\r\n\r\nthe minutes of Tuesday's meeting are below. We agreed to move the\r\n" +
	"review to Thursday afternoon and to keep the current schedule otherwise.\r\n\r\nBest,\r\nAlice\r\n"

func realSpam(subject string) []byte {
	return realHam(subject, "Hi Bob,\r\n\r\n"+string(scannertest.GTUBE())+"\r\n")
}

const realPassword = "controller-pw"

func TestRealRspamd(t *testing.T) {
	start := time.Now()
	rd := scannertest.StartRspamdWith(t, scannertest.RspamdOptions{
		Password: realPassword,
		// x-spam-status and x-spam-level write fields the plugin owns.
		MilterHeaders: []string{"x-spamd-result", "x-spamd-bar", "x-rspamd-server", "x-spam-status", "x-spam-level"},
	})
	t.Logf("rspamd ready after %v", time.Since(start).Round(time.Millisecond))
	rs := newRS(t, &Filter{Address: rd.URL(), SubjectPrefix: "[SPAM]"})
	check := func(t *testing.T, f *Filter, m *filter.Message) filter.Verdict {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		v, err := f.Judge(ctx, m)
		if err != nil {
			t.Fatalf("Judge: %v\nrspamd log:\n%s", err, rd.LogTail(10))
		}
		t.Logf("judged in %v", time.Since(start).Round(time.Millisecond))
		return v
	}

	// rspamd 3.4 gives GTUBE the reject action, score = required_score.
	t.Run("GTUBE", func(t *testing.T) {
		v := check(t, rs, rsMessage(realSpam("meeting notes")))
		status, _ := field(v, "X-Spam-Status")
		var score, required float64
		var tests, action string
		if _, err := fmt.Sscanf(status, "Yes, score=%f required=%f tests=%s action=%s", &score, &required, &tests, &action); err != nil {
			t.Fatalf("X-Spam-Status %q: %v", status, err)
		}
		if action != "reject" || !slices.Contains(strings.Split(tests, ","), "GTUBE") || score < required {
			t.Errorf("X-Spam-Status %q", status)
		}
		if flag, _ := field(v, "X-Spam-Flag"); flag != "YES" {
			t.Errorf("X-Spam-Flag %q", flag)
		}
		if !slices.Contains(v.Edits, filter.SubjectPrefix("[SPAM] ")) {
			t.Errorf("no Subject prefix in %+v", v.Edits)
		}
		if v.Action != filter.Continue || !strings.HasPrefix(v.Reason, "spam: rspamd action reject") {
			t.Errorf("verdict %v %q", v.Action, v.Reason)
		}
	})

	t.Run("ham", func(t *testing.T) {
		v := check(t, rs, rsMessage(realHam("meeting notes", realHamBody)))
		status, _ := field(v, "X-Spam-Status")
		t.Logf("X-Spam-Status: %s", status)
		if !strings.HasPrefix(status, "No, score=") || !strings.HasSuffix(status, " action=no_action") {
			t.Errorf("X-Spam-Status %q", status)
		}
		for _, e := range v.Edits {
			if e.Op == filter.PrefixSubject || e.Op == filter.AddField && e.Name == "X-Spam-Flag" {
				t.Errorf("ham got %+v", e)
			}
		}
		if v.Reason != "" {
			t.Errorf("reason %q", v.Reason)
		}
	})

	// GTUBE in a header field is not a body: rspamd judged the bytes sent.
	t.Run("GTUBE in a header field", func(t *testing.T) {
		msg := append([]byte("X-Note: "+string(scannertest.GTUBE())+"\r\n"), realHam("notes", realHamBody)...)
		v := check(t, rs, rsMessage(msg))
		if status, _ := field(v, "X-Spam-Status"); !strings.HasPrefix(status, "No, ") || strings.Contains(status, "GTUBE") {
			t.Errorf("X-Spam-Status %q", status)
		}
	})

	// The delivered message: the sender's verdict fields and forged copies
	// of rspamd's own gone, one X-Spam-Status (the plugin's), rspamd's
	// milter fields on top, the Subject prefixed only for spam, the rest
	// byte for byte.
	t.Run("delivered through the chain", func(t *testing.T) {
		ch := filtertest.MustChain(t, fmt.Sprintf(`
- type: rspamd
  address: %s
  subject_prefix: "[SPAM]"
  add_milter_headers: true
  timeout: 30s
`, rd.URL()))
		// Not X-Spam-Flag: YES, which rspamd scores (SPAM_FLAG, 5 points).
		forged := "X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-99\r\nX-Spamd-Result: forged\r\nX-Spamd-Bar: forged\r\n"
		for _, tc := range []struct {
			name    string
			msg     []byte
			spam    bool
			subject string
		}{
			{"ham", realHam("meeting notes", realHamBody), false, "Subject: meeting notes\r\n"},
			{"spam", realSpam("meeting notes"), true, "Subject: [SPAM] meeting notes\r\n"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				msg := append([]byte(forged), tc.msg...)
				res, got := filtertest.Run(t, ch, msg, rsMeta)
				if res.Outcome != filter.Deliver {
					t.Fatalf("outcome %v (%s)", res.Outcome, res.Reason)
				}
				// The original starts at its Return-Path.
				i := strings.Index(string(got), "Return-Path:")
				if i < 0 {
					t.Fatalf("delivered\n%s", got)
				}
				added, orig := string(got[:i]), string(got[i:])
				if want := strings.Replace(string(tc.msg), "Subject: meeting notes\r\n", tc.subject, 1); orig != want {
					t.Errorf("the original changed:\n%q\nwant\n%q", orig, want)
				}
				if strings.Contains(added, "forged") || strings.Contains(added, "score=-99") || strings.Contains(added, "X-Spam-Flag: NO") || strings.Count(added, "X-Spam-Status:") != 1 {
					t.Errorf("added fields:\n%s", added)
				}
				if strings.Contains(added, "X-Spam-Flag: YES") != tc.spam {
					t.Errorf("spam %v, added fields:\n%s", tc.spam, added)
				}
				// GTUBE ends rspamd's check before milter_headers runs.
				if !tc.spam && !strings.Contains(added, "X-Spamd-Result: default: False [") {
					t.Errorf("no X-Spamd-Result from rspamd:\n%s", added)
				}
			})
		}
	})

	t.Run("spooled", func(t *testing.T) {
		for _, tc := range []struct {
			msg  []byte
			want string
		}{{realSpam("spooled"), "Yes, "}, {realHam("spooled", realHamBody), "No, "}} {
			m := filtertest.Spooled(t, rsMeta, func(w io.Writer) error {
				_, err := w.Write(tc.msg)
				return err
			})
			if status, _ := field(check(t, rs, m), "X-Spam-Status"); !strings.HasPrefix(status, tc.want) {
				t.Errorf("X-Spam-Status %q, want %q...", status, tc.want)
			}
		}
	})

	// rspamd's log records the envelope it was given: From from
	// Return-Path, Rcpt from To and Cc, and no authenticated user, for
	// which it would have skipped SPF, DKIM and DMARC (docs/scanners.md,
	// rspamd requests).
	t.Run("envelope", func(t *testing.T) {
		check(t, rs, rsMessage(realHam("envelope", realHamBody)))
		log := rd.Log()
		for _, want := range []string{"from: <alice@example.com>", "rcpts: <bob@example.net,carol@example.net>"} {
			if !strings.Contains(log, want) {
				t.Errorf("rspamd's log lacks %q:\n%s", want, rd.LogTail(5))
			}
		}
		for _, bad := range []string{"authorized users", "user: alice"} {
			if strings.Contains(log, bad) {
				t.Errorf("rspamd's log has %q: the mailbox user was sent as an SMTP AUTH user", bad)
			}
		}
	})

	t.Run("controller", func(t *testing.T) {
		ok := newRS(t, &Filter{Address: rd.ControllerURL(), Password: realPassword})
		if flag, _ := field(check(t, ok, rsMessage(realSpam("via controller"))), "X-Spam-Flag"); flag != "YES" {
			t.Errorf("GTUBE through the controller not flagged")
		}
		bad := newRS(t, &Filter{Address: rd.ControllerURL(), Password: "wrong"})
		if _, err := judge(t, bad, rsMessage(realHam("x", realHamBody))); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("wrong password: %v", err)
		}
	})

	t.Run("Ping", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rs.Ping(ctx); err != nil {
			t.Errorf("normal worker: %v", err)
		}
		ctl := newRS(t, &Filter{Address: rd.ControllerURL(), Password: realPassword})
		if err := ctl.Ping(ctx); err != nil {
			t.Errorf("controller: %v", err)
		}
	})

	// Sessions call Judge concurrently.
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				msg := realHam(fmt.Sprintf("note %d", i), realHamBody)
				if i%2 == 0 {
					msg = realSpam(fmt.Sprintf("note %d", i))
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				v, err := rs.Judge(ctx, rsMessage(msg))
				if err != nil {
					t.Errorf("message %d: %v", i, err)
					return
				}
				if _, spam := field(v, "X-Spam-Flag"); spam != (i%2 == 0) {
					t.Errorf("message %d: spam=%v", i, spam)
				}
			})
		}
		wg.Wait()
	})

	// After Stop, Ping and Judge fail rather than pass anything.
	t.Run("stopped", func(t *testing.T) {
		if err := rd.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := rs.Ping(context.Background()); err == nil {
			t.Error("Ping succeeded with rspamd stopped")
		}
		if v, err := judge(t, rs, rsMessage(realHam("x", realHamBody))); err == nil {
			t.Errorf("Judge with rspamd stopped: %+v", v)
		}
	})
}
