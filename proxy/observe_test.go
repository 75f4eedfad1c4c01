package proxy_test

import (
	"fmt"
	"maps"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// countingObserver records the relay's events.
type countingObserver struct {
	mu         sync.Mutex
	sent       []string // "retr|top octets complete"
	downloads  int
	oversize   int
	tempfailed int
	failures   map[string]int // "stage reason"
}

func newCountingObserver() *countingObserver {
	return &countingObserver{failures: map[string]int{}}
}

func (o *countingObserver) MessageSent(top bool, octets int64, complete bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	cmd := "retr"
	if top {
		cmd = "top"
	}
	o.sent = append(o.sent, fmt.Sprintf("%s %d %v", cmd, octets, complete))
}

func (o *countingObserver) Downloaded(d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d > 0 {
		o.downloads++
	}
}

func (o *countingObserver) Oversize() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.oversize++
}

func (o *countingObserver) TempFailed() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.tempfailed++
}

func (o *countingObserver) UpstreamFailed(stage proxy.UpstreamStage, reason proxy.UpstreamReason) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failures[stage.String()+" "+reason.String()]++
}

func (o *countingObserver) snapshot() countingObserver {
	o.mu.Lock()
	defer o.mu.Unlock()
	return countingObserver{sent: append([]string(nil), o.sent...), downloads: o.downloads, oversize: o.oversize,
		tempfailed: o.tempfailed, failures: maps.Clone(o.failures)}
}

// observedGateway serves a gateway reporting to a counting observer and
// logging to observed logs; chainYAML "" relays unfiltered.
func observedGateway(t *testing.T, chainYAML string, opts proxy.Options) (string, *countingObserver, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	obs := newCountingObserver()
	opts.Logger, opts.Observer = zap.New(core), obs
	opts.Upstream = upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second}
	if chainYAML != "" {
		opts.Chain = filtertest.MustChain(t, chainYAML)
	}
	return serve(t, opts), obs, logs
}

// lastLine waits for the connection's last log line and returns it.
func lastLine(t *testing.T, logs *observer.ObservedLogs) observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, e := range logs.All() {
			if e.Message == "session committed" || e.Message == "session ended" || e.Message == "disconnect" {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no last line for the session")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The session's last line reads "session committed", with committed=true,
// only when the upstream answered QUIT +OK; it counts what was retrieved,
// sent and deleted.
func TestSessionLastLine(t *testing.T) {
	const msg = "S: +OK 30 octets\nS: Subject: hello\nS: \nS: body\nS: .\n"
	const size = len("Subject: hello\r\n\r\nbody\r\n")
	for _, tc := range []struct {
		name, quitReply, clientEnd string
		committed                  bool
	}{
		{"committed", "+OK bye", "QUIT", true},
		{"quit refused", "-ERR [SYS/TEMP] cannot delete", "QUIT", false},
		{"disconnect", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := loginScript + "C: RETR 1\n" + msg + "C: TOP 1 0\nS: +OK\nS: Subject: hello\nS: \nS: .\nC: DELE 1\nS: +OK\n"
			if tc.quitReply != "" {
				script += "C: QUIT\nS: " + tc.quitReply + "\n"
			}
			up := pop3test.NewServer(t, script)
			gw, obs, logs := observedGateway(t, "", proxy.Options{})
			c := login(t, gw, up.Addr())
			c.Cmd("RETR 1", "+OK*")
			c.Multi()
			c.Cmd("TOP 1 0", "+OK*")
			c.Multi()
			c.Cmd("DELE 1", "+OK*")
			if tc.clientEnd == "QUIT" {
				want := "+OK*"
				if !tc.committed {
					want = "-ERR*"
				}
				c.Cmd("QUIT", want)
			} else {
				c.Conn.Close()
			}
			e := lastLine(t, logs)
			f := e.ContextMap()
			wantMsg := "session ended"
			if tc.committed {
				wantMsg = "session committed"
			}
			if e.Message != wantMsg || f["committed"] != tc.committed {
				t.Errorf("last line %q committed=%v, want %q committed=%v", e.Message, f["committed"], wantMsg, tc.committed)
			}
			wantTop := len("Subject: hello\r\n\r\n")
			for k, v := range map[string]any{
				"retrieved": int64(2), "bytes_sent": int64(size + wantTop), "deleted": int64(1),
				"upstream": up.Addr(), "user": "alice%" + up.Addr(),
			} {
				if f[k] != v {
					t.Errorf("last line %s = %v (%T), want %v", k, f[k], f[k], v)
				}
			}
			for _, k := range []string{"conn", "remote", "reason", "duration"} {
				if _, ok := f[k]; !ok {
					t.Errorf("last line lacks %s: %v", k, f)
				}
			}
			if n := len(logs.FilterMessage("session committed").All()) + len(logs.FilterMessage("session ended").All()) +
				len(logs.FilterMessage("disconnect").All()); n != 1 {
				t.Errorf("%d last lines, want 1", n)
			}
			got := obs.snapshot().sent
			if want := []string{fmt.Sprintf("retr %d true", size), fmt.Sprintf("top %d true", wantTop)}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("MessageSent calls %v, want %v", got, want)
			}
		})
	}
}

