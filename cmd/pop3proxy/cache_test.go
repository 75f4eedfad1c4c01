package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache/redistest"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// verdictCount sums a filter's pop3proxy_filter_verdicts_total over its
// actions: how many times its plugin decided.
func verdictCount(t *testing.T, metricsAddr, filter string) int {
	t.Helper()
	status, scrape := httpGet(t, "http://"+metricsAddr+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics answered %d", status)
	}
	n := 0
	for _, line := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(line, "pop3proxy_filter_verdicts_total{") && strings.Contains(line, `filter="`+filter+`"`) {
			f := strings.Fields(line)
			v, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			n += v
		}
	}
	return n
}

// TestFetchTwiceScansOnce: with the real Dovecot, clamd and spamd, a
// mailbox left on the server and fetched again (RETR and TOP n 99999999
// of every message, as poplib does here, in a new session) is delivered
// byte for byte as the first time, and each message is scanned once:
// the TOP after a RETR, the second fetch, and a second proxy instance
// sharing the cache through a real Redis call no scanner at all.
func TestFetchTwiceScansOnce(t *testing.T) {
	d := upstreamtest.StartDovecot(t, upstreamtest.DovecotOptions{Users: map[string]string{testUser: testPass}})
	for _, m := range scannedMailbox() {
		d.Deliver(t, testUser, m)
	}
	clamd, spamd := scannertest.StartClamd(t), scannertest.StartSpamd(t)
	r := redistest.Start(t)
	config := scannerConfig(clamd.TCPAddr, spamd.Addr, t.TempDir()) +
		fmt.Sprintf("cache:\n  type: redis\n  address: %q\n", r.Addr)
	metricsA, metricsB := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	a := startProxy(t, config+fmt.Sprintf("metrics:\n  listen: %q\n", metricsA))
	b := startProxy(t, config+fmt.Sprintf("metrics:\n  listen: %q\n", metricsB))
	login := proxyLogin("%", d.Addr)

	retr1, top1, errs := fetchAll(t, a.Addr, login)
	if len(errs) > 0 {
		t.Fatalf("first fetch: %v", errs)
	}
	// Messages 1 to 4 are scanned once each (5 is over max_size), by
	// both scanners at once (adjacent judges run concurrently).
	clam, spam := verdictCount(t, metricsA, "clamav"), verdictCount(t, metricsA, "spamassassin")
	if clam != 4 || spam != 4 {
		t.Errorf("first fetch: clamav decided %d times, spamassassin %d; want 4 each", clam, spam)
	}
	for i := range retr1 {
		if i < 4 && !bytes.Equal(retr1[i], top1[i]) {
			t.Errorf("message %d: the cached TOP differs from RETR", i+1)
		}
	}

	for name, p := range map[string]*proxyProcess{"same proxy": a, "other proxy": b} {
		retr2, top2, errs := fetchAll(t, p.Addr, login)
		if len(errs) > 0 {
			t.Fatalf("%s: second fetch: %v", name, errs)
		}
		for i := range retr1 {
			if !bytes.Equal(retr2[i], retr1[i]) || !bytes.Equal(top2[i], top1[i]) {
				t.Errorf("%s: message %d differs from the first fetch:\n%.300q\n%.300q", name, i+1, retr2[i], retr1[i])
			}
		}
	}
	if c, s := verdictCount(t, metricsA, "clamav"), verdictCount(t, metricsA, "spamassassin"); c != clam || s != spam {
		t.Errorf("fetching again scanned again: clamav %d -> %d, spamassassin %d -> %d", clam, c, spam, s)
	}
	if c, s := verdictCount(t, metricsB, "clamav"), verdictCount(t, metricsB, "spamassassin"); c != 0 || s != 0 {
		t.Errorf("the second proxy scanned (clamav %d, spamassassin %d) what the first had", c, s)
	}
	if stored := d.Messages(t, testUser); len(stored) != 5 {
		t.Errorf("the mailbox holds %d messages, want all 5", len(stored))
	}
}
