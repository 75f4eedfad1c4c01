package filter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// testJudge is a judge configured from YAML, with knobs for every outcome.
type testJudge struct {
	Action string            `yaml:"action"` // continue | accept | replace | reject
	Add    map[string]string `yaml:"add"`
	Remove []string          `yaml:"remove"`
	Prefix string            `yaml:"prefix"`
	Fail   bool              `yaml:"fail"`
	Panic  bool              `yaml:"panic"`
	Hang   bool              `yaml:"hang"` // ignores its context
	Meet   string            `yaml:"meet"` // waits until the judge with this name has started
	Reason string            `yaml:"reason"`
	// TooLarge fails as a scanner that refuses the message's size.
	TooLarge bool `yaml:"too_large"`
	// ReadLate ignores its context and reads the message once
	// lateRelease is closed, reporting the read's error to lateRead.
	ReadLate bool `yaml:"read_late"`
	env      filter.Env
}

// rendezvous lets the "meet" judges of one test see each other start.
var (
	rendezvousMu sync.Mutex
	rendezvous   = map[string]chan struct{}{}
)

func startedChan(name string) chan struct{} {
	rendezvousMu.Lock()
	defer rendezvousMu.Unlock()
	if rendezvous[name] == nil {
		rendezvous[name] = make(chan struct{})
	}
	return rendezvous[name]
}

func (j *testJudge) Provision(env filter.Env) error {
	if j.Action == "bogus" {
		return errors.New("bogus action")
	}
	j.env = env
	return nil
}

func (j *testJudge) Judge(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	switch {
	case j.Panic:
		panic("test judge panics")
	case j.TooLarge:
		return filter.Verdict{}, fmt.Errorf("INSTREAM size limit exceeded: %w", filter.ErrTooLarge)
	case j.ReadLate:
		<-lateRelease
		b, err := m.Bytes()
		lateRead <- lateResult{b, err}
	case j.Fail && j.Reason == "fail closed":
		return filter.Verdict{}, fmt.Errorf("virus found, quarantine failed: %w", filter.ErrFailClosed)
	case j.Fail:
		return filter.Verdict{}, errors.New("scanner unreachable at 10.0.0.1:3310")
	case j.Hang:
		time.Sleep(5 * time.Second)
	case j.Meet != "":
		close(startedChan(j.env.Name))
		select {
		case <-startedChan(j.Meet):
		case <-ctx.Done():
			return filter.Verdict{}, ctx.Err()
		}
	}
	v := filter.Verdict{Reason: j.Reason}
	for _, name := range j.Remove {
		v.Edits = append(v.Edits, filter.Remove(name))
	}
	for name, value := range j.Add {
		v.Edits = append(v.Edits, filter.Add(name, value))
	}
	if j.Prefix != "" {
		v.Edits = append(v.Edits, filter.SubjectPrefix(j.Prefix))
	}
	switch j.Action {
	case "accept":
		v.Action = filter.Accept
	case "replace":
		v.Action, v.Replacement = filter.Replace, []byte("Subject: replaced\r\n\r\nnotice\r\n")
	case "reject":
		v.Action = filter.Reject
	}
	return v, nil
}

// testModifier appends a line to the body, or fails.
type testModifier struct {
	Append   string `yaml:"append"`
	Fail     bool   `yaml:"fail"`
	TooLarge bool   `yaml:"too_large"`
	// Same writes the message unchanged and says so.
	Same bool `yaml:"same"`
	// HangWrite ignores its context, writes once the call has been
	// abandoned, and reports the write's error to hangWrote.
	HangWrite bool `yaml:"hang_write"`
}

func (t *testModifier) Modify(ctx context.Context, m *filter.Message, out io.Writer) (bool, error) {
	switch {
	case t.Fail:
		return false, errors.New("exit status 3")
	case t.TooLarge:
		return false, fmt.Errorf("program refuses %d octets: %w", m.Size(), filter.ErrTooLarge)
	case t.HangWrite:
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // the chain has moved on
		_, err := io.WriteString(out, "late")
		hangWrote <- err
		return true, nil
	}
	if _, err := m.WriteTo(out); err != nil {
		return false, err
	}
	if t.Same {
		return false, nil
	}
	_, err := io.WriteString(out, t.Append+"\r\n")
	return true, err
}

