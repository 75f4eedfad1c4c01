package rspamd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// The tests in this file use fake rspamd servers on loopback; those
// against a real rspamd are in realrspamd_test.go.

const (
	hamReply  = `{"is_skipped":false,"score":0.9,"required_score":15.0,"action":"no action","symbols":{"DATE_IN_PAST":{"name":"DATE_IN_PAST","score":1.0},"MIME_GOOD":{"name":"MIME_GOOD","score":-0.1}},"messages":{}}`
	spamReply = `{"is_skipped":false,"score":7.4,"required_score":15.0,"action":"add header","symbols":{"HFILTER_HOSTNAME_UNKNOWN":{"name":"HFILTER_HOSTNAME_UNKNOWN","score":2.5},"MISSING_MID":{"name":"MISSING_MID","score":2.5},"MISSING_DATE":{"name":"MISSING_DATE","score":2.4}},"messages":{}}`
)

var rsMeta = filter.Meta{User: "alice@example.net", Upstream: "pop.example.net:995", Number: 3}

func rsMessage(b []byte) *filter.Message { return filter.NewMessage(b, rsMeta) }

func newRS(t *testing.T, f *Filter) *Filter {
	t.Helper()
	if err := f.Provision(filter.Env{Name: "rspamd"}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// field returns the value of the first AddField edit for name.
func field(v filter.Verdict, name string) (string, bool) {
	for _, e := range v.Edits {
		if e.Op == filter.AddField && e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// request is what a fake rspamd received.
type request struct {
	Method, Path     string
	Header           http.Header
	ContentLength    int64
	TransferEncoding []string
	Body             []byte
}

// fake is a fake rspamd on a loopback port.
type fake struct {
	srv   *httptest.Server
	reqs  chan request
	hits  atomic.Int32
	conns atomic.Int32 // connections accepted
}

// startFake serves every request with handle, after recording it (the
// body read whole) unless handle is nil for a request it reads itself.
func startFake(t *testing.T, record bool, handle http.HandlerFunc) *fake {
	t.Helper()
	f := &fake{reqs: make(chan request, 100)}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		if record {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				t.Errorf("fake rspamd: reading the request: %v", err)
			}
			f.reqs <- request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(),
				ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding, Body: body}
		}
		handle(w, r)
	}))
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	if !strings.HasPrefix(f.srv.URL, "http://127.0.0.1:") {
		t.Fatalf("fake rspamd on %s, want loopback", f.srv.URL)
	}
	return f
}

