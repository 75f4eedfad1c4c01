package proxy_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// fakeAV flags messages containing "VIRUS" per Mode (replace when empty);
// avRelease, if set, blocks Judge until the channel is closed.
type fakeAV struct {
	Mode string `yaml:"mode"` // replace | reject | fail | tag
}

var (
	avCalls   atomic.Int32
	avRelease atomic.Pointer[chan struct{}]
)

func (f *fakeAV) Judge(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	avCalls.Add(1)
	if ch := avRelease.Load(); ch != nil {
		select {
		case <-*ch:
		case <-ctx.Done():
			return filter.Verdict{}, ctx.Err()
		}
	}
	if f.Mode == "fail" {
		return filter.Verdict{}, errors.New("clamd at 10.9.8.7 unreachable")
	}
	if !strings.Contains(string(m.Bytes()), "VIRUS") {
		return filter.Verdict{Edits: []filter.Edit{filter.Add("X-Virus-Scanned", "clean")}}, nil
	}
	switch f.Mode {
	case "reject":
		return filter.Verdict{Action: filter.Reject, Reason: "virus found"}, nil
	case "tag":
		return filter.Verdict{Edits: []filter.Edit{filter.Add("X-Virus-Status", "Infected")}}, nil
	}
	return filter.Verdict{Action: filter.Replace, Reason: "virus found",
		Replacement: []byte("Subject: virus removed\r\n\r\nThe message was removed.\r\nsecond line\r\n")}, nil
}

func init() {
	filter.Register(filter.PluginInfo{Type: "fakeav", New: func() filter.Plugin { return new(fakeAV) }})
}

// startFiltering serves a gateway with a chain built from YAML.
func startFiltering(t *testing.T, chainYAML string, maxSize int64, keepalive time.Duration) string {
	t.Helper()
	avCalls.Store(0)
	chain := filtertest.MustChain(t, chainYAML)
	return serve(t, proxy.Options{
		Upstream: upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second},
		Chain:    chain, MaxSize: maxSize, ScanKeepalive: keepalive,
	})
}

const (
	cleanMsg    = "S: +OK 40 octets\nS: Subject: hello\nS: \nS: ..dotted\nS: clean body\nS: .\n"
	infectedMsg = "S: +OK 50 octets\nS: Subject: bad\nS: \nS: VIRUS line\nS: more\nS: .\n"
)