var (
	lateRelease = make(chan struct{})
	lateRead    = make(chan lateResult, 1)
	hangWrote   = make(chan error, 1)
)

type lateResult struct {
	b   []byte
	err error
}

// testBlock is a judge that hangs, ignoring its context, until its gate
// is opened: a scanner daemon that has stopped answering.
type testBlock struct{ env filter.Env }

type gate struct {
	entered chan struct{} // a value for each call that started
	open    chan struct{} // closed to let every call return
	calls   atomic.Int32
}

var (
	gatesMu sync.Mutex
	gates   = map[string]*gate{}
)

// newGate makes the gate of the testblock filter called name.
func newGate(name string) *gate {
	gatesMu.Lock()
	defer gatesMu.Unlock()
	g := &gate{entered: make(chan struct{}, 16), open: make(chan struct{})}
	gates[name] = g
	return g
}

func (b *testBlock) Provision(env filter.Env) error { b.env = env; return nil }

func (b *testBlock) Judge(context.Context, *filter.Message) (filter.Verdict, error) {
	gatesMu.Lock()
	g := gates[b.env.Name]
	gatesMu.Unlock()
	g.calls.Add(1)
	g.entered <- struct{}{}
	<-g.open
	return filter.Verdict{}, nil
}

// testLimit is a judge whose scanner takes messages up to max_stream.
type testLimit struct {
	MaxStreamSize yamlconf.ByteSize `yaml:"max_stream"`
}

func (l *testLimit) Judge(context.Context, *filter.Message) (filter.Verdict, error) {
	return filter.Verdict{}, nil
}

func (l *testLimit) MaxStream() (int64, string) { return int64(l.MaxStreamSize), "max_stream" }

type notAFilter struct{}

func init() {
	filter.Register(filter.PluginInfo{Type: "testjudge", New: func() filter.Plugin { return new(testJudge) }})
	filter.Register(filter.PluginInfo{Type: "testmod", New: func() filter.Plugin { return new(testModifier) }})
	filter.Register(filter.PluginInfo{Type: "nothing", New: func() filter.Plugin { return new(notAFilter) }})
	filter.Register(filter.PluginInfo{Type: "testblock", New: func() filter.Plugin { return new(testBlock) }})
	filter.Register(filter.PluginInfo{Type: "testlimit", New: func() filter.Plugin { return new(testLimit) }})
}

func build(t *testing.T, doc string) *filter.Chain {
	t.Helper()
	ch, err := buildErr(t, doc)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { ch.Close() })
	return ch
}

func buildErr(t *testing.T, doc string) (*filter.Chain, error) {
	t.Helper()
	return filter.BuildYAML([]byte(doc), zaptest.NewLogger(t))
}

const original = "Received: from a by b\r\nSubject: Hello\r\n\tworld\r\nFrom: x@example.com\r\nX-Spam-Flag: YES\r\n\r\n.body line\r\n\xe4 8-bit\r\n"

var meta = filter.Meta{User: "alice", Number: 1}

// run returns the closed Result and the delivered bytes.
func run(t *testing.T, ch *filter.Chain, msg string) (*filter.Result, []byte) {
	t.Helper()
	return filtertest.Run(t, ch, []byte(msg), meta)
}