func replying(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func judge(t *testing.T, f *Filter, m *filter.Message) (filter.Verdict, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.Judge(ctx, m)
}

func TestRegistered(t *testing.T) {
	if !slices.Contains(filter.Types(), "rspamd") {
		t.Fatalf("type rspamd not registered: %v", filter.Types())
	}
}

// TestYAML decodes a configuration block the way the chain does, so that
// the yaml tags are the documented keys.
func TestYAML(t *testing.T) {
	var doc yaml.Node
	src := "address: http://127.0.0.1:11334\npassword: s3cret\nsubject_prefix: \"[SPAM]\"\nmax_size: 1MiB\nadd_milter_headers: true\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	var f Filter
	if errs := yamlconf.DecodeStrict(&doc, &f, "filters[0]"); len(errs) > 0 {
		t.Fatalf("decode: %v", errs)
	}
	newRS(t, &f)
	if f.Password != "s3cret" || f.MaxSize != 1<<20 || !f.AddMilterHeaders || f.prefix != "[SPAM] " {
		t.Fatalf("decoded %+v", f)
	}
	if f.client.checkURL != "http://127.0.0.1:11334/checkv2" || f.client.pingURL != "http://127.0.0.1:11334/ping" {
		t.Fatalf("URLs %q %q", f.client.checkURL, f.client.pingURL)
	}
}

func TestProvisionDefaults(t *testing.T) {
	f := newRS(t, &Filter{})
	if f.MaxSize != 500*1024 {
		t.Errorf("MaxSize = %d, want 512000, as spamassassin", f.MaxSize)
	}
	if f.client.checkURL != "http://127.0.0.1:11333/checkv2" {
		t.Errorf("default check URL %q", f.client.checkURL)
	}
	if f.prefix != "" || f.AddMilterHeaders || f.Password != "" {
		t.Errorf("defaults %+v", f)
	}
	for in, want := range map[string]string{
		"https://rspamd.example:443/":       "https://rspamd.example:443/checkv2",
		"http://[::1]:11333":                "http://[::1]:11333/checkv2",
		"https://mail.example:8443/rspamd/": "https://mail.example:8443/rspamd/checkv2",
	} {
		if f := newRS(t, &Filter{Address: in}); f.client.checkURL != want {
			t.Errorf("%s: check URL %q, want %q", in, f.client.checkURL, want)
		}
	}
	if p := (&Filter{}).MaxSize; p != 0 {
		t.Fatal(p)
	}
}

func TestProvisionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Filter
		want string
	}{
		{"no scheme", Filter{Address: "127.0.0.1:11333"}, "use http://host:port"},
		{"host only", Filter{Address: "rspamd.example"}, "scheme must be http"},
		{"tcp", Filter{Address: "tcp://127.0.0.1:11333"}, "http or https"},
		{"no host", Filter{Address: "http://:11333"}, "no host"},
		{"no port", Filter{Address: "http://127.0.0.1"}, "no port"},
		{"port 0", Filter{Address: "http://127.0.0.1:0"}, "port"},
		{"port big", Filter{Address: "http://127.0.0.1:65536"}, "port"},
		{"userinfo", Filter{Address: "http://u:p@127.0.0.1:11333"}, "password key"},
		{"query", Filter{Address: "http://127.0.0.1:11333/?x=1"}, "query"},
		{"fragment", Filter{Address: "http://127.0.0.1:11333/#f"}, "fragment"},
		{"password CRLF", Filter{Password: "pw\r\nX-Injected: 1"}, "control"},
		{"password spaces", Filter{Password: " pw"}, "white space"},
		{"password long", Filter{Password: strings.Repeat("p", 257)}, "at most"},
		{"prefix CRLF", Filter{SubjectPrefix: "[SPAM]\r\nBcc: x@example.com"}, "control"},
		{"prefix 8bit", Filter{SubjectPrefix: "[SPÄM]"}, "ASCII"},
		{"prefix long", Filter{SubjectPrefix: strings.Repeat("x", 65)}, "at most 64"},
		{"prefix spaces", Filter{SubjectPrefix: "   "}, "only spaces"},
		{"max_size", Filter{MaxSize: 50<<20 + 1}, "max_message"},
		{"max_size negative", Filter{MaxSize: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Provision(filter.Env{})
			if err == nil {
				t.Fatalf("Provision accepted %+v", tc.f)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestJudgeAndPingWithoutProvision(t *testing.T) {
	if _, err := (&Filter{}).Judge(context.Background(), rsMessage([]byte("Subject: x\r\n\r\n"))); err == nil {
		t.Error("Judge without Provision did not fail")
	}
	if err := (&Filter{}).Ping(context.Background()); err == nil {
		t.Error("Ping without Provision did not fail")
	}
}

// TestRequest checks the request as rspamd receives it: POST /checkv2, an
// exact Content-Length and no chunking, the message byte for byte, and the
// envelope headers taken from the message (Return-Path, To, Cc) and the
// mailbox user as Deliver-To, never User, IP, Hostname or Helo.
func TestRequest(t *testing.T) {
	msg := []byte("Return-Path: <bounce+123@lists.example.com>\r\n" +
		"Received: from mx.example.com (mx.example.com [192.0.2.10]) by mx.example.net\r\n" +
		"From: \"Alice Example\" <alice@example.com>\r\n" +
		"To: Bob <bob@example.net>, carol@example.net\r\n" +
		"Subject: hello\r\n" +
		"Cc: Team: dave@example.net, BOB@example.net;\r\n" +
		"X-Odd: bare\nlf\r\n" +
		"\r\n\x00\xff\xfe body\r\n.\r\n..\r\nno final newline")
	f := startFake(t, true, replying(200, hamReply))
	rs := newRS(t, &Filter{Address: f.srv.URL, Password: "s3cret"})
	if _, err := judge(t, rs, rsMessage(msg)); err != nil {
		t.Fatalf("Judge: %v", err)
	}
	req := <-f.reqs
	if req.Method != http.MethodPost || req.Path != "/checkv2" {
		t.Errorf("%s %s, want POST /checkv2", req.Method, req.Path)
	}
	if req.ContentLength != int64(len(msg)) || req.Header.Get("Content-Length") != "" && req.Header.Get("Content-Length") != strconv.Itoa(len(msg)) || len(req.TransferEncoding) > 0 {
		t.Errorf("Content-Length %d (header %q), Transfer-Encoding %v; want exactly %d", req.ContentLength, req.Header.Get("Content-Length"), req.TransferEncoding, len(msg))
	}
	if !bytes.Equal(req.Body, msg) {
		t.Errorf("body\n got %q\nwant %q", req.Body, msg)
	}
	want := map[string][]string{
		"Deliver-To": {"alice@example.net"},
		"From":       {"bounce+123@lists.example.com"},
		"Rcpt":       {"bob@example.net", "carol@example.net", "dave@example.net"},
		"Password":   {"s3cret"},
		"User-Agent": {"pop3proxy"},
	}
	for name, values := range want {
		if got := req.Header.Values(name); !slices.Equal(got, values) {
			t.Errorf("%s: %q, want %q", name, got, values)
		}
	}
	for _, name := range []string{"User", "Ip", "Hostname", "Helo", "Accept-Encoding", "Settings", "Pass"} {
		if v := req.Header.Values(name); len(v) > 0 {
			t.Errorf("%s sent: %q", name, v)
		}
	}
}

// TestRequestEmptyMessage: an empty message goes with Content-Length 0,
// not as a chunked body of unknown length.
func TestRequestEmptyMessage(t *testing.T) {
	f := startFake(t, true, replying(200, hamReply))
	rs := newRS(t, &Filter{Address: f.srv.URL})
	if _, err := judge(t, rs, rsMessage(nil)); err != nil {
		t.Fatal(err)
	}
	req := <-f.reqs
	if req.ContentLength != 0 || len(req.TransferEncoding) > 0 || len(req.Body) != 0 {
		t.Errorf("Content-Length %d, Transfer-Encoding %v, body %q", req.ContentLength, req.TransferEncoding, req.Body)
	}
	if v := req.Header.Values("From"); len(v) > 0 {
		t.Errorf("From %q for a message without one", v)
	}
}

// TestEnvelope covers the header fields the envelope headers come from.
func TestEnvelope(t *testing.T) {
	for _, tc := range []struct {
		name, msg, user string
		from            string
		rcpts           []string
		deliverTo       string
	}{
		{name: "From without Return-Path", msg: "From: Alice <alice@example.com>\r\nTo: bob@example.net\r\n\r\nbody",
			user: "bob", from: "alice@example.com", rcpts: []string{"bob@example.net"}, deliverTo: "bob"},
		{name: "bounce", msg: "Return-Path: <>\r\nFrom: MAILER-DAEMON@example.com\r\n\r\n",
			from: "<>"},
		{name: "first Return-Path only", msg: "Return-Path: <env@example.com>\r\nReturn-Path: <forged@example.org>\r\nFrom: a@example.com\r\n\r\n",
			from: "env@example.com"},
		{name: "unreadable Return-Path", msg: "Return-Path: nonsense\r\nFrom: a@example.com\r\n\r\n",
			from: "a@example.com"},
		{name: "LF, folded, several To fields", msg: "From: a@example.com\nTo: b@example.net,\n\tc@example.net\nTo: d@example.net\n\nTo: body@example.net\n",
			from: "a@example.com", rcpts: []string{"b@example.net", "c@example.net", "d@example.net"}},
		{name: "malformed lists", msg: "From: \"unterminated <x@example.com>\r\nTo: <<b@example.net>>, \"Ann\" c@example.net;;\r\n\r\n",
			from: "x@example.com", rcpts: []string{"b@example.net", "c@example.net"}},
		{name: "mbox line and no colon", msg: "From someone Sun Nov 22 10:00:00 2026\r\nno colon here\r\nFrom: a@example.com\r\n\r\n",
			from: "a@example.com"},
		{name: "8-bit and spaces left out", msg: "From: J\xc3\xb6rg <j\xc3\xb6rg@example.com>\r\nTo: ok@example.net\r\n\r\n",
			user: "user name", rcpts: []string{"ok@example.net"}},
		{name: "header only, no empty line", msg: "From: a@example.com\r\nCc: c@example.net",
			from: "a@example.com", rcpts: []string{"c@example.net"}},
		{name: "nothing", msg: "Subject: hi\r\n\r\nFrom: body@example.com\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := envelopeOf(filter.NewMessage([]byte(tc.msg), filter.Meta{User: tc.user}))
			if err != nil {
				t.Fatal(err)
			}
			if env.from != tc.from || !slices.Equal(env.rcpts, tc.rcpts) || env.deliverTo != tc.deliverTo {
				t.Errorf("from %q rcpts %q deliver-to %q; want %q %q %q", env.from, env.rcpts, env.deliverTo, tc.from, tc.rcpts, tc.deliverTo)
			}
		})
	}

	// At most maxRcpts, and a field cut off by maxHeaderScan is not read.
	var b strings.Builder
	b.WriteString("From: a@example.com\r\n")
	for i := range 150 {
		fmt.Fprintf(&b, "To: r%d@example.net\r\n", i)
	}
	env, err := envelopeOf(rsMessage([]byte(b.String() + "\r\n")))
	if err != nil || len(env.rcpts) != maxRcpts || env.rcpts[99] != "r99@example.net" {
		t.Errorf("150 recipients: %d kept, last %q, %v", len(env.rcpts), env.rcpts[len(env.rcpts)-1], err)
	}
	padded := "X-Pad: " + strings.Repeat("p", maxHeaderScan-len("X-Pad: \r\nTo: ")-3) + "\r\nTo: xyz@example.net\r\n\r\n"
	if env, _ := envelopeOf(rsMessage([]byte(padded))); len(env.rcpts) != 0 {
		t.Errorf("a To field cut off at %d bytes was read: %q", maxHeaderScan, env.rcpts)
	}
}

// TestSpooled: a message in a spool file reaches rspamd whole, byte for
// byte, while the process allocates a small fraction of its size: it is
// streamed, never read into memory. The fake hashes what it receives.
func TestSpooled(t *testing.T) {
	const size = 8 << 20
	line := []byte(strings.Repeat("lorem ipsum ", 6) + "\r\n")
	head := "From: a@example.com\r\nTo: b@example.net\r\nSubject: big\r\n\r\n"
	m := filtertest.Spooled(t, rsMeta, func(w io.Writer) error {
		if _, err := io.WriteString(w, head); err != nil {
			return err
		}
		block := bytes.Repeat(line, (64<<10)/len(line))
		for left := size - len(head); left > 0; left -= len(block) {
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
		n      int64
		cl     int64
		sum    []byte
		chunks []string
	}
	got := make(chan received, 1)
	f := startFake(t, false, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		got <- received{n: n, cl: r.ContentLength, sum: h.Sum(nil), chunks: r.TransferEncoding}
		io.WriteString(w, hamReply)
	})
	rs := newRS(t, &Filter{Address: f.srv.URL, MaxSize: 32 << 20})
	var err error
	allocated, _ := testinfra.AllocatedDuring(func() { _, err = judge(t, rs, m) })
	t.Logf("%d-byte spooled message judged; allocated %d bytes", size, allocated)
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.n != size || r.cl != size || len(r.chunks) > 0 || !bytes.Equal(r.sum, want.Sum(nil)) {
		t.Errorf("rspamd received %d bytes (Content-Length %d, %v), different from the %d-byte message", r.n, r.cl, r.chunks, size)
	}
	if allocated >= 4<<20 {
		t.Errorf("judging an %d MiB message allocated %d bytes: it is held in memory", size>>20, allocated)
	}
}

// TestSourceFails: a message that cannot be read to its end is an error,
// never a verdict.
func TestSourceFails(t *testing.T) {
	f := startFake(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, hamReply)
	})
	rs := newRS(t, &Filter{Address: f.srv.URL, MaxSize: 1 << 20})
	for _, good := range []int64{10, 200 << 10} {
		m := filtertest.FailingMessage(good, 300<<10, rsMeta)
		v, err := judge(t, rs, m)
		if err == nil {
			t.Fatalf("good %d: verdict %+v and no error for a message that cannot be read", good, v)
		}
		if !errors.Is(err, filtertest.ErrDiskOnFire) || !strings.Contains(err.Error(), "reading the message") {
			t.Errorf("good %d: error %v does not report the read error", good, err)
		}
	}
}

// TestFailures: every reply that is not a verdict is an error, never a
// clean message, and fails quickly.
func TestFailures(t *testing.T) {
	huge := `{"action":"no action","score":0,"required_score":15,"pad":"` + strings.Repeat("x", 2<<20) + `"}`
	closed := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}
	other := startFake(t, true, replying(200, hamReply))
	for _, tc := range []struct {
		name   string
		handle http.HandlerFunc
		want   string
	}{
		{"500 with rspamd's error", replying(500, `{"error":"invalid command","error_domain":"protocol-error"}`), `500 Internal Server Error: "invalid command"`},
		{"401", replying(401, `{"error":"Unauthorized"}`), "401 Unauthorized"},
		{"503 not JSON", replying(503, "busy"), `503 Service Unavailable: "busy"`},
		{"garbage", replying(200, "this is not JSON"), "not the JSON"},
		{"empty", replying(200, ""), "not the JSON"},
		{"array", replying(200, `[1,2]`), "not the JSON"},
		{"trailing", replying(200, hamReply+`{"action":"reject"}`), "more after"},
		{"no action", replying(200, `{"score":1,"required_score":15,"symbols":{}}`), "no action ("},
		{"null action", replying(200, `{"action":null,"score":1,"required_score":15}`), "no action ("},
		{"no score", replying(200, `{"action":"no action","required_score":15}`), "no score"},
		{"no required_score", replying(200, `{"action":"no action","score":1}`), "no required_score"},
		{"score a string", replying(200, `{"action":"no action","score":"1","required_score":15}`), "not the JSON"},
		{"unknown action", replying(200, `{"action":"teleport","score":1,"required_score":15}`), `unknown action "teleport"`},
		{"soft reject", replying(200, `{"action":"soft reject","score":1,"required_score":15}`), "try again later"},
		{"huge reply", replying(200, huge), "larger than 1048576 bytes"},
		{"closed without reply", closed, "EOF"},
		{"redirect not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.srv.URL+"/checkv2", http.StatusTemporaryRedirect)
		}, "307"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, false, tc.handle)
			rs := newRS(t, &Filter{Address: f.srv.URL})
			start := time.Now()
			v, err := judge(t, rs, rsMessage([]byte("Subject: x\r\n\r\nbody\r\n")))
			if err == nil {
				t.Fatalf("no error; verdict %+v", v)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), f.srv.URL) {
				t.Errorf("error %q does not say %q and name %s", err, tc.want, f.srv.URL)
			}
			if len(v.Edits) > 0 || v.Reason != "" {
				t.Errorf("verdict %+v with the error", v)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
	if n := other.hits.Load(); n != 0 {
		t.Errorf("the redirect was followed (%d requests)", n)
	}

	t.Run("nothing listening", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		rs := newRS(t, &Filter{Address: "http://" + addr})
		if _, err := judge(t, rs, rsMessage([]byte("Subject: x\r\n\r\n"))); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("error %v", err)
		}
	})
}

