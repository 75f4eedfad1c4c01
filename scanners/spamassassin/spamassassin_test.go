package spamassassin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/internal/testinfra"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// The tests in this file use fake spamd servers; those against a real spamd
// are in realspamd_test.go.

const (
	saGTUBEReply = "SPAMD/1.1 0 EX_OK\r\nContent-length: 55\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO"
	saHamReply   = "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; -0.0 / 5.0\r\n\r\n"
)

var saTestMessage = []byte("From: a@example.com\r\nTo: b@example.com\r\nSubject: hello\r\n\r\nbody\r\n")

// saRequest is what a fake spamd received.
type saRequest struct {
	Raw        []byte // everything up to EOF
	ClosedEOF  bool   // the client half-closed (EOF seen before our reply)
	ReadErr    error
	RemoteAddr string
}

// saFake is a fake spamd: it accepts connections and runs handle on each.
type saFake struct {
	addr string // for the address key
	hits chan struct{}
}

// startSAFake listens on network ("tcp" on 127.0.0.1, or "unix") and
// serves each connection with handle.
func startSAFake(t *testing.T, network string, handle func(c net.Conn)) *saFake {
	t.Helper()
	ln, addr := testinfra.Listen(t, network)
	f := &saFake{addr: addr, hits: make(chan struct{}, 100)}
	testinfra.Serve(t, ln, 10*time.Second, func(c net.Conn) {
		f.hits <- struct{}{}
		handle(c)
	})
	return f
}

// readSARequest reads a request to EOF, which only comes if the client
// half-closes: without CloseWrite it ends by the 2 s deadline instead.
func readSARequest(c net.Conn) saRequest {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	raw, err := io.ReadAll(c)
	c.SetReadDeadline(time.Time{})
	return saRequest{Raw: raw, ClosedEOF: err == nil, ReadErr: err, RemoteAddr: c.RemoteAddr().String()}
}

// saReplyingFake answers every request with reply after reading it to EOF,
// and passes the requests on.
func saReplyingFake(t *testing.T, network, reply string) (*saFake, <-chan saRequest) {
	reqs := make(chan saRequest, 10)
	f := startSAFake(t, network, func(c net.Conn) {
		reqs <- readSARequest(c)
		io.WriteString(c, reply)
	})
	return f, reqs
}