func TestBuildReportsEveryProblem(t *testing.T) {
	_, err := buildErr(t, `
- type: testjudge
  colour: blue
- type: nosuch
- address: x
- type: testjudge
  on_error: sometimes
  timeout: soon
- type: testjudge
  name: dup
- type: testjudge
  name: dup
- type: nothing
- type: testjudge
  action: bogus
`)
	if err == nil {
		t.Fatal("Build accepted a broken chain")
	}
	for _, want := range []string{
		"filters[0].colour: unknown key", `filters[1].type: unknown filter type "nosuch"`, "filters[2]: missing type",
		"filters[3].on_error", "filters[3].timeout", `filters[5].name: name "dup" is used`,
		"filters[6]: plugin type \"nothing\" implements neither", "filters[7]: testjudge: bogus action",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestEditsAreByteFaithful: untouched fields and the body keep their bytes;
// edits apply in order.
func TestEditsAreByteFaithful(t *testing.T) {
	ch := build(t, `
- type: testjudge
  remove: [X-Spam-Flag]
  add: {X-Spam-Status: "No, score=0.1"}
  prefix: "[SPAM] "
`)
	res, got := run(t, ch, original)
	want := "X-Spam-Status: No, score=0.1\r\nReceived: from a by b\r\nSubject: [SPAM] Hello\r\n\tworld\r\nFrom: x@example.com\r\n\r\n.body line\r\n\xe4 8-bit\r\n"
	if res.Outcome != filter.Deliver || string(got) != want || !res.Changed {
		t.Fatalf("Run = %v %q, want deliver %q", res.Outcome, got, want)
	}
}

func TestUnchangedMessageIsTheOriginal(t *testing.T) {
	ch := build(t, "- type: testjudge\n")
	m := filter.NewMessage([]byte(original), meta)
	res := ch.Run(context.Background(), m)
	defer res.Close()
	if res.Outcome != filter.Deliver || res.Changed || res.Message != m {
		t.Fatalf("Run = %+v, want the original message unchanged", res)
	}
}

func TestVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		outcome   filter.Outcome
		contains  string
		lacks     string
	}{
		{"reject stops", "- {type: testjudge, action: reject, reason: bad}\n- {type: testjudge, add: {X-Late: yes}}\n", filter.Refuse, "", ""},
		{"replace delivers the replacement", "- {type: testjudge, action: replace}\n- {type: testjudge, add: {X-Late: yes}}\n", filter.Deliver, "notice", "X-Late"},
		{"accept skips later verdicts", "- {type: testjudge, action: accept, add: {X-Ok: yes}}\n- {type: testjudge, action: reject}\n", filter.Deliver, "X-Ok: yes", ""},
		{"first in the file decides", "- {type: testjudge, action: reject}\n- {type: testjudge, action: replace}\n", filter.Refuse, "", ""},
		{"fail tempfails by default", "- {type: testjudge, fail: true}\n", filter.TempFail, "", ""},
		{"fail with on_error reject", "- {type: testjudge, fail: true, on_error: reject}\n", filter.Refuse, "", ""},
		{"fail with on_error pass marks", "- {type: testjudge, fail: true, on_error: pass, name: av}\n", filter.Deliver, "X-Pop3proxy-Unscanned: av failed", "10.0.0.1"},
		{"fail closed ignores on_error pass", "- {type: testjudge, fail: true, on_error: pass, reason: fail closed}\n", filter.TempFail, "", ""},
		{"panic is a failure", "- {type: testjudge, panic: true, on_error: pass}\n", filter.Deliver, "X-Pop3proxy-Unscanned: testjudge failed", ""},
		{"modifier sees earlier edits", "- {type: testjudge, add: {X-First: one}}\n- {type: testmod, append: appended}\n", filter.Deliver, "X-First: one", ""},
		{"failed modifier with pass", "- {type: testmod, fail: true, on_error: pass}\n", filter.Deliver, "X-Pop3proxy-Unscanned: testmod failed", ""},
		{"failed modifier tempfails", "- {type: testmod, fail: true}\n", filter.TempFail, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, got := run(t, build(t, tc.doc), original)
			if res.Outcome != tc.outcome {
				t.Fatalf("outcome %v, want %v (%+v)", res.Outcome, tc.outcome, res)
			}
			if tc.contains != "" && !bytes.Contains(got, []byte(tc.contains)) {
				t.Errorf("message lacks %q:\n%s", tc.contains, got)
			}
			if tc.lacks != "" && bytes.Contains(got, []byte(tc.lacks)) {
				t.Errorf("message contains %q:\n%s", tc.lacks, got)
			}
		})
	}
}

// TestHungFilterCostsItsTimeout: a judge that ignores its context costs the
// session its timeout, no more.
func TestHungFilterCostsItsTimeout(t *testing.T) {
	ch := build(t, "- {type: testjudge, hang: true, timeout: 100ms, on_error: pass, name: slow}\n")
	start := time.Now()
	_, got := run(t, ch, original)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Run took %v with a 100ms timeout", d)
	}
	if !bytes.Contains(got, []byte("X-Pop3proxy-Unscanned: slow timed out")) {
		t.Fatalf("message not marked as timed out:\n%s", got)
	}
}