// TestChainOnError: through the chain, a failing rspamd tempfails by
// default, and with on_error: pass the message is delivered marked
// unscanned, without X-Spam fields of any verdict.
func TestChainOnError(t *testing.T) {
	f := startFake(t, false, replying(200, "garbage"))
	msg := []byte("Subject: x\r\nX-Spam-Flag: NO\r\n\r\nbody\r\n")
	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: rspamd, address: %q, timeout: 5s}\n", f.srv.URL))
	if res, _ := filtertest.Run(t, ch, msg, rsMeta); res.Outcome != filter.TempFail {
		t.Errorf("on_error tempfail: %v (%s)", res.Outcome, res.Reason)
	}
	ch = filtertest.MustChain(t, fmt.Sprintf("- {type: rspamd, address: %q, timeout: 5s, on_error: pass}\n", f.srv.URL))
	res, got := filtertest.Run(t, ch, msg, rsMeta)
	if res.Outcome != filter.Deliver || string(got) != "X-Pop3proxy-Unscanned: rspamd failed\r\n"+string(msg) {
		t.Errorf("on_error pass: %v %q", res.Outcome, got)
	}
}

// TestSlowReply: a reply later than the context's deadline is a timeout
// error as soon as the deadline passes, and through the chain a timeout.
func TestSlowReply(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := startFake(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		io.WriteString(w, hamReply)
	})
	rs := newRS(t, &Filter{Address: f.srv.URL})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	v, err := rs.Judge(ctx, rsMessage([]byte("Subject: x\r\n\r\n")))
	took := time.Since(start)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, verdict %+v; want a deadline error", err, v)
	}
	if took > 2*time.Second {
		t.Errorf("took %v for a 300ms deadline", took)
	}
	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: rspamd, address: %q, timeout: 300ms, on_error: pass}\n", f.srv.URL))
	res, got := filtertest.Run(t, ch, []byte("Subject: x\r\n\r\n"), rsMeta)
	if res.Outcome != filter.Deliver || !strings.HasPrefix(string(got), "X-Pop3proxy-Unscanned: rspamd timed out\r\n") {
		t.Errorf("chain: %v %q", res.Outcome, got)
	}
}

