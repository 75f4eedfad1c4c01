package filter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pop3proxy/pop3proxy/filter"
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
	env    filter.Env
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
	Append string `yaml:"append"`
	Fail   bool   `yaml:"fail"`
}

func (t *testModifier) Modify(_ context.Context, m *filter.Message) ([]byte, error) {
	if t.Fail {
		return nil, errors.New("exit status 3")
	}
	return append(append([]byte{}, m.Bytes()...), t.Append+"\r\n"...), nil
}

type notAFilter struct{}

func init() {
	filter.Register(filter.PluginInfo{Type: "testjudge", New: func() filter.Plugin { return new(testJudge) }})
	filter.Register(filter.PluginInfo{Type: "testmod", New: func() filter.Plugin { return new(testModifier) }})
	filter.Register(filter.PluginInfo{Type: "nothing", New: func() filter.Plugin { return new(notAFilter) }})
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

func run(ch *filter.Chain, msg string) filter.Result {
	return ch.Run(context.Background(), filter.NewMessage([]byte(msg), filter.Meta{User: "alice", Number: 1}))
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
	res := run(ch, original)
	want := "X-Spam-Status: No, score=0.1\r\nReceived: from a by b\r\nSubject: [SPAM] Hello\r\n\tworld\r\nFrom: x@example.com\r\n\r\n.body line\r\n\xe4 8-bit\r\n"
	if res.Outcome != filter.Deliver || string(res.Message) != want || !res.Changed {
		t.Fatalf("Run = %v %q, want deliver %q", res.Outcome, res.Message, want)
	}
}

func TestUnchangedMessageIsTheOriginal(t *testing.T) {
	ch := build(t, "- type: testjudge\n")
	res := run(ch, original)
	if res.Outcome != filter.Deliver || res.Changed || string(res.Message) != original {
		t.Fatalf("Run = %+v", res)
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
			res := run(build(t, tc.doc), original)
			if res.Outcome != tc.outcome {
				t.Fatalf("outcome %v, want %v (%+v)", res.Outcome, tc.outcome, res)
			}
			if tc.contains != "" && !bytes.Contains(res.Message, []byte(tc.contains)) {
				t.Errorf("message lacks %q:\n%s", tc.contains, res.Message)
			}
			if tc.lacks != "" && bytes.Contains(res.Message, []byte(tc.lacks)) {
				t.Errorf("message contains %q:\n%s", tc.lacks, res.Message)
			}
		})
	}
}

// TestHungFilterCostsItsTimeout: a judge that ignores its context costs the
// session its timeout, no more.
func TestHungFilterCostsItsTimeout(t *testing.T) {
	ch := build(t, "- {type: testjudge, hang: true, timeout: 100ms, on_error: pass, name: slow}\n")
	start := time.Now()
	res := run(ch, original)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Run took %v with a 100ms timeout", d)
	}
	if !bytes.Contains(res.Message, []byte("X-Pop3proxy-Unscanned: slow timed out")) {
		t.Fatalf("message not marked as timed out:\n%s", res.Message)
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
	res := run(ch, original)
	if res.Outcome != filter.Deliver || !bytes.HasPrefix(res.Message, []byte("X-Left: 1\r\nX-Right: 2\r\n")) {
		t.Fatalf("Run = %v\n%s", res.Outcome, res.Message)
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
	if res := run(ch, original); !bytes.HasPrefix(res.Message, []byte("X-Pop3proxy-Unscanned: clam-AV_2.local failed\r\n")) {
		t.Errorf("a valid name: %v\n%s", res.Outcome, res.Message)
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
	res := run(ch, original)
	if res.Outcome != filter.TempFail || res.Filter != "bad" {
		t.Fatalf("Run = %v by %q, want tempfail by bad", res.Outcome, res.Filter)
	}
}
