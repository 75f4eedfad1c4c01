package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
)

// httpGet fetches url from the proxy's metrics listener.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// waitStatus polls url until it answers status, for up to 15 s.
func waitStatus(t *testing.T, url string, status int) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, body := httpGet(t, url)
		if got == status {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still %d, want %d:\n%s", url, got, status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metricValue returns the value of the series line "name{labels}" in a
// scrape, or "" if there is none.
func metricValue(scrape, series string) string {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// After a fetch through the proxy, /metrics shows the session, the login,
// the messages retrieved and the filter's verdicts with their label
// values, and no user name, host or address anywhere; /healthz is 200.
// The session's one last log line says what it did and that QUIT
// committed; a session dropped after DELE says it did not.
func TestMetricsAfterFetch(t *testing.T) {
	d := mailbox(t)
	metrics := testinfra.FreeAddr(t)
	// Without scan-ahead, which would check message 3 ahead of the TOP.
	p := startProxy(t, relayConfig()+fmt.Sprintf("scan_ahead: 0\nmetrics:\n  listen: %q\nfilters:\n  - type: header\n    add: {X-Scanned-By: pop3proxy}\n", metrics))

	c := loggedIn(t, "client", p, d)
	for _, n := range []string{"1", "2"} {
		c.Cmd("RETR "+n, "+OK*")
		c.Multi()
	}
	c.Cmd("TOP 3 0", "+OK*")
	c.Multi()
	c.Cmd("QUIT", "+OK*")
	dropped := loggedIn(t, "dropped", p, d)
	dropped.Cmd("DELE 1", "+OK*")
	dropped.Conn.Close()
	eventually(t, "both sessions to end", func() bool {
		return len(logLines(p.logs.String(), "session ended")) == 1
	})

	status, scrape := httpGet(t, "http://"+metrics+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics answered %d", status)
	}
	for series, want := range map[string]string{
		`pop3proxy_sessions_total{result="quit"}`:                             "1",
		`pop3proxy_sessions_active`:                                           "0",
		`pop3proxy_logins_total{mechanism="user",result="ok"}`:                "2",
		`pop3proxy_messages_retrieved_total{command="retr"}`:                  "2",
		`pop3proxy_messages_retrieved_total{command="top"}`:                   "1",
		`pop3proxy_filter_verdicts_total{action="continue",filter="header"}`:  "3",
		`pop3proxy_filter_verdicts_total{action="reject",filter="header"}`:    "0",
		`pop3proxy_filter_scan_duration_seconds_count{filter="header"}`:       "3",
		`pop3proxy_upstream_download_duration_seconds_count`:                  "3",
		`pop3proxy_upstream_failures_total{reason="refused",stage="connect"}`: "0",
	} {
		if got := metricValue(scrape, series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	// startProxy's probe is a disconnect too.
	if n := metricValue(scrape, `pop3proxy_sessions_total{result="disconnect"}`); n == "" || n == "0" || n == "1" {
		t.Errorf("sessions_total{result=\"disconnect\"} = %q, want the dropped session and the probe", n)
	}
	if sent := metricValue(scrape, "pop3proxy_messages_sent_bytes_total"); sent == "" || sent == "0" {
		t.Errorf("no message bytes counted as sent: %q", sent)
	}
	for _, series := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if metricValue(scrape, series) == "" {
			t.Errorf("no %s: the Go or process collector is missing", series)
		}
	}
	_, dovecotPort := splitAddr(t, d.Addr)
	_, proxyPort := splitAddr(t, p.Addr)
	for _, secret := range []string{testUser, testPass, "127.0.0.1", "localhost", ":" + dovecotPort, ":" + proxyPort} {
		if strings.Contains(scrape, secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
	if status, body := httpGet(t, "http://"+metrics+"/healthz"); status != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q", status, body)
	}
	// No scanner to wait for: ready once the listener serves.
	waitStatus(t, "http://"+metrics+"/readyz", http.StatusOK)

	logs := p.logs.String()
	committed := logLines(logs, "session committed")
	ended := logLines(logs, "session ended")
	if len(committed) != 1 || len(ended) != 1 {
		t.Fatalf("want one committed and one ended session line, got %q and %q", committed, ended)
	}
	for _, field := range []string{`"user": "` + proxyLogin("%", d.Addr) + `"`, `"upstream": "` + d.Addr + `"`,
		`"retrieved": 3`, `"deleted": 0`, `"committed": true`, `"verdicts": {"delivered": 3}`, `"reason": "QUIT"`, `"duration": "`} {
		if !strings.Contains(committed[0], field) {
			t.Errorf("committed session line lacks %s:\n%s", field, committed[0])
		}
	}
	if !regexp.MustCompile(`"bytes_sent": [1-9]`).MatchString(committed[0]) {
		t.Errorf("committed session line has no bytes_sent:\n%s", committed[0])
	}
	for _, field := range []string{`"deleted": 1`, `"committed": false`, `"reason": "client closed the connection"`} {
		if !strings.Contains(ended[0], field) {
			t.Errorf("dropped session line lacks %s:\n%s", field, ended[0])
		}
	}
	if strings.Contains(logs, ".go:") {
		t.Errorf("console log shows source positions:\n%s", logs[:min(len(logs), 600)])
	}
}

// logLines returns the log lines with message msg.
func logLines(logs, msg string) []string {
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "\t"+msg+"\t") {
			out = append(out, line)
		}
	}
	return out
}

// /readyz is 503 while the configured clamd does not answer, saying
// which filter, becomes 200 once it does, and 503 again when it stops:
// the pings run in the background. Start-up logs the dead scanner at
// ERROR. clamd comes and goes as a symbolic link to its socket.
func TestReadyzFollowsScanner(t *testing.T) {
	clamd := scannertest.StartClamd(t)
	link := filepath.Join(testinfra.ShortTempDir(t, "ready"), "clamd.sock")
	metrics := testinfra.FreeAddr(t)
	config := relayConfig() + fmt.Sprintf("metrics:\n  listen: %q\n  check_interval: 200ms\nfilters:\n  - type: clamav\n    address: unix://%s\n", metrics, link)
	p := startProxy(t, config)
	readyz := "http://" + metrics + "/readyz"

	body := waitStatus(t, readyz, http.StatusServiceUnavailable)
	if !strings.Contains(body, "filter clamav (filters[0].address): clamd at unix://"+link+" does not answer") {
		t.Errorf("/readyz does not say which scanner is down:\n%s", body)
	}
	eventually(t, "the start-up error", func() bool {
		return strings.Contains(p.logs.String(), "filter enabled, but its scanner does not answer")
	})

	if err := os.Symlink(clamd.Socket, link); err != nil {
		t.Fatal(err)
	}
	if body := waitStatus(t, readyz, http.StatusOK); body != "ready\n" {
		t.Errorf("/readyz body %q", body)
	}
	if _, scrape := httpGet(t, "http://"+metrics+"/metrics"); metricValue(scrape, `pop3proxy_scanner_up{filter="clamav"}`) != "1" ||
		metricValue(scrape, "pop3proxy_ready") != "1" {
		t.Errorf("scanner_up or ready not 1 while clamd answers")
	}

	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, readyz, http.StatusServiceUnavailable)
	if len(logLines(p.logs.String(), "scanner answers again")) != 1 {
		t.Errorf("the recovery was not logged once")
	}
	eventually(t, "the outage to be logged", func() bool {
		return len(logLines(p.logs.String(), "scanner does not answer")) == 1
	})
}

// -check pings every scanner: one that does not answer is a problem under
// its key path, and the exit status is 1; with it answering, the
// configuration is ok.
func TestCheckPingsScanners(t *testing.T) {
	dead := testinfra.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	write := func(clamd string) {
		body := fmt.Sprintf("filters:\n  - type: header\n    add: {X-A: b}\n  - type: clamav\n    address: %s\n", clamd)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("tcp://" + dead)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(proxyBin, "-check", "-config", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("-check with clamd down: %v, want exit status 1\n%s%s", err, stdout.String(), stderr.String())
	}
	if want := "  - filters[1].address: clamd at tcp://" + dead + " does not answer: "; !strings.Contains(stderr.String(), want) {
		t.Errorf("-check output lacks %q:\n%s", want, stderr.String())
	}
	if strings.Contains(stdout.String(), "configuration ok") {
		t.Errorf("-check says ok with clamd down")
	}

	clamd := scannertest.StartClamd(t)
	write(clamd.TCPURL())
	out, err := exec.Command(proxyBin, "-check", "-config", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "configuration ok") {
		t.Errorf("-check with clamd up: %v\n%s", err, out)
	}
}