func newSA(t *testing.T, sa *Filter) *Filter {
	t.Helper()
	if err := sa.Provision(filter.Env{Name: "spam"}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	return sa
}

var saMeta = filter.Meta{User: "alice", Upstream: "pop.example.com:995", Number: 3}

func saMessage(b []byte) *filter.Message {
	return filter.NewMessage(b, saMeta)
}

// saField returns the value of the first AddField edit for name.
func saField(v filter.Verdict, name string) (string, bool) {
	for _, e := range v.Edits {
		if e.Op == filter.AddField && e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func TestSpamAssassinRegistered(t *testing.T) {
	if !slices.Contains(filter.Types(), "spamassassin") {
		t.Fatalf("type spamassassin not registered: %v", filter.Types())
	}
}

// TestSpamAssassinYAML decodes a configuration block the way the chain
// does, so the yaml tags are the documented keys.
func TestSpamAssassinYAML(t *testing.T) {
	var doc yaml.Node
	src := "address: unix:///run/spamd.sock\nsubject_prefix: \"[SPAM]\"\nmax_size: 1MiB\nuser: bob\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	var sa Filter
	if errs := yamlconf.DecodeStrict(&doc, &sa, "filters[0]"); len(errs) > 0 {
		t.Fatalf("decode: %v", errs)
	}
	if err := sa.Provision(filter.Env{}); err != nil {
		t.Fatal(err)
	}
	if sa.Address != "unix:///run/spamd.sock" || sa.SubjectPrefix != "[SPAM]" || sa.MaxSize != 1<<20 || sa.User != "bob" {
		t.Fatalf("decoded %+v", sa)
	}
	if sa.client.network != "unix" || sa.client.address != "/run/spamd.sock" || sa.client.user != "bob" {
		t.Fatalf("client %+v", sa.client)
	}
	if sa.prefix != "[SPAM] " {
		t.Fatalf("prefix %q, want a space added", sa.prefix)
	}
}

func TestSpamAssassinProvisionDefaults(t *testing.T) {
	sa := newSA(t, &Filter{})
	if sa.MaxSize != 500*1024 {
		t.Errorf("MaxSize = %d, want 512000 (spamc's 500 KB)", sa.MaxSize)
	}
	if sa.client.network != "tcp" || sa.client.address != "127.0.0.1:783" {
		t.Errorf("default address %s %s", sa.client.network, sa.client.address)
	}
	if sa.prefix != "" {
		t.Errorf("prefix %q, want none by default (DKIM)", sa.prefix)
	}
	for in, want := range map[string]string{
		"tcp://[::1]:783":          "[::1]:783",
		"tcp://spamd.example:1783": "spamd.example:1783",
	} {
		sa := newSA(t, &Filter{Address: in})
		if sa.client.network != "tcp" || sa.client.address != want {
			t.Errorf("%s: got %s %s", in, sa.client.network, sa.client.address)
		}
	}
	for in, want := range map[string]string{"[SPAM] ": "[SPAM] ", "***SPAM***": "***SPAM*** ", " [S]  ": "[S] "} {
		if sa := newSA(t, &Filter{SubjectPrefix: in}); sa.prefix != want {
			t.Errorf("subject_prefix %q: prefix %q, want %q", in, sa.prefix, want)
		}
	}
}

func TestSpamAssassinProvisionErrors(t *testing.T) {
	long := strings.Repeat("x", 65)
	for _, tc := range []struct {
		name string
		sa   Filter
		want string
	}{
		{"no scheme", Filter{Address: "127.0.0.1:783"}, "no scheme"},
		{"http", Filter{Address: "http://127.0.0.1:783"}, "not supported"},
		{"tcp empty", Filter{Address: "tcp://"}, "tcp://"},
		{"tcp no port", Filter{Address: "tcp://localhost"}, "missing port"},
		{"tcp no host", Filter{Address: "tcp://:783"}, "needs a host"},
		{"tcp port 0", Filter{Address: "tcp://localhost:0"}, "port"},
		{"tcp port big", Filter{Address: "tcp://localhost:65536"}, "port"},
		{"tcp port name", Filter{Address: "tcp://localhost:spamd"}, "port"},
		{"tcp path", Filter{Address: "tcp://localhost:783/x"}, "not a number"},
		{"unix relative", Filter{Address: "unix://run/spamd.sock"}, "absolute"},
		{"unix empty", Filter{Address: "unix://"}, "absolute"},
		{"unix long", Filter{Address: "unix:///" + strings.Repeat("d", 110)}, "at most 107"},
		{"prefix CRLF", Filter{SubjectPrefix: "[SPAM]\r\nBcc: x@example.com"}, "control"},
		{"prefix LF", Filter{SubjectPrefix: "[SPAM]\n"}, "control"},
		{"prefix tab", Filter{SubjectPrefix: "[\tSPAM]"}, "control"},
		{"prefix 8bit", Filter{SubjectPrefix: "[SPÄM]"}, "ASCII"},
		{"prefix long", Filter{SubjectPrefix: long}, "at most 64"},
		{"prefix spaces", Filter{SubjectPrefix: "   "}, "only spaces"},
		{"max_size", Filter{MaxSize: 256<<20 + 1}, "max_size"},
		{"user CRLF", Filter{User: "bob\r\nContent-length: 1"}, "control"},
		{"user spaces", Filter{User: " bob"}, "spaces"},
		{"user long", Filter{User: strings.Repeat("u", 129)}, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.sa.Provision(filter.Env{})
			if err == nil {
				t.Fatalf("Provision accepted %+v", tc.sa)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// 64 characters is still fine.
	if err := (&Filter{SubjectPrefix: long[:64]}).Provision(filter.Env{}); err != nil {
		t.Fatalf("64-character prefix: %v", err)
	}
}

func TestSpamAssassinJudgeWithoutProvision(t *testing.T) {
	if _, err := (&Filter{}).Judge(context.Background(), saMessage(saTestMessage)); err == nil {
		t.Fatal("Judge without Provision did not fail")
	}
}

// TestSpamdRequestFraming checks the request byte for byte: the verb and
// protocol version, "Content-length" with a lower-case l, the User header,
// CRLF everywhere, the message unchanged (bare LF, NUL, 8-bit, a lone dot
// and no final CRLF included) and the half-close, over TCP and unix
// sockets, for messages in memory and in a spool file, small and larger
// than the send buffer.
func TestSpamdRequestFraming(t *testing.T) {
	small := []byte("Subject: x\r\nX-Odd: bare\nlf\r\n\r\n\x00\xff\xfe body\r\n.\r\n..\r\nno final newline")
	large := append(bytes.Repeat([]byte("0123456789abcdef\r\n"), (3*spamdSendBuffer)/18), small...)
	for _, network := range []string{"tcp", "unix"} {
		for _, user := range []string{"", "alice@example.com"} {
			for _, tc := range []struct {
				name    string
				msg     []byte
				spooled bool
			}{{"small", small, false}, {"small spooled", small, true}, {"large spooled", large, true}} {
				t.Run(network+"/user="+user+"/"+tc.name, func(t *testing.T) {
					msg := tc.msg
					m := saMessage(msg)
					if tc.spooled {
						m = filtertest.SpooledBytes(t, saMeta, msg)
					}
					f, reqs := saReplyingFake(t, network, saHamReply)
					sa := newSA(t, &Filter{Address: f.addr, User: user})
					if _, err := sa.Judge(context.Background(), m); err != nil {
						t.Fatalf("Judge: %v", err)
					}
					req := <-reqs
					if !req.ClosedEOF {
						t.Fatalf("write side not closed: read ended with %v", req.ReadErr)
					}
					want := "SYMBOLS SPAMC/1.5\r\nContent-length: " + strconv.Itoa(len(msg)) + "\r\n"
					if user != "" {
						want += "User: " + user + "\r\n"
					}
					want += "\r\n" + string(msg)
					if string(req.Raw) != want {
						t.Fatalf("request\n got %q\nwant %q", req.Raw, want)
					}
				})
			}
		}
	}
}

func TestSpamAssassinJudgeSpam(t *testing.T) {
	f, _ := saReplyingFake(t, "tcp", saGTUBEReply)
	sa := newSA(t, &Filter{Address: f.addr, SubjectPrefix: "[SPAM]"})
	v, err := sa.Judge(context.Background(), saMessage(saTestMessage))
	if err != nil {
		t.Fatal(err)
	}
	want := []filter.Edit{
		filter.Remove("X-Spam-Flag"),
		filter.Remove("X-Spam-Status"),
		filter.Remove("X-Spam-Level"),
		filter.Add("X-Spam-Flag", "YES"),
		filter.Add("X-Spam-Level", strings.Repeat("*", 50)),
		filter.Add("X-Spam-Status", "Yes, score=1000.0 required=5.0 tests=GTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO version=pop3proxy"),
		filter.SubjectPrefix("[SPAM] "),
	}
	if !slices.Equal(v.Edits, want) {
		t.Fatalf("edits\n got %+v\nwant %+v", v.Edits, want)
	}
	if v.Action != filter.Continue {
		t.Errorf("action %v, want continue: spam is tagged, not dropped", v.Action)
	}
	if v.Reason != "spam score 1000.0/5.0" {
		t.Errorf("reason %q", v.Reason)
	}
}

func TestSpamAssassinJudgeHam(t *testing.T) {
	for _, tc := range []struct {
		reply, status, level string
	}{
		{saHamReply, "No, score=-0.0 required=5.0 tests=none version=pop3proxy", ""},
		{"SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: False ; 3.9 / 5.0\r\n\r\nMISSING_MID",
			"No, score=3.9 required=5.0 tests=MISSING_MID version=pop3proxy", "***"},
		{"SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: False ; 0.9 / 5.0\r\n\r\nMISSING_MID",
			"No, score=0.9 required=5.0 tests=MISSING_MID version=pop3proxy", ""},
	} {
		f, _ := saReplyingFake(t, "tcp", tc.reply)
		sa := newSA(t, &Filter{Address: f.addr, SubjectPrefix: "[SPAM]"})
		v, err := sa.Judge(context.Background(), saMessage(saTestMessage))
		if err != nil {
			t.Fatal(err)
		}
		if v.Action != filter.Continue || v.Reason != "" {
			t.Errorf("verdict %v %q", v.Action, v.Reason)
		}
		if got, _ := saField(v, "X-Spam-Status"); got != tc.status {
			t.Errorf("X-Spam-Status %q, want %q", got, tc.status)
		}
		if got, _ := saField(v, "X-Spam-Level"); got != tc.level {
			t.Errorf("X-Spam-Level %q, want %q", got, tc.level)
		}
		for _, e := range v.Edits {
			if e.Op == filter.PrefixSubject || (e.Op == filter.AddField && e.Name == "X-Spam-Flag") {
				t.Errorf("ham got edit %+v", e)
			}
		}
		// Forged fields are removed from ham too.
		if n := slices.IndexFunc(v.Edits, func(e filter.Edit) bool { return e.Op == filter.RemoveField && e.Name == "X-Spam-Flag" }); n < 0 {
			t.Errorf("X-Spam-Flag from the sender not removed")
		}
	}
}

// TestSpamAssassinSymbolInjection: whatever spamd sends as rule names,
// no CR or LF reaches a header field value.
func TestSpamAssassinSymbolInjection(t *testing.T) {
	body := "GTUBE,EVIL\r\nX-Injected: yes,NO_RELAYS,\r\n\r\nBcc: x@example.com,BAD NAME,OK_2\x00,TVD_SPACE_RATIO\r\n"
	reply := "SPAMD/1.1 0 EX_OK\r\nContent-length: " + strconv.Itoa(len(body)) + "\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n" + body
	f, _ := saReplyingFake(t, "tcp", reply)
	sa := newSA(t, &Filter{Address: f.addr})
	v, err := sa.Judge(context.Background(), saMessage(saTestMessage))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.Edits {
		if strings.ContainsAny(e.Value, "\r\n\x00") || strings.Contains(e.Value, "Injected") || strings.Contains(e.Value, "Bcc") {
			t.Fatalf("edit %+v carries spamd's injected text", e)
		}
	}
	if got, _ := saField(v, "X-Spam-Status"); got != "Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RELAYS,TVD_SPACE_RATIO version=pop3proxy" {
		t.Fatalf("X-Spam-Status %q", got)
	}
}

func TestSpamAssassinOversizeSkipped(t *testing.T) {
	// A listener that fails the test if the plugin connects.
	f := startSAFake(t, "tcp", func(c net.Conn) { t.Errorf("spamd contacted for a message over max_size") })
	sa := newSA(t, &Filter{Address: f.addr, MaxSize: 100, SubjectPrefix: "[SPAM]"})
	msg := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("x"), 100-16+1)...)
	if len(msg) != 101 {
		t.Fatalf("test message is %d bytes", len(msg))
	}
	v, err := sa.Judge(context.Background(), saMessage(msg))
	if err != nil {
		t.Fatalf("oversize message: %v (a skip is not an error)", err)
	}
	want := []filter.Edit{
		filter.Remove("X-Spam-Flag"),
		filter.Remove("X-Spam-Status"),
		filter.Remove("X-Spam-Level"),
		filter.Add("X-Spam-Status", "skipped (message larger than 100 bytes)"),
	}
	if v.Action != filter.Continue || v.Reason != "" || !slices.Equal(v.Edits, want) {
		t.Fatalf("verdict %v %q %+v", v.Action, v.Reason, v.Edits)
	}
	select {
	case <-f.hits:
		t.Fatal("spamd was contacted for a message over max_size")
	case <-time.After(100 * time.Millisecond):
	}

	// At exactly max_size the message is checked.
	f2, reqs := saReplyingFake(t, "tcp", saHamReply)
	sa2 := newSA(t, &Filter{Address: f2.addr, MaxSize: 101})
	if _, err := sa2.Judge(context.Background(), saMessage(msg)); err != nil {
		t.Fatal(err)
	}
	if req := <-reqs; !bytes.HasSuffix(req.Raw, msg) {
		t.Fatal("message of exactly max_size not sent")
	}
}

// TestSpamAssassinHangingSpamd: a spamd that reads the request and never
// answers costs the filter its timeout, no more.
func TestSpamAssassinHangingSpamd(t *testing.T) {
	// hangingFake reads the request and never answers, until the test
	// ends (its cleanup runs before the fake's, which waits for it).
	hangingFake := func(t *testing.T, network string) *saFake {
		release := make(chan struct{})
		f := startSAFake(t, network, func(c net.Conn) {
			readSARequest(c)
			<-release
		})
		t.Cleanup(func() { close(release) })
		return f
	}
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			f := hangingFake(t, network)
			sa := newSA(t, &Filter{Address: f.addr})
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := sa.Judge(ctx, saMessage(saTestMessage))
			took := time.Since(start)
			if err == nil {
				t.Fatal("no error from a spamd that never answers")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
			}
			if took < 150*time.Millisecond || took > time.Second {
				t.Errorf("returned after %v, want about 200ms", took)
			}
		})
	}
	// Cancelled without a deadline: only the AfterFunc close can stop the
	// read (the fallback deadline is 30 s away).
	t.Run("cancel", func(t *testing.T) {
		f := hangingFake(t, "tcp")
		sa := newSA(t, &Filter{Address: f.addr})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(150*time.Millisecond, cancel)
		start := time.Now()
		_, err := sa.Judge(ctx, saMessage(saTestMessage))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v does not wrap context.Canceled", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("returned %v after the cancellation", took)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		f := hangingFake(t, "tcp")
		sa := newSA(t, &Filter{Address: f.addr})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := sa.Judge(ctx, saMessage(saTestMessage)); !errors.Is(err, context.Canceled) {
			t.Errorf("error %v", err)
		}
		select {
		case <-f.hits:
			t.Error("connected although the context was cancelled")
		default:
		}
	})
}

// TestSpamAssassinTransportErrors: replies that end early or never start
// are errors, as is a spamd that is not there.
func TestSpamAssassinTransportErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		handle func(c net.Conn)
		want   string
	}{
		{"close without reply", func(c net.Conn) { readSARequest(c) }, "without a reply"},
		{"close before reading", func(c net.Conn) {}, ""},
		{"cut in body", func(c net.Conn) {
			readSARequest(c)
			io.WriteString(c, saGTUBEReply[:len(saGTUBEReply)-10])
		}, "cut short in the body"},
		{"cut in headers", func(c net.Conn) {
			readSARequest(c)
			io.WriteString(c, "SPAMD/1.1 0 EX_OK\r\nContent-length: 55\r\nSpam: True ; 1000.0 / 5.0\r\n")
		}, "cut short in the headers"},
		{"spamd error", func(c net.Conn) {
			readSARequest(c)
			io.WriteString(c, "SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 10 bytes, got 9 bytes)\r\n")
		}, "76 (EX_PROTOCOL)"},
		{"spamd error before the request is read", func(c net.Conn) {
			// Answers at once and closes: the client's write may fail,
			// and the reply must still be reported.
			io.WriteString(c, "SPAMD/1.0 69 Service Unavailable: busy\r\n")
		}, "69 (EX_UNAVAILABLE)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startSAFake(t, "tcp", tc.handle)
			sa := newSA(t, &Filter{Address: f.addr})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := sa.Judge(ctx, saMessage(saTestMessage))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatalf("took the whole timeout: %v", err)
			}
		})
	}

	t.Run("large request, early error reply", func(t *testing.T) {
		// spamd rejects the head and closes while a 400 KB body is still
		// being written: the write fails, the reply is what is reported.
		f := startSAFake(t, "tcp", func(c net.Conn) {
			br := bufio.NewReader(c)
			br.ReadString('\n')
			io.WriteString(c, "SPAMD/1.0 76 Bad header line: nope\r\n")
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // reset, so the client's write fails
			}
		})
		sa := newSA(t, &Filter{Address: f.addr})
		big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef\r\n"), 400<<10/18)...)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := sa.Judge(ctx, saMessage(big))
		if err == nil || !strings.Contains(err.Error(), "76 (EX_PROTOCOL)") {
			t.Fatalf("error %v, want spamd's reply", err)
		}
	})

	t.Run("nobody listening", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		sa := newSA(t, &Filter{Address: "tcp://" + addr})
		if _, err := sa.Judge(context.Background(), saMessage(saTestMessage)); err == nil || !strings.Contains(err.Error(), "connect") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestReadSpamdReply is the reply parser's table: every reply that is not
// a well-formed EX_OK SYMBOLS reply is an error, never a verdict.
func TestReadSpamdReply(t *testing.T) {
	big := strings.Repeat("A", spamdMaxReply)
	for _, tc := range []struct {
		name    string
		reply   string
		spam    bool
		score   float64
		thresh  float64
		symbols []string
		err     string // substring of the error; "" = no error
	}{
		{name: "True", reply: saGTUBEReply, spam: true, score: 1000, thresh: 5,
			symbols: []string{"GTUBE", "MSGID_SHORT", "NO_RECEIVED", "NO_RELAYS", "TVD_SPACE_RATIO"}},
		{name: "False -0.0", reply: saHamReply, score: math.Copysign(0, -1), thresh: 5},
		{name: "Yes", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: Yes ; 7.2 / 5.0\r\n\r\nGTUBE", spam: true, score: 7.2, thresh: 5, symbols: []string{"GTUBE"}},
		{name: "No", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: No ; 1.0 / 5.0\r\n\r\n", score: 1, thresh: 5},
		{name: "lower case", reply: "SPAMD/1.1 0 EX_OK\r\ncontent-LENGTH: 5\r\nspam: true;12.5/6.5\r\n\r\nGTUBE", spam: true, score: 12.5, thresh: 6.5, symbols: []string{"GTUBE"}},
		{name: "negative score", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 16\r\nSpam: False ; -2.3 / 5.0\r\n\r\nDKIM_VALID,SPF_P", score: -2.3, thresh: 5, symbols: []string{"DKIM_VALID", "SPF_P"}},
		{name: "bare LF", reply: "SPAMD/1.1 0 EX_OK\nContent-length: 5\nSpam: True ; 1000.0 / 5.0\n\nGTUBE", spam: true, score: 1000, thresh: 5, symbols: []string{"GTUBE"}},
		{name: "no Content-length", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,NO_RELAYS\r\n", spam: true, score: 1000, thresh: 5, symbols: []string{"GTUBE", "NO_RELAYS"}},
		{name: "other version", reply: "SPAMD/1.5 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE", spam: true, score: 1000, thresh: 5, symbols: []string{"GTUBE"}},
		{name: "empty symbols", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 3\r\nSpam: False ; 0.0 / 5.0\r\n\r\n , ", thresh: 5},

		{name: "missing Spam header", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\n\r\nGTUBE", err: "no Spam header"},
		{name: "bad flag", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1.0 / 5.0\r\n\r\n", err: "flag"},
		{name: "no semicolon", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: True 1.0 / 5.0\r\n\r\n", err: "';'"},
		{name: "no slash", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 5.0\r\n\r\n", err: "'/'"},
		{name: "comma decimal", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000,0 / 5,0\r\n\r\n", err: "score"},
		{name: "NaN", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5.0\r\n\r\n", err: "finite"},
		{name: "Inf threshold", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / +Inf\r\n\r\n", err: "finite"},
		{name: "spamd error 76", reply: "SPAMD/1.0 76 Bad header line: (header not in 'Name: value' format)\r\n", err: "spamd answered 76 (EX_PROTOCOL): \"Bad header line"},
		{name: "spamd error 69", reply: "SPAMD/1.0 69 Service Unavailable: TELL commands are not enabled\r\n", err: "69 (EX_UNAVAILABLE)"},
		{name: "version only", reply: "SPAMD/1.0\r\n", err: "malformed spamd status line"},
		{name: "no code", reply: "SPAMD/1.1 EX_OK\r\n\r\n", err: "malformed spamd status line"},
		{name: "bad version", reply: "SPAMD/x 0 EX_OK\r\n\r\n", err: "malformed spamd status line"},
		{name: "garbage", reply: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", err: "malformed spamd status line"},
		{name: "binary garbage", reply: "\x00\x01\x02\r\n", err: "malformed spamd status line"},
		{name: "empty", reply: "", err: "without a reply"},
		{name: "cut in status line", reply: "SPAMD/1.1 0 EX", err: "cut short"},
		{name: "cut in headers", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 10", err: "cut short"},
		{name: "no blank line", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 10.0 / 5.0\r\n", err: "cut short in the headers"},
		{name: "cut in body", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 55\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,MSG", err: "cut short in the body"},
		{name: "header without colon", reply: "SPAMD/1.1 0 EX_OK\r\nSpam True\r\n\r\n", err: "malformed spamd reply header"},
		{name: "duplicate Spam", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n", err: "repeats"},
		{name: "bad Content-length", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: True ; 1.0 / 5.0\r\n\r\n", err: "Content-length"},
		{name: "huge Content-length", reply: "SPAMD/1.1 0 EX_OK\r\nContent-length: 9999999\r\nSpam: True ; 1.0 / 5.0\r\n\r\n", err: "larger than"},
		{name: "huge body", reply: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\n" + big, err: "larger than"},
		{name: "huge header", reply: "SPAMD/1.1 0 EX_OK\r\nX: " + big + "\r\n\r\n", err: "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := readSpamdReply(strings.NewReader(tc.reply))
			var res spamdResult
			if err == nil {
				res, err = parseSpamdSymbols(rep)
			}
			if tc.err != "" {
				if err == nil {
					t.Fatalf("no error; got %+v", res)
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %q does not mention %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Spam != tc.spam || res.Score != tc.score || math.Signbit(res.Score) != math.Signbit(tc.score) || res.Threshold != tc.thresh {
				t.Fatalf("got spam=%v score=%v threshold=%v, want %v %v %v", res.Spam, res.Score, res.Threshold, tc.spam, tc.score, tc.thresh)
			}
			if !slices.Equal(res.Symbols, tc.symbols) {
				t.Fatalf("symbols %q, want %q", res.Symbols, tc.symbols)
			}
		})
	}
}

// TestReadSpamdReplyExactCap: a reply of exactly the cap is read; one byte
// more is refused; the reader does not wait for EOF after a complete reply.
func TestReadSpamdReplyExactCap(t *testing.T) {
	head := "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\n"
	body := strings.Repeat("A", spamdMaxReply-len(head))
	if _, err := readSpamdReply(strings.NewReader(head + body)); err != nil {
		t.Fatalf("reply of exactly %d bytes: %v", spamdMaxReply, err)
	}
	if _, err := readSpamdReply(strings.NewReader(head + body + "A")); !errors.Is(err, errSpamdReplyTooLarge) {
		t.Fatalf("reply of %d bytes: %v", spamdMaxReply+1, err)
	}
	// With Content-length the reply ends at the body, although the
	// connection stays open.
	pr, pw := io.Pipe()
	defer pw.Close()
	go io.WriteString(pw, saGTUBEReply)
	done := make(chan error, 1)
	go func() {
		_, err := readSpamdReply(pr)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("reader waited for EOF after a complete reply")
	}
}