// TestVerdicts: the action alone decides spam (the package documentation's
// table), whatever the score says; the fields follow SpamAssassin's.
func TestVerdicts(t *testing.T) {
	for _, tc := range []struct {
		action        string
		score, reqd   string
		spam          bool
		level, status string
	}{
		{"no action", "0.90", "15", false, "", "No, score=0.90 required=15.00 tests=A,B action=no_action"},
		{"no action", "20", "15", false, strings.Repeat("*", 20), "No, score=20.00 required=15.00 tests=A,B action=no_action"},
		{"greylist", "4.9", "15", false, "****", "No, score=4.90 required=15.00 tests=A,B action=greylist"},
		{"add header", "7.4", "15", true, "*******", "Yes, score=7.40 required=15.00 tests=A,B action=add_header"},
		{"add_header", "7.4", "15", true, "*******", "Yes, score=7.40 required=15.00 tests=A,B action=add_header"},
		{"rewrite subject", "9", "15", true, "*********", "Yes, score=9.00 required=15.00 tests=A,B action=rewrite_subject"},
		{"reject", "15", "15", true, strings.Repeat("*", 15), "Yes, score=15.00 required=15.00 tests=A,B action=reject"},
		{"reject", "1000", "15", true, strings.Repeat("*", 50), "Yes, score=1000.00 required=15.00 tests=A,B action=reject"},
		{"discard", "-3", "15", true, "", "Yes, score=-3.00 required=15.00 tests=A,B action=discard"},
		{"quarantine", "0.99", "15", true, "", "Yes, score=0.99 required=15.00 tests=A,B action=quarantine"},
	} {
		t.Run(tc.action+"/"+tc.score, func(t *testing.T) {
			body := fmt.Sprintf(`{"action":%q,"score":%s,"required_score":%s,"symbols":{"B":{"score":-1},"A":{"score":2}}}`, tc.action, tc.score, tc.reqd)
			f := startFake(t, false, replying(200, body))
			rs := newRS(t, &Filter{Address: f.srv.URL, SubjectPrefix: "[SPAM]"})
			v, err := judge(t, rs, rsMessage([]byte("Subject: x\r\n\r\n")))
			if err != nil {
				t.Fatal(err)
			}
			want := []filter.Edit{filter.Remove("X-Spam-Flag"), filter.Remove("X-Spam-Status"), filter.Remove("X-Spam-Level")}
			if tc.spam {
				want = append(want, filter.Add("X-Spam-Flag", "YES"))
			}
			if tc.level != "" {
				want = append(want, filter.Add("X-Spam-Level", tc.level))
			}
			want = append(want, filter.Add("X-Spam-Status", tc.status))
			if tc.spam {
				want = append(want, filter.SubjectPrefix("[SPAM] "))
			}
			if !slices.Equal(v.Edits, want) {
				t.Errorf("edits\n got %+v\nwant %+v", v.Edits, want)
			}
			if v.Action != filter.Continue {
				t.Errorf("action %v: spam is tagged, never dropped", v.Action)
			}
			if (v.Reason != "") != tc.spam || tc.spam && !strings.Contains(v.Reason, normaliseAction(tc.action)) {
				t.Errorf("reason %q", v.Reason)
			}
		})
	}
}

