package proxy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/filter/spool"
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
	b, err := m.Bytes()
	if err != nil {
		return filter.Verdict{}, err
	}
	if !strings.Contains(string(b), "VIRUS") {
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
	return startFilteringWith(t, chainYAML, proxy.Options{MaxSize: maxSize, ScanKeepalive: keepalive})
}

// startFilteringWith is startFiltering with more options.
func startFilteringWith(t *testing.T, chainYAML string, opts proxy.Options) string {
	t.Helper()
	avCalls.Store(0)
	opts.Chain = filtertest.MustChain(t, chainYAML)
	opts.Upstream = upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second}
	if opts.ScanKeepalive == 0 {
		opts.ScanKeepalive = time.Minute
	}
	return serve(t, opts)
}

const (
	cleanMsg    = "S: +OK 40 octets\nS: Subject: hello\nS: \nS: ..dotted\nS: clean body\nS: .\n"
	infectedMsg = "S: +OK 34 octets\nS: Subject: bad\nS: \nS: VIRUS line\nS: more\nS: .\n"
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

// TestOversize checks the oversize policy for messages over max_size: tag
// (the default) streams them byte for byte behind one header field that
// says why they are unscanned, pass without it, reject answers -ERR and
// leaves them on the server, the session going on. The filter never sees
// them, and RETR and TOP are alike.
func TestOversize(t *testing.T) {
	const body = "Subject: bad\r\n\r\nVIRUS line\r\nmore\r\n"
	for _, tc := range []struct {
		policy filter.Oversize
		status string
		want   string // "" for a refusal
	}{
		{filter.OversizeTag, "+OK message follows", "X-Pop3proxy-Unscanned: too large (34 octets, max_size 10)\r\n" + body},
		{filter.OversizePass, "+OK message follows", body},
		{filter.OversizeReject, "-ERR message too large to be checked*", ""},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			up := pop3test.NewServer(t, loginScript+"C: RETR 2\n"+infectedMsg+
				"C: TOP 2 99999999\nS: +OK\nS: Subject: bad\nS:\nS: VIRUS line\nS: more\nS: .\n"+
				"C: NOOP\nS: +OK\nC: QUIT\nS: +OK\n")
			c := login(t, startFilteringWith(t, "- type: fakeav\n", proxy.Options{MaxSize: 10, Oversize: tc.policy}), up.Addr())
			c.Cmd("RETR 2", tc.status)
			if tc.want != "" {
				if got := string(c.Multi()); got != tc.want {
					t.Errorf("RETR = %q, want %q", got, tc.want)
				}
			}
			c.Cmd("TOP 2 0", strings.Replace(tc.status, "message follows", "*", 1))
			if tc.want != "" {
				// TOP's answer states no size.
				hdr, _, _ := strings.Cut(strings.Replace(tc.want, "34 octets", "over max_size", 1), "\r\n\r\n")
				if got := string(c.Multi()); got != hdr+"\r\n\r\n" {
					t.Errorf("TOP 2 0 = %q, want the header of %q", got, tc.want)
				}
			}
			c.Cmd("NOOP", "+OK*") // the upstream connection is in step
			if n := avCalls.Load(); n != 0 {
				t.Errorf("filter called %d times for a message over max_size", n)
			}
			c.Cmd("QUIT", "+OK*")
			up.Wait(t)
		})
	}
}