// TestJudgesRunConcurrently: each judge waits for the other to start, so run
// one after the other they would both time out.
func TestJudgesRunConcurrently(t *testing.T) {
	rendezvousMu.Lock()
	delete(rendezvous, "left")
	delete(rendezvous, "right")
	rendezvousMu.Unlock()
	ch := build(t, `
- {type: testjudge, name: left, meet: right, timeout: 5s, add: {X-Left: "1"}}
- {type: testjudge, name: right, meet: left, timeout: 5s, add: {X-Right: "2"}}
`)
	res, got := run(t, ch, original)
	if res.Outcome != filter.Deliver || !bytes.HasPrefix(got, []byte("X-Left: 1\r\nX-Right: 2\r\n")) {
		t.Fatalf("Run = %v\n%s", res.Outcome, got)
	}
}

func TestBuildYAMLRejectsNonList(t *testing.T) {
	for _, doc := range []string{"type: clamav\n", "- [unclosed\n"} {
		if _, err := filter.BuildYAML([]byte(doc), nil); err == nil || !strings.Contains(err.Error(), "filters:") {
			t.Errorf("BuildYAML(%q) = %v, want a filters: error", doc, err)
		}
	}
}

// TestBuildRefusesUnsafeNames: a name goes into the UnscannedField value and
// the logs; CR, LF or NUL would make that field impossible to add, so that
// on_error: pass could not mark the message.
func TestBuildRefusesUnsafeNames(t *testing.T) {
	for _, name := range []string{`"av\r\nBcc: victim@example.com"`, `"av\n"`, `"av\u0000"`, `"my av"`, `"vírus"`, `"av:1"`, `"av/1"`, strings.Repeat("n", 65)} {
		_, err := buildErr(t, "- {type: testjudge, name: "+name+"}\n")
		var fe *yamlconf.FieldError
		if err == nil || !errors.As(err, &fe) || fe.Path != "filters[0].name" {
			t.Errorf("name %s: Build error %v, want a FieldError at filters[0].name", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "letters, digits") {
			t.Errorf("name %s: error %q does not say which characters are allowed", name, err)
		}
	}
	ch := build(t, "- {type: testjudge, name: clam-AV_2.local, fail: true, on_error: pass}\n")
	if res, got := run(t, ch, original); !bytes.HasPrefix(got, []byte("X-Pop3proxy-Unscanned: clam-AV_2.local failed\r\n")) {
		t.Errorf("a valid name: %v\n%s", res.Outcome, got)
	}
}

// TestInvalidEditBlamesItsFilter: of two judges run together, the one whose
// edit is invalid is named in the result, not the first of the run.
func TestInvalidEditBlamesItsFilter(t *testing.T) {
	ch := build(t, `
- {type: testjudge, name: good, add: {X-Good: "1"}}
- {type: testjudge, name: bad, add: {"Bad:Name": "1"}}
- {type: testjudge, name: late, add: {X-Late: "1"}}
`)
	res, _ := run(t, ch, original)
	if res.Outcome != filter.TempFail || res.Filter != "bad" {
		t.Fatalf("Run = %v by %q, want tempfail by bad", res.Outcome, res.Filter)
	}
}

func newSpool(t *testing.T, memory int64) *spool.Spool {
	t.Helper()
	sp, err := spool.New(spool.Options{Memory: memory, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// TestMaxConcurrent: with max_concurrent 2 and two calls hung, a third
// message waits for a turn and, when the timeout passes first, fails by
// on_error without being scanned. A hung call keeps its turn after it
// was abandoned, until it really returns.
func TestMaxConcurrent(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, tc := range []struct {
		name, onError string
		outcome       filter.Outcome
		mark          string
	}{
		{"busy", "", filter.TempFail, ""},
		{"busy-pass", "pass", filter.Deliver, "X-Pop3proxy-Unscanned: busy-pass timed out\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate(tc.name)
			t.Cleanup(func() {
				select {
				case <-g.open:
				default:
					close(g.open)
				}
			})
			ch := build(t, fmt.Sprintf("- {type: testblock, name: %s, max_concurrent: 2, timeout: %v, on_error: %q}\n", tc.name, timeout, tc.onError))

			hung := make(chan *filter.Result, 2)
			for range 2 {
				go func() { hung <- ch.Run(context.Background(), filter.NewMessage([]byte(original), meta)) }()
			}
			for range 2 {
				select {
				case <-g.entered:
				case <-time.After(5 * time.Second):
					t.Fatal("the first two calls did not start")
				}
			}
			waitsAndFails := func(when string) {
				t.Helper()
				start := time.Now()
				res, got := run(t, ch, original)
				took := time.Since(start)
				if res.Outcome != tc.outcome || !strings.HasPrefix(string(got), tc.mark) || res.Outcome == filter.Deliver && len(got) != len(tc.mark)+len(original) {
					t.Fatalf("%s: Run = %v %q, want %v marked %q", when, res.Outcome, got, tc.outcome, tc.mark)
				}
				if res.Outcome == filter.TempFail && res.Filter != tc.name {
					t.Errorf("%s: failure blamed on %q", when, res.Filter)
				}
				if took < timeout || took > 3*time.Second {
					t.Errorf("%s: Run took %v, want the timeout (%v) spent waiting", when, took, timeout)
				}
				if n := g.calls.Load(); n != 2 {
					t.Fatalf("%s: %d calls started, want 2 (max_concurrent)", when, n)
				}
			}
			waitsAndFails("while two calls run")
			for range 2 {
				select {
				case res := <-hung:
					res.Close()
					if res.Outcome != tc.outcome {
						t.Errorf("hung call: outcome %v, want %v", res.Outcome, tc.outcome)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a hung call was not abandoned at its timeout")
				}
			}
			waitsAndFails("after the hung calls were abandoned")

			close(g.open)
			res, got := run(t, ch, original)
			if res.Outcome != filter.Deliver || string(got) != original {
				t.Fatalf("after the hung calls returned: Run = %v %q, want the message delivered", res.Outcome, got)
			}
			if n := g.calls.Load(); n != 3 {
				t.Errorf("%d calls, want 3", n)
			}
		})
	}
}

func TestMaxConcurrentKey(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"- {type: testjudge, max_concurrent: -1}\n", "must not be negative"},
		{"- {type: testjudge, max_concurrent: lots}\n", ""},
	} {
		_, err := buildErr(t, tc.doc)
		var fe *yamlconf.FieldError
		if err == nil || !errors.As(err, &fe) || fe.Path != "filters[0].max_concurrent" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Build(%q) = %v, want a FieldError at filters[0].max_concurrent saying %q", tc.doc, err, tc.want)
		}
	}
	build(t, "- {type: testjudge, max_concurrent: 0}\n")
}

// TestTooLargeFollowsOversize: a plugin's error wrapping ErrTooLarge is
// settled by the chain's oversize policy, never by on_error, which each
// case sets to do something else.
func TestTooLargeFollowsOversize(t *testing.T) {
	tagged := fmt.Sprintf("X-Pop3proxy-Unscanned: av: too large (%d octets)\r\n", len(original)) + original
	for _, typ := range []string{"testjudge", "testmod"} {
		for _, tc := range []struct {
			name     string
			oversize *filter.Oversize
			onError  string
			outcome  filter.Outcome
			want     string
		}{
			{"default is tag", nil, "reject", filter.Deliver, tagged},
			{"tag", new(filter.OversizeTag), "reject", filter.Deliver, tagged},
			{"pass", new(filter.OversizePass), "reject", filter.Deliver, original},
			{"reject", new(filter.OversizeReject), "pass", filter.Refuse, ""},
		} {
			t.Run(typ+"/"+tc.name, func(t *testing.T) {
				ch := build(t, fmt.Sprintf("- {type: %s, name: av, too_large: true, on_error: %s}\n", typ, tc.onError))
				if tc.oversize != nil {
					ch.SetOversize(*tc.oversize)
				}
				res, got := run(t, ch, original)
				if res.Outcome != tc.outcome || string(got) != tc.want {
					t.Fatalf("Run = %v %q, want %v %q", res.Outcome, got, tc.outcome, tc.want)
				}
				switch {
				case res.Outcome == filter.Refuse && (res.Filter != "av" || res.Reason != "message too large to be checked"):
					t.Errorf("refused by %q for %q", res.Filter, res.Reason)
				case res.Outcome == filter.Deliver && res.Changed != (tc.want != original):
					t.Errorf("Changed = %v", res.Changed)
				}
			})
		}
	}
}

// TestCheckMaxSize: a filter whose scanner takes less than max_size is
// reported under its own key.
func TestCheckMaxSize(t *testing.T) {
	ch := build(t, "- {type: testjudge}\n- {type: testlimit, max_stream: 1000}\n- {type: testlimit, max_stream: 1MiB}\n")
	if errs := ch.CheckMaxSize(1000); len(errs) != 0 {
		t.Errorf("CheckMaxSize(1000) = %v, want none: the limit is max_size", errs)
	}
	errs := ch.CheckMaxSize(1001)
	var fe *yamlconf.FieldError
	if len(errs) != 1 || !errors.As(errs[0], &fe) || fe.Path != "filters[1].max_stream" ||
		!strings.Contains(fe.Msg, "1000 octets is less than max_size (1001 octets)") {
		t.Fatalf("CheckMaxSize(1001) = %v, want one error at filters[1].max_stream", errs)
	}
	if errs := ch.CheckMaxSize(2 << 20); len(errs) != 2 {
		t.Errorf("CheckMaxSize(2MiB) = %v, want both limited filters", errs)
	}
}

// TestCloseReleasesSpool: header rewrites and modifier output are kept in
// the chain's spool, in memory or in files, until the Result is closed,
// whatever the outcome; a modifier's unused output is given back at once.
func TestCloseReleasesSpool(t *testing.T) {
	const rewrite = "- {type: testjudge, remove: [X-Spam-Flag]}\n- {type: testmod, append: appended}\n"
	for _, tc := range []struct {
		name, doc string
		outcome   filter.Outcome
		buffers   int64 // held by the Result
		written   int64 // made by the run
		want      string
	}{
		{"delivered", rewrite + "- {type: testjudge, prefix: \"[S] \"}\n", filter.Deliver, 3, 3,
			"Received: from a by b\r\nSubject: [S] Hello\r\n\tworld\r\nFrom: x@example.com\r\n\r\n.body line\r\n\xe4 8-bit\r\nappended\r\n"},
		{"refused", rewrite + "- {type: testjudge, action: reject}\n", filter.Refuse, 2, 2, ""},
		{"unchanged by a modifier", "- {type: testmod, same: true}\n", filter.Deliver, 0, 1, original},
	} {
		for _, memory := range []int64{1 << 20, 0} {
			t.Run(fmt.Sprintf("%s/memory %d", tc.name, memory), func(t *testing.T) {
				sp := newSpool(t, memory)
				ch := build(t, tc.doc)
				ch.SetSpool(sp)
				res := ch.Run(context.Background(), filter.NewMessage([]byte(original), meta))
				if res.Outcome != tc.outcome {
					t.Fatalf("outcome %v, want %v", res.Outcome, tc.outcome)
				}
				if tc.outcome == filter.Deliver {
					got, err := res.Message.Bytes()
					if err != nil || string(got) != tc.want {
						t.Fatalf("message %q, %v, want %q", got, err, tc.want)
					}
				}
				// Each buffer holds less than a chunk.
				want := spool.Stats{MemoryUsed: tc.buffers * spool.ChunkSize, MemoryBudget: memory}
				if memory == 0 {
					want.MemoryUsed, want.FilesOpen, want.Spilled = 0, tc.buffers, tc.written
				}
				if st := sp.Stats(); st != want {
					t.Errorf("before Close: %+v, want %+v", st, want)
				}
				res.Close()
				want.MemoryUsed, want.FilesOpen = 0, 0
				if st := sp.Stats(); st != want {
					t.Errorf("after Close: %+v, want %+v", st, want)
				}
				if err := res.Close(); err != nil {
					t.Errorf("second Close: %v", err)
				}
			})
		}
	}
}

// TestAbandonedModifierCannotWrite: a modifier that ignores its context
// and writes after its call was abandoned gets an error: the output it
// was given has been dropped, and may be memory that went back to the
// spool (with -race, the write must not race with that either).
func TestAbandonedModifierCannotWrite(t *testing.T) {
	for _, memory := range []int64{-2, 1 << 20} { // -2: no spool
		ch := build(t, "- {type: testmod, name: slow, hang_write: true, timeout: 50ms, on_error: pass}\n")
		var sp *spool.Spool
		if memory != -2 {
			sp = newSpool(t, memory)
			ch.SetSpool(sp)
		}
		res, got := run(t, ch, original)
		if want := "X-Pop3proxy-Unscanned: slow timed out\r\n" + original; res.Outcome != filter.Deliver || string(got) != want {
			t.Fatalf("memory %d: Run = %v %q, want %q", memory, res.Outcome, got, want)
		}
		select {
		case err := <-hangWrote:
			if err == nil {
				t.Errorf("memory %d: a write after the call was abandoned succeeded", memory)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the hung modifier did not write")
		}
		if sp != nil {
			if st := sp.Stats(); st.MemoryUsed != 0 {
				t.Errorf("memory %d: %d bytes still held", memory, st.MemoryUsed)
			}
		}
	}
}

// TestAbandonedJudgeReadsAfterClose: a judge abandoned at its timeout may
// read the message while and after the Result is closed. It gets the
// message or an error, never bytes of memory the spool has given another
// message since; with -race, its read must not race with Close.
func TestAbandonedJudgeReadsAfterClose(t *testing.T) {
	lateRelease = make(chan struct{})
	sp := newSpool(t, 1<<20)
	// The judge reads the modifier's output, which the run spooled.
	ch := build(t, "- {type: testmod, append: appended}\n- {type: testjudge, name: late, read_late: true, timeout: 50ms, on_error: pass}\n")
	ch.SetSpool(sp)
	res := ch.Run(context.Background(), filter.NewMessage([]byte(original), meta))
	if res.Outcome != filter.Deliver {
		t.Fatalf("Run = %v", res.Outcome)
	}
	// Nothing orders the late read before or after Close.
	close(lateRelease)
	res.Close()
	other := sp.NewBuffer(0)
	defer other.Close()
	other.Write(bytes.Repeat([]byte("other user's mail "), 10000))
	select {
	case r := <-lateRead:
		if r.err == nil && string(r.b) != original+"appended\r\n" || r.err != nil && !errors.Is(r.err, spool.ErrClosed) {
			t.Fatalf("late read = %q, %v; want the message or spool.ErrClosed", r.b, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the late judge did not read")
	}
}

// inlineCounter records the goroutine each call runs in.
type inlineCounter struct{}

var inlineGoroutine atomic.Int64

func (inlineCounter) Judge(context.Context, *filter.Message) (filter.Verdict, error) {
	inlineGoroutine.Store(goid())
	return filter.Verdict{}, nil
}

func goid() int64 {
	var buf [64]byte
	s := strings.TrimPrefix(string(buf[:runtime.Stack(buf[:], false)]), "goroutine ")
	n, _ := strconv.ParseInt(s[:strings.IndexByte(s, ' ')], 10, 64)
	return n
}

func init() {
	filter.Register(filter.PluginInfo{Type: "testinline", New: func() filter.Plugin { return new(inlineCounter) }, Inline: true})
}

// TestInlinePluginRunsInTheCaller checks that a plugin registered Inline
// is called in the goroutine that runs the chain: no goroutine, no timer.
func TestInlinePluginRunsInTheCaller(t *testing.T) {
	ch := filtertest.MustChain(t, "- type: testinline\n")
	res := ch.Run(context.Background(), filter.NewMessage([]byte("Subject: a\r\n\r\nb\r\n"), filter.Meta{}))
	defer res.Close()
	if res.Outcome != filter.Deliver {
		t.Fatalf("outcome %v", res.Outcome)
	}
	if got, want := inlineGoroutine.Load(), goid(); got != want {
		t.Errorf("inline plugin ran in goroutine %d, the chain's caller is %d", got, want)
	}
}