// TestStatusTests: symbol names that could break X-Spam-Status are left
// out; beyond 50, those that moved the score most are kept, listed in
// name order.
func TestStatusTests(t *testing.T) {
	var syms []symbol
	for i := range 120 {
		syms = append(syms, symbol{Name: fmt.Sprintf("SYM_%03d", i), Score: float64(i%60) * 0.1})
	}
	syms = append(syms, symbol{Name: "NEG_BIG", Score: -100}, symbol{Name: "BAD,NAME", Score: 50},
		symbol{Name: "BAD NAME", Score: 50}, symbol{Name: "CR\r\nX-Injected: 1", Score: 50}, symbol{Name: "", Score: 50},
		symbol{Name: strings.Repeat("L", 129), Score: 50}, symbol{Name: "lower.case-ok_1", Score: 40})
	tests, dropped := statusTests(syms)
	if len(tests) != maxStatusTests || !slices.IsSorted(tests) {
		t.Fatalf("%d tests, sorted %v: %v", len(tests), slices.IsSorted(tests), tests)
	}
	if len(dropped) != 5 {
		t.Errorf("dropped %q, want the 5 invalid names", dropped)
	}
	for _, must := range []string{"NEG_BIG", "lower.case-ok_1", "SYM_059", "SYM_119"} {
		if !slices.Contains(tests, must) {
			t.Errorf("%s (a large |score|) left out of %v", must, tests)
		}
	}
	if slices.Contains(tests, "SYM_000") {
		t.Errorf("SYM_000 (score 0) kept over larger ones: %v", tests)
	}
	if tests, _ := statusTests(nil); tests != nil {
		t.Errorf("no symbols: %v", tests)
	}
}

