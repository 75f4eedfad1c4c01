package metrics

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	_ "github.com/pop3proxy/pop3proxy/scanners/clamav"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics answered %d", rec.Code)
	}
	return rec.Body.String()
}

func value(scrape, series string) string {
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// Each observer call moves its own series, with label values from the
// closed sets; the rest stay at 0 from the start.
func TestObserversMoveTheirSeries(t *testing.T) {
	m := New()
	before := scrape(t, m)
	for _, series := range []string{
		`pop3proxy_sessions_total{result="timeout"}`, `pop3proxy_logins_total{mechanism="apop",result="error"}`,
		`pop3proxy_upstream_failures_total{reason="login_delay",stage="login"}`, `pop3proxy_messages_oversize_total{limit="max_size"}`,
	} {
		if value(before, series) != "0" {
			t.Errorf("%s not at 0 from the start", series)
		}
	}

	s := m.Server()
	s.SessionStarted()
	s.SessionStarted()
	s.SessionEnded(pop3server.SessionQuit)
	s.Login(pop3server.LoginPlain, pop3server.LoginFailed)
	s.SessionEnded(pop3server.SessionResult(200)) // out of range: no series
	r := m.Relay()
	r.MessageSent(false, 100, true)
	r.MessageSent(true, 20, true)
	r.MessageSent(false, 7, false)
	r.Downloaded(30 * time.Millisecond)
	r.Oversize()
	r.TempFailed()
	r.UpstreamFailed(proxy.StageConnect, proxy.ReasonRefused)
	speed := r.(proxy.SpeedObserver)
	speed.Replayed()
	speed.Replayed()
	speed.ScannedAhead()
	f := m.Filters().Filter("clamav", "clamav", filter.OnErrorPass)
	f.Verdict(filter.Replace, 2*time.Millisecond)
	f.Verdict(filter.Action(9), time.Millisecond)
	f.Failed(true, time.Second)
	f.Failed(false, time.Millisecond)
	f.TooLarge(time.Millisecond)

	got := scrape(t, m)
	for series, want := range map[string]string{
		`pop3proxy_sessions_active`:                                                     "0",
		`pop3proxy_sessions_total{result="quit"}`:                                       "1",
		`pop3proxy_logins_total{mechanism="plain",result="failed"}`:                     "1",
		`pop3proxy_messages_retrieved_total{command="retr"}`:                            "1",
		`pop3proxy_messages_retrieved_total{command="top"}`:                             "1",
		`pop3proxy_messages_sent_bytes_total`:                                           "127",
		`pop3proxy_upstream_download_duration_seconds_count`:                            "1",
		`pop3proxy_messages_oversize_total{limit="max_size"}`:                           "1",
		`pop3proxy_messages_oversize_total{limit="clamav"}`:                             "1",
		`pop3proxy_messages_tempfailed_total`:                                           "1",
		`pop3proxy_messages_replayed_total`:                                             "2",
		`pop3proxy_messages_scanned_ahead_total`:                                        "1",
		`pop3proxy_upstream_failures_total{reason="refused",stage="connect"}`:           "1",
		`pop3proxy_filter_verdicts_total{action="replace",filter="clamav"}`:             "1",
		`pop3proxy_filter_verdicts_total{action="invalid",filter="clamav"}`:             "1",
		`pop3proxy_filter_errors_total{filter="clamav",kind="timeout",on_error="pass"}`: "1",
		`pop3proxy_filter_errors_total{filter="clamav",kind="error",on_error="pass"}`:   "1",
		`pop3proxy_filter_scan_duration_seconds_count{filter="clamav"}`:                 "5",
	} {
		if v := value(got, series); v != want {
			t.Errorf("%s = %q, want %q", series, v, want)
		}
	}
}

// The observer calls on the hot paths allocate nothing.
func TestObserverCallsDoNotAllocate(t *testing.T) {
	m := New()
	s, r := m.Server(), m.Relay()
	f := m.Filters().Filter("header", "header", filter.OnErrorTempfail)
	allocs := testing.AllocsPerRun(100, func() {
		s.SessionStarted()
		s.Login(pop3server.LoginUser, pop3server.LoginOK)
		s.SessionEnded(pop3server.SessionDisconnect)
		r.MessageSent(false, 10, true)
		r.UpstreamFailed(proxy.StageLogin, proxy.ReasonAuth)
		f.Verdict(filter.Continue, time.Millisecond)
		f.Failed(false, time.Millisecond)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per round of observer calls", allocs)
	}
}

// fakeClamd answers zPING with PONG while up is true, and is refused
// otherwise (nobody listens).
func fakeClamd(t *testing.T) (addr string, setUp func(bool)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	var cur net.Listener
	setUp = func(up bool) {
		if cur != nil {
			cur.Close()
			cur = nil
		}
		if !up {
			return
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		cur = l
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				buf := make([]byte, 6)
				io.ReadFull(c, buf)
				io.WriteString(c, "PONG\x00")
				c.Close()
			}
		}()
	}
	t.Cleanup(func() { setUp(false) })
	return addr, setUp
}

// Readiness needs the listeners serving and every scanner answering; the
// checks run in the background and log what changes, once.
func TestHealthReadiness(t *testing.T) {
	addr, setUp := fakeClamd(t)
	ch, err := filter.BuildYAML([]byte(fmt.Sprintf("[{type: clamav, address: \"tcp://%s\"}, {type: clamav, name: other, address: \"tcp://%s\"}]", addr, addr)), nil)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	m := New()
	h := NewHealth(zap.New(core), 20*time.Millisecond, m)
	srv, err := Listen("127.0.0.1:0", m, h, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	readyz := "http://" + srv.Addr().String() + "/readyz"
	get := func() (int, string) {
		resp, err := http.Get(readyz)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// waitFor waits for status with a body that is not the one of a check
	// yet to come.
	waitFor := func(status int) string {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, body := get()
			if code == status && !strings.Contains(body, "not checked yet") {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz still %d, want %d: %s", code, status, body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "listeners not serving") {
		t.Errorf("before start: %d %q", code, body)
	}
	h.Start(true)
	defer h.Stop()
	h.UseChain(ch)
	h.SetServing(true)
	body := waitFor(http.StatusServiceUnavailable)
	if !strings.Contains(body, "filter clamav (filters[0].address): clamd at tcp://"+addr+" does not answer") ||
		!strings.Contains(body, "filter other (filters[1].address)") {
		t.Errorf("/readyz body does not name both scanners: %q", body)
	}
	setUp(true)
	if body := waitFor(http.StatusOK); body != "ready\n" {
		t.Errorf("ready body %q", body)
	}
	if v := value(scrape(t, m), `pop3proxy_scanner_up{filter="clamav"}`); v != "1" {
		t.Errorf("scanner_up = %q while clamd answers", v)
	}
	h.SetServing(false)
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("draining: %d %q", code, body)
	}
	h.SetServing(true)
	setUp(false)
	waitFor(http.StatusServiceUnavailable)

	if n := logs.FilterMessage("filter enabled, but its scanner does not answer").Len(); n != 2 {
		t.Errorf("start-up error logged %d times, want once per filter", n)
	}
	e := logs.FilterMessage("filter enabled, but its scanner does not answer").All()[0].ContextMap()
	if e["scanner"] != "clamd" || e["address"] != "tcp://"+addr || strings.Contains(fmt.Sprint(e["error"]), "does not answer") {
		t.Errorf("start-up error fields %v", e)
	}
	time.Sleep(100 * time.Millisecond) // several more failed checks
	if n := logs.FilterMessage("scanner answers again").Len(); n != 2 {
		t.Errorf("recovery logged %d times, want once per filter", n)
	}
	if n := logs.FilterMessage("scanner does not answer").Len(); n != 2 {
		t.Errorf("second outage logged %d times, want once per filter", n)
	}
}

// Without metrics, a Health that does not repeat still checks the chain
// once, for the start-up log, and no more: a scanner that comes up later
// is never seen answering.
func TestHealthChecksOnceWithoutMetrics(t *testing.T) {
	addr, setUp := fakeClamd(t)
	ch, err := filter.BuildYAML([]byte(fmt.Sprintf("[{type: clamav, address: \"tcp://%s\"}]", addr)), nil)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	h := NewHealth(zap.New(core), time.Millisecond, nil)
	h.Start(false)
	h.UseChain(ch)
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessage("filter enabled, but its scanner does not answer").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no start-up error")
		}
		time.Sleep(10 * time.Millisecond)
	}
	setUp(true)
	time.Sleep(100 * time.Millisecond) // a hundred intervals
	h.Stop()
	if n := logs.Len(); n != 1 {
		t.Errorf("%d log entries, want the one start-up error: %v", n, logs.All())
	}
}