// Filtered messages: downloads are timed, the chain's decisions counted
// in the last line, oversize messages and temporary failures reported.
func TestObserverFiltered(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg+"C: RETR 2\n"+infectedMsg+
		"C: RETR 3\nS: +OK\nS: Subject: big\nS: \nS: 0123456789012345678901234567890123456789\nS: .\n"+
		"C: QUIT\nS: +OK\n")
	gw, obs, logs := observedGateway(t, "- type: fakeav\n", proxy.Options{MaxSize: 45, ScanKeepalive: time.Minute})
	c := login(t, gw, up.Addr())
	c.Cmd("RETR 1", "+OK*")
	c.Multi()
	c.Cmd("RETR 2", "+OK*")
	c.Multi()
	c.Cmd("RETR 3", "+OK*")
	c.Multi()
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	e := lastLine(t, logs)
	verdicts, _ := e.ContextMap()["verdicts"].(map[string]any)
	if fmt.Sprint(verdicts) != fmt.Sprint(map[string]any{"delivered": int64(1), "replaced": int64(1), "oversize": int64(1)}) {
		t.Errorf("verdicts = %v", e.ContextMap()["verdicts"])
	}
	s := obs.snapshot()
	if s.downloads != 2 || s.oversize != 1 || s.tempfailed != 0 || len(s.sent) != 3 {
		t.Errorf("downloads %d, oversize %d, tempfailed %d, sent %v; want 2, 1, 0 and three messages", s.downloads, s.oversize, s.tempfailed, s.sent)
	}

	up = pop3test.NewServer(t, loginScript+"C: RETR 1\n"+cleanMsg+"C: QUIT\nS: +OK\n")
	gw, obs, _ = observedGateway(t, "- {type: fakeav, mode: fail}\n", proxy.Options{MaxSize: 1 << 20})
	c = login(t, gw, up.Addr())
	c.Cmd("RETR 1", "-ERR [SYS/TEMP]*")
	c.Cmd("QUIT", "+OK*")
	if s := obs.snapshot(); s.tempfailed != 1 || len(s.sent) != 0 {
		t.Errorf("tempfailed %d, sent %v; want 1 and nothing", s.tempfailed, s.sent)
	}
}

// Upstream failures are reported by stage and by a reason from a closed
// set, never with an address.
func TestObserverUpstreamFailures(t *testing.T) {
	// An upstream that accepts and never greets.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	core, _ := observer.New(zapcore.InfoLevel)
	obs := newCountingObserver()
	gw := serve(t, proxy.Options{Logger: zap.New(core), Observer: obs,
		Upstream: upstream.Options{DialTimeout: 300 * time.Millisecond, Timeout: 5 * time.Second}})

	try := func(login, passReply string) {
		t.Helper()
		c := pop3servertest.Dial(t, gw)
		c.Expect("+OK*")
		if c.Cmd("USER "+login, "*")[0] == '-' {
			return
		}
		c.Cmd("PASS secret", passReply)
		c.Cmd("QUIT", "*")
	}
	try("alice%"+testinfra.FreeAddr(t), "-ERR [SYS/TEMP]*")
	try("alice%192.0.2.1:110", "*") // not in the allow list
	try("alice%"+silent.Addr().String(), "-ERR [SYS/TEMP]*")
	for reply, want := range map[string]string{
		"-ERR [AUTH] wrong password":     "-ERR [AUTH]*",
		"-ERR [IN-USE] mailbox locked":   "-ERR [IN-USE]*",
		"-ERR [SYS/TEMP] backend broken": "-ERR [SYS/TEMP]*",
	} {
		up := pop3test.NewServer(t, "S: +OK ready\nC: CAPA\nS: -ERR\nC: USER alice\nS: +OK\nC: PASS secret\nS: "+reply+"\n")
		try("alice%"+up.Addr(), want)
	}
	greetErr := pop3test.NewServer(t, "S: -ERR go away\n")
	try("alice%"+greetErr.Addr(), "-ERR*")

	want := map[string]int{
		"connect refused": 1, "connect denied": 1, "connect timeout": 1, "connect rejected": 1,
		"login auth": 1, "login in_use": 1, "login unavailable": 1,
	}
	if got := obs.snapshot().failures; !maps.Equal(got, want) {
		t.Errorf("UpstreamFailed calls %v, want %v", got, want)
	}
}