// TestMaxSizeSkip: a message over max_size is not sent and is marked as
// the spamassassin plugin marks it.
func TestMaxSizeSkip(t *testing.T) {
	f := startFake(t, false, replying(200, spamReply))
	rs := newRS(t, &Filter{Address: f.srv.URL, MaxSize: 100, SubjectPrefix: "[SPAM]"})
	v, err := judge(t, rs, rsMessage(bytes.Repeat([]byte("x"), 101)))
	if err != nil {
		t.Fatal(err)
	}
	want := []filter.Edit{filter.Remove("X-Spam-Flag"), filter.Remove("X-Spam-Status"), filter.Remove("X-Spam-Level"),
		filter.Add("X-Spam-Status", "skipped (message larger than 100 bytes)")}
	if !slices.Equal(v.Edits, want) || v.Action != filter.Continue {
		t.Errorf("verdict %+v", v)
	}
	if n := f.hits.Load(); n != 0 {
		t.Errorf("%d requests for a message over max_size", n)
	}
	// Exactly max_size is checked.
	if v, err := judge(t, rs, rsMessage(bytes.Repeat([]byte("x"), 100))); err != nil || f.hits.Load() != 1 {
		t.Errorf("100-byte message: %v, %d requests, %+v", err, f.hits.Load(), v)
	}
}

// milterReplyJSON has every shape of add_headers rspamd uses, names the
// plugin must not take, and rspamd's folding.
const milterReplyJSON = `{"action":"add header","score":7.4,"required_score":15,"symbols":{"S":{"score":7.4}},
"milter":{"add_headers":{
  "X-Spamd-Result":{"value":"default: True [7.40 / 15.00];\r\n\tS(7.40)[opt\u00e9];\r\tT(0.00)[]","order":-1},
  "X-Spamd-Bar":"+++\u0000++\u0001\u007f++",
  "X-Rspamd-Server":[{"value":"mx1","order":0},"mx2"],
  "Authentication-Results":{"value":"mx.example.net;\r\n\tdkim=none","order":1},
  "X-Spam-Status":{"value":"Yes, score=7.40"},
  "X-Spam-Level":"*******",
  "Content-Type":"text/html",
  "X-Pop3proxy-Unscanned":"forged",
  "Bad Name":"x",
  "X-Broken":{"order":1},
  "X-Long":"` + "%s" + `"},
"remove_headers":{"X-Spam":0,"X-Spamd-Bar":0,"DKIM-Signature":-1,"X-Spam-Flag":0}}}`