func TestRetrFiltered(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg+"C: RETR 2\n"+infectedMsg+"C: QUIT\nS: +OK\n")
	c := login(t, startFiltering(t, "- type: fakeav\n", 1<<20, time.Minute), up.Addr())
	want := "X-Virus-Scanned: clean\r\nSubject: hello\r\n\r\n.dotted\r\nclean body\r\n"
	c.Cmd("RETR 1", "+OK 63 octets")
	if got := string(c.Multi()); got != want {
		t.Errorf("RETR 1 = %q, want %q", got, want)
	}
	c.Cmd("RETR 2", "+OK *")
	if got := string(c.Multi()); !strings.HasPrefix(got, "Subject: virus removed") || strings.Contains(got, "VIRUS") {
		t.Errorf("RETR 2 delivered %q", got)
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// Messages over max_size stream through byte for byte, unscanned.
func TestOversizeUnscanned(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+"C: RETR 2\n"+infectedMsg+"C: QUIT\nS: +OK\n")
	c := login(t, startFiltering(t, "- type: fakeav\n", 10, time.Minute), up.Addr())
	c.Cmd("RETR 2", "+OK 50 octets")
	if got := string(c.Multi()); got != "Subject: bad\r\n\r\nVIRUS line\r\nmore\r\n" {
		t.Errorf("oversize RETR = %q", got)
	}
	if n := avCalls.Load(); n != 0 {
		t.Errorf("filter called %d times for a message over max_size", n)
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// TOP is no way around the filters (fetchmail's TOP n 99999999): the whole
// message is fetched with TOP, filtered as RETR would be, and cut.
func TestTopFilteredLikeRetr(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: LIST 2
S: +OK 2 50
C: TOP 2 99999999
S: +OK
S: Subject: bad
S:
S: VIRUS line
S: more
S: .
C: LIST 2
S: +OK 2 50
C: TOP 2 99999999
S: +OK
S: Subject: bad
S:
S: VIRUS line
S: more
S: .
C: QUIT
S: +OK`)
	c := login(t, startFiltering(t, "- type: fakeav\n", 1<<20, time.Minute), up.Addr())
	c.Cmd("TOP 2 99999999", "+OK*")
	if got := string(c.Multi()); strings.Contains(got, "VIRUS") || !strings.HasPrefix(got, "Subject: virus removed") {
		t.Errorf("TOP 2 99999999 delivered %q", got)
	}
	c.Cmd("TOP 2 1", "+OK*")
	if got := string(c.Multi()); got != "Subject: virus removed\r\n\r\nThe message was removed.\r\n" {
		t.Errorf("TOP 2 1 = %q", got)
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// A failing scanner: tempfail (the default) answers -ERR [SYS/TEMP] and the
// session goes on; nothing of the error's text reaches the client.
func TestScannerFailure(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg+"C: DELE 1\nS: +OK\nC: QUIT\nS: +OK\n")
	c := login(t, startFiltering(t, "- {type: fakeav, mode: fail}\n", 1<<20, time.Minute), up.Addr())
	got := c.Cmd("RETR 1", "-ERR [SYS/TEMP] *")
	if strings.Contains(got, "10.9.8.7") || strings.Contains(got, "clamd") {
		t.Errorf("client saw internal detail: %q", got)
	}
	c.Cmd("DELE 1", "+OK*")
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

func TestRejectVerdict(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+"C: RETR 2\n"+infectedMsg+"C: QUIT\nS: +OK\n")
	c := login(t, startFiltering(t, "- {type: fakeav, mode: reject}\n", 1<<20, time.Minute), up.Addr())
	c.Cmd("RETR 2", "-ERR virus found")
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// A scan slower than scan_keepalive: the client gets "+OK" and a header
// field that grows by a folded line per interval, the upstream a NOOP per
// interval, and then the filtered message.
func TestSlowScanKeepalive(t *testing.T) {
	release := make(chan struct{})
	avRelease.Store(&release)
	defer avRelease.Store(nil)
	up := pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg+"C: NOOP\nS: +OK\nC: QUIT\nS: +OK\n")
	c := login(t, startFiltering(t, "- type: fakeav\n", 1<<20, 300*time.Millisecond), up.Addr())
	c.Cmd("RETR 1", "+OK message follows")
	c.Expect("X-Pop3proxy-Scan: slow scan, kept alive")
	c.Expect("\t.") // after the first NOOP upstream
	close(release)
	if got := string(c.Multi()); got != "X-Virus-Scanned: clean\r\nSubject: hello\r\n\r\n.dotted\r\nclean body\r\n" {
		t.Errorf("message after keepalive = %q", got)
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// If a scan that outlived the keepalive then fails, no -ERR is possible:
// the connection is dropped without the terminating dot, so the client
// stores nothing, and nothing is committed upstream.
func TestSlowScanThenFailure(t *testing.T) {
	release := make(chan struct{})
	avRelease.Store(&release)
	defer avRelease.Store(nil)
	up := pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg)
	c := login(t, startFiltering(t, "- {type: fakeav, mode: fail}\n", 1<<20, 200*time.Millisecond), up.Addr())
	c.Cmd("RETR 1", "+OK message follows")
	c.Expect("X-Pop3proxy-Scan: slow scan, kept alive")
	close(release)
	for {
		line, err := c.ReadLine()
		if err != nil {
			break
		}
		if line == "." {
			t.Fatal("a message the chain failed on was terminated as complete")
		}
	}
	up.Wait(t)
}

// A slow download counts against scan_keepalive too: an upstream that
// stalls in the middle of a message still gets the client its keepalive,
// and the upstream sees nothing but its own exchange (the script fails on
// any unexpected command).
func TestSlowDownloadKeepalive(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: RETR 1
S: +OK 40 octets
S: Subject: hello
S!sleep 900ms
S:
S: ..dotted
S: clean body
S: .
C: QUIT
S: +OK`)
	c := login(t, startFiltering(t, "- type: fakeav\n", 1<<20, 200*time.Millisecond), up.Addr())
	c.Cmd("RETR 1", "+OK message follows")
	c.Expect("X-Pop3proxy-Scan: slow scan, kept alive")
	if got := string(c.Multi()); !strings.HasSuffix(got, "X-Virus-Scanned: clean\r\nSubject: hello\r\n\r\n.dotted\r\nclean body\r\n") {
		t.Errorf("message after a slow download = %q", got)
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}