// TestOversizeDecidedOnBytes checks that the size the upstream states
// never decides whether a message is scanned. One claimed small but larger
// than max_size is oversize. One claimed huge is streamed at once, but when
// it turns out small the answer is cut before its terminating dot (the
// client keeps none of it, unscanned), and from then on that upstream's
// sizes are not trusted: the retry is scanned.
func TestOversizeDecidedOnBytes(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+`
C: RETR 1
S: +OK 5 octets
S: Subject: claims 5
S:
S: VIRUS padded past max_size
S: .
C: RETR 2
S: +OK 999999999 octets
S: Subject: tiny
S:
S: VIRUS
S: .
S!next
`+loginScript+`
C: RETR 2
S: +OK 999999999 octets
S: Subject: tiny
S:
S: VIRUS
S: .
C: QUIT
S: +OK`)
	gw := startFilteringWith(t, "- type: fakeav\n", proxy.Options{MaxSize: 30})
	c := login(t, gw, up.Addr())
	c.Cmd("RETR 1", "+OK*")
	if got := string(c.Multi()); !strings.HasPrefix(got, "X-Pop3proxy-Unscanned: too large (over max_size, max_size 30)\r\nSubject: claims 5\r\n") {
		t.Errorf("message larger than claimed: %q", got)
	}
	c.Cmd("RETR 2", "+OK*")
	for {
		line, err := c.ReadLine()
		if err != nil {
			break
		}
		if line == "." {
			t.Fatal("a message claimed over max_size but smaller was delivered complete, unscanned")
		}
	}
	c = login(t, gw, up.Addr())
	c.Cmd("RETR 2", "+OK*")
	if got := string(c.Multi()); !strings.HasPrefix(got, "Subject: virus removed") {
		t.Errorf("retry of a message claimed huge was not scanned: %q", got)
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

// TestSpoolGone: a message that needs spool space while the spool
// directory is gone gets -ERR [SYS/TEMP] and the connection is closed
// without QUIT, so the upstream keeps the message (and the DELE before it).
func TestSpoolGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.New(spool.Options{Memory: 0, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	up := pop3test.NewServer(t, loginScript+"C: DELE 2\nS: +OK\nC: RETR 1\n"+cleanMsg)
	c := login(t, startFilteringWith(t, "- type: fakeav\n", proxy.Options{MaxSize: 1 << 20, Spool: sp}), up.Addr())
	c.Cmd("DELE 2", "+OK*")
	c.Cmd("RETR 1", "-ERR [SYS/TEMP]*")
	c.ExpectClosed()
	up.Wait(t) // the script ends without QUIT
	if st := sp.Stats(); st.FilesOpen != 0 || st.MemoryUsed != 0 {
		t.Errorf("spool after the failure: %+v", st)
	}
}

// TestSpooledMessages checks that with no memory budget every message goes
// through a spool file and still arrives exactly, edited; and that the
// spool is empty again once the client has it, also when the client
// leaves in the middle of a keepalive.
func TestSpooledMessages(t *testing.T) {
	sp, err := spool.New(spool.Options{Memory: 0, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	up := pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg+"C: TOP 1 99999999\n"+
		"S: +OK\nS: Subject: hello\nS: \nS: ..dotted\nS: clean body\nS: .\nC: QUIT\nS: +OK\n")
	c := login(t, startFilteringWith(t, "- type: fakeav\n", proxy.Options{MaxSize: 1 << 20, Spool: sp}), up.Addr())
	c.Cmd("RETR 1", "+OK 63 octets")
	if got := string(c.Multi()); got != "X-Virus-Scanned: clean\r\nSubject: hello\r\n\r\n.dotted\r\nclean body\r\n" {
		t.Errorf("spooled RETR = %q", got)
	}
	c.Cmd("TOP 1 0", "+OK*")
	if got := string(c.Multi()); got != "X-Virus-Scanned: clean\r\nSubject: hello\r\n\r\n" {
		t.Errorf("spooled TOP = %q", got)
	}
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	if st := sp.Stats(); st.Spilled < 2 || st.FilesOpen != 0 || st.MemoryUsed != 0 {
		t.Errorf("spool after delivery: %+v, want files used and all closed", st)
	}

	// A client that disconnects while its scan is kept alive.
	release := make(chan struct{})
	avRelease.Store(&release)
	defer avRelease.Store(nil)
	up = pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg)
	c = login(t, startFilteringWith(t, "- type: fakeav\n", proxy.Options{MaxSize: 1 << 20, Spool: sp, ScanKeepalive: 100 * time.Millisecond}), up.Addr())
	c.Cmd("RETR 1", "+OK message follows")
	c.Expect("X-Pop3proxy-Scan: slow scan, kept alive")
	c.Conn.Close()
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for sp.Stats().FilesOpen != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("spool files still open after the client left: %+v", sp.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