func TestMilterEdits(t *testing.T) {
	long := strings.Repeat("word ", 1000)
	body := fmt.Sprintf(milterReplyJSON, long)
	f := startFake(t, false, replying(200, body))
	msg := []byte("X-Spam: yes\r\nX-Spamd-Result: forged\r\nX-Spamd-Bar: ---\r\nAuthentication-Results: mx.example.net; dkim=pass\r\n" +
		"DKIM-Signature: v=1; d=example.com\r\nContent-Type: text/plain\r\nSubject: x\r\n\r\nbody\r\n")

	rs := newRS(t, &Filter{Address: f.srv.URL, AddMilterHeaders: true})
	v, err := judge(t, rs, rsMessage(msg))
	if err != nil {
		t.Fatal(err)
	}
	want := []filter.Edit{
		filter.Remove("X-Spam-Flag"), filter.Remove("X-Spam-Status"), filter.Remove("X-Spam-Level"),
		filter.Add("X-Spam-Flag", "YES"), filter.Add("X-Spam-Level", "*******"),
		filter.Add("X-Spam-Status", "Yes, score=7.40 required=15.00 tests=S action=add_header"),
	}
	for _, name := range rspamdFields {
		want = append(want, filter.Remove(name))
	}
	want = append(want,
		filter.Remove("Authentication-Results"), filter.Remove("X-Long"),
		filter.Add("Authentication-Results", "mx.example.net; dkim=none"),
		filter.Add("X-Long", strings.TrimSpace(long[:maxMilterValue])),
		filter.Add("X-Rspamd-Server", "mx1"), filter.Add("X-Rspamd-Server", "mx2"),
		filter.Add("X-Spamd-Bar", "+++ ++ ++"),
		filter.Add("X-Spamd-Result", "default: True [7.40 / 15.00]; S(7.40)[opt??]; T(0.00)[]"),
	)
	if !slices.Equal(v.Edits, want) {
		t.Errorf("edits\n got %+v\nwant %+v", v.Edits, want)
	}

	// Through the chain: forged copies gone, rspamd's fields folded on
	// top, every other byte kept.
	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: rspamd, address: %q, add_milter_headers: true}\n", f.srv.URL))
	res, got := filtertest.Run(t, ch, msg, rsMeta)
	if res.Outcome != filter.Deliver {
		t.Fatalf("outcome %v (%s)", res.Outcome, res.Reason)
	}
	head, rest, _ := strings.Cut(string(got), "DKIM-Signature:")
	if rest != " v=1; d=example.com\r\nContent-Type: text/plain\r\nSubject: x\r\n\r\nbody\r\n" {
		t.Errorf("the message's own fields or body changed: %q", rest)
	}
	for _, forged := range []string{"forged", "---", "dkim=pass", "X-Spam: yes"} {
		if strings.Contains(head, forged) {
			t.Errorf("%q survived in\n%s", forged, head)
		}
	}
	if strings.Count(head, "X-Spam-Status:") != 1 || !strings.Contains(head, "\r\nX-Spamd-Result: default: True [7.40 / 15.00]; S(7.40)[opt??]; T(0.00)[]\r\n") {
		t.Errorf("header\n%s", head)
	}

	// Off by default.
	rs = newRS(t, &Filter{Address: f.srv.URL})
	v, err = judge(t, rs, rsMessage(msg))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.Edits {
		if !strings.HasPrefix(e.Name, "X-Spam-") {
			t.Errorf("edit %+v without add_milter_headers", e)
		}
	}
}

func TestMilterEditsBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"add_headers":{`)
	for i := range 40 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"X-F%02d":"v"`, i)
	}
	b.WriteString(`}}`)
	edits, skipped := milterEdits([]byte(b.String()))
	adds := 0
	for _, e := range edits {
		if e.Op == filter.AddField {
			adds++
		}
	}
	if adds != maxMilterFields || len(skipped) == 0 {
		t.Errorf("%d fields added of 40, skipped %q", adds, skipped)
	}
	// Without a block, or with one rspamd's parser would not write, only
	// rspamd's own field names are removed.
	for _, raw := range []string{``, `null`, `{}`, `{"add_headers":[1]}`} {
		e, s := milterEdits([]byte(raw))
		if len(e) != len(rspamdFields) || e[0] != filter.Remove(rspamdFields[0]) || len(s) > 0 != (raw == `{"add_headers":[1]}`) {
			t.Errorf("%q: %v %v", raw, e, s)
		}
	}
}

// TestForgedFields: through the chain, whatever verdict fields the sender
// put in any header are removed, the plugin's are added at the top, the
// Subject of spam is prefixed in place, and every other byte is kept.
func TestForgedFields(t *testing.T) {
	spam := startFake(t, false, replying(200, spamReply))
	ham := startFake(t, false, replying(200, hamReply))
	const msg = "From mallory Sun Nov 22 10:00:00 2026\r\nX-Spam-Flag: NO\r\nthis line has no colon\r\n" +
		"X-Spam-Status: No, score=-5.0\r\n\ttests=ALL_TRUSTED\r\nSubject: cheap\r\n pills\r\nX-Spam-Level\t: \r\n\r\nX-Spam-Flag: in the body\r\n"
	const rest = "From mallory Sun Nov 22 10:00:00 2026\r\nthis line has no colon\r\nSubject: %scheap\r\n pills\r\n\r\nX-Spam-Flag: in the body\r\n"
	for _, tc := range []struct {
		name string
		f    *fake
		want string
	}{
		{"spam", spam, "X-Spam-Flag: YES\r\nX-Spam-Level: *******\r\n" +
			"X-Spam-Status: Yes, score=7.40 required=15.00 tests=HFILTER_HOSTNAME_UNKNOWN,\r\n\tMISSING_DATE,MISSING_MID action=add_header\r\n" +
			fmt.Sprintf(rest, "[SPAM] ")},
		{"ham", ham, "X-Spam-Status: No, score=0.90 required=15.00 tests=DATE_IN_PAST,MIME_GOOD\r\n\taction=no_action\r\n" +
			fmt.Sprintf(rest, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := filtertest.MustChain(t, fmt.Sprintf("- {type: rspamd, address: %q, subject_prefix: \"[SPAM]\"}\n", tc.f.srv.URL))
			res, got := filtertest.Run(t, ch, []byte(msg), rsMeta)
			if res.Outcome != filter.Deliver {
				t.Fatalf("outcome %v (%s)", res.Outcome, res.Reason)
			}
			if string(got) != tc.want {
				t.Errorf("delivered\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestPing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle http.HandlerFunc
		want   string // "" for success
	}{
		{"pong", replying(200, "pong\r\n"), ""},
		{"not pong", replying(200, "nope"), "not pong"},
		{"500", replying(500, `{"error":"oops"}`), "500"},
		{"long", replying(200, strings.Repeat("pong", 100)), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, true, tc.handle)
			rs := newRS(t, &Filter{Address: f.srv.URL + "/prefix/", Password: "pw"})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := rs.Ping(ctx)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Ping: %v, want %q", err, tc.want)
			}
			var pe *filter.PingError
			if err != nil && (!errors.As(err, &pe) || pe.Daemon != "rspamd" || pe.Address != f.srv.URL+"/prefix" ||
				!strings.HasPrefix(err.Error(), "rspamd at "+f.srv.URL+"/prefix does not answer: ")) {
				t.Errorf("Ping error %q is not a filter.PingError naming rspamd's address", err)
			}
			req := <-f.reqs
			if req.Method != http.MethodGet || req.Path != "/prefix/ping" || req.Header.Get("Password") != "pw" {
				t.Errorf("%s %s Password %q", req.Method, req.Path, req.Header.Get("Password"))
			}
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rs := newRS(t, &Filter{Address: "http://" + addr})
	if err := rs.Ping(context.Background()); err == nil {
		t.Error("Ping with nothing listening succeeded")
	}
}

// TestConnectionReuse: where the server keeps connections open (rspamd
// 3.4 does not, a reverse proxy may), checks reuse one.
func TestConnectionReuse(t *testing.T) {
	f := startFake(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/ping" {
			io.WriteString(w, "pong\r\n")
			return
		}
		io.WriteString(w, hamReply)
	})
	rs := newRS(t, &Filter{Address: f.srv.URL})
	for i := range 5 {
		if _, err := judge(t, rs, rsMessage([]byte(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f.conns.Load(); n != 1 {
		t.Errorf("%d connections for 6 sequential requests, want 1", n)
	}
}

// TestMaxConcurrentDefault: without max_concurrent, the chain sends rspamd
// 8 messages at once and no more. The fake holds each request until 8 are
// in progress, and then a while longer for a ninth to arrive.
func TestMaxConcurrentDefault(t *testing.T) {
	const limit, runs = DefaultMaxConcurrent, 12
	crowd := scannertest.NewCrowd(limit)
	f := startFake(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		crowd.Hold()
		io.WriteString(w, hamReply)
	})
	ch := filtertest.MustChain(t, fmt.Sprintf("- {type: rspamd, address: %q, timeout: 20s}\n", f.srv.URL))
	scannertest.RunAtOnce(t, ch, runs, rsMeta)
	if p := crowd.Peak(); p != limit {
		t.Errorf("%d checks at once, want %d", p, limit)
	}
}
