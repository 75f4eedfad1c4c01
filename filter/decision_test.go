package filter_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pop3proxy/pop3proxy/filter"
)

// replayCase is a chain configuration and what its run must record.
type replayCase struct {
	name    string
	chain   string
	outcome filter.Outcome
	batches int // header edit batches recorded
}

var replayCases = []replayCase{
	{"no filters", "[]", filter.Deliver, 0},
	{"untouched", "- {type: testjudge}\n", filter.Deliver, 0},
	{"edits of every kind", "- {type: testjudge, remove: [X-Spam-Flag], add: {X-A: one}, prefix: '[S] '}\n- {type: testjudge, name: j2, add: {X-B: two}}\n", filter.Deliver, 1},
	// A modifier that changes nothing splits the judges into runs: the
	// second run's fields go on top of the first's, so the batches must
	// be replayed as they were applied.
	{"batches across judge runs", "- {type: testjudge, add: {X-A: one}, prefix: '[1] '}\n- {type: testmod, same: true}\n- {type: testjudge, name: j2, add: {X-B: two}, remove: [Received], prefix: '[2] '}\n- {type: testmod, name: m2, same: true}\n- {type: testjudge, name: j3, add: {X-C: three}}\n", filter.Deliver, 3},
	{"accept stops the chain", "- {type: testjudge, action: accept, add: {X-A: one}}\n- {type: testjudge, name: j2, add: {X-B: two}}\n", filter.Deliver, 1},
	{"replace", "- {type: testjudge, add: {X-A: one}}\n- {type: testmod, same: true}\n- {type: testjudge, name: j2, action: replace, reason: virus X}\n", filter.Deliver, 0},
	{"reject", "- {type: testjudge, action: reject, reason: spam}\n", filter.Refuse, 0},
}

// TestReplayMatchesRun: for every outcome, the Decision a run records,
// encoded and decoded as a backend stores it, replays to the run's Result
// byte for byte (Outcome, Changed, Filter, Reason and the message),
// without calling a plugin.
func TestReplayMatchesRun(t *testing.T) {
	for _, tc := range replayCases {
		t.Run(tc.name, func(t *testing.T) {
			ch := build(t, tc.chain)
			ch.SetSpool(newSpool(t, 1<<20))
			res, want := run(t, ch, original)
			if res.Outcome != tc.outcome {
				t.Fatalf("run: outcome %v, want %v", res.Outcome, tc.outcome)
			}
			if res.Decision == nil {
				t.Fatal("run recorded no decision")
			}
			if res.Replayed {
				t.Error("a run says it was replayed")
			}
			if got := len(res.Decision.Edits); got != tc.batches {
				t.Errorf("recorded %d batches of edits, want %d: %+v", got, tc.batches, res.Decision.Edits)
			}
			enc, err := res.Decision.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var d filter.Decision
			if err := d.UnmarshalBinary(enc); err != nil {
				t.Fatalf("decoding %s: %v", enc, err)
			}
			// A chain with another plugin: replaying must not call it.
			other := build(t, "- {type: testjudge, fail: true}\n")
			rep := other.Replay(context.Background(), filter.NewMessage([]byte(original), meta), &d)
			defer rep.Close()
			if rep.Outcome != res.Outcome || rep.Changed != res.Changed || rep.Filter != res.Filter || rep.Reason != res.Reason || !rep.Replayed {
				t.Errorf("replay = {%v changed=%v %q %q replayed=%v}, run = {%v changed=%v %q %q}",
					rep.Outcome, rep.Changed, rep.Filter, rep.Reason, rep.Replayed, res.Outcome, res.Changed, res.Filter, res.Reason)
			}
			if rep.Outcome == filter.Deliver {
				got, err := rep.Message.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("replay delivered\n%q\nrun delivered\n%q", got, want)
				}
			}
			if rep.Decision == nil {
				t.Error("a replayed result has no decision")
			}
		})
	}
}

// TestUncacheableRuns: a run that depended on more than the message
// records no Decision.
func TestUncacheableRuns(t *testing.T) {
	for _, tc := range []struct{ name, chain string }{
		{"judge failed, on_error pass", "- {type: testjudge, fail: true, on_error: pass}\n"},
		{"judge failed, on_error tempfail", "- {type: testjudge, fail: true}\n"},
		{"judge failed, on_error reject", "- {type: testjudge, fail: true, on_error: reject}\n"},
		{"judge timed out", "- {type: testjudge, hang: true, timeout: 50ms, on_error: pass}\n"},
		{"too large, oversize tag", "- {type: testjudge, too_large: true}\n"},
		{"modifier changed the message", "- {type: testmod, append: extra}\n- {type: testjudge, add: {X-A: one}}\n"},
		{"modifier failed", "- {type: testmod, fail: true, on_error: pass}\n"},
		{"invalid edit", "- {type: testjudge, add: {'Bad Name': x}}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := run(t, build(t, tc.chain), original)
			if res.Decision != nil {
				t.Errorf("outcome %v recorded a decision: %+v", res.Outcome, res.Decision)
			}
		})
	}
	// A run cancelled by its session, the scanner still busy.
	g := newGate("blocked")
	defer close(g.open)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := build(t, "- {type: testblock, name: blocked}\n").Run(ctx, filter.NewMessage([]byte(original), meta))
	defer res.Close()
	if res.Decision != nil {
		t.Errorf("a cancelled run recorded a decision: %+v", res.Decision)
	}
}

// TestDamagedDecisions: what a run never records does not decode, and
// Replay refuses it with a TempFail rather than deliver something else.
func TestDamagedDecisions(t *testing.T) {
	for _, enc := range []string{
		`{"v":1,"outcome":1}`, // TempFail
		`{"v":1,"outcome":0,"edits":[[{"Op":0,"Name":"X-A","Value":"a\r\nBcc: x"}]]}`,
		`{"v":1,"outcome":0,"edits":[[]]}`,
		`{"v":1,"outcome":2,"replaced":true}`,
		`{"v":2,"outcome":0}`,
		`not json`,
	} {
		var d filter.Decision
		if err := d.UnmarshalBinary([]byte(enc)); err == nil {
			t.Errorf("%s decoded to %+v", enc, d)
		}
	}
	bad := &filter.Decision{Outcome: filter.Deliver, Edits: [][]filter.Edit{{filter.Add("X-A", "a\nb")}}}
	res := build(t, "[]").Replay(context.Background(), filter.NewMessage([]byte(original), meta), bad)
	defer res.Close()
	if res.Outcome != filter.TempFail {
		t.Errorf("replaying an invalid edit: %v, want tempfail", res.Outcome)
	}
}

// TestFingerprint: the fingerprint changes with the filter configuration
// (an option, a filter's name, order, type) and not with comments or
// layout.
func TestFingerprint(t *testing.T) {
	base := "- {type: testjudge, add: {X-A: one}}\n- {type: testmod, same: true}\n"
	fp := func(doc string) string { return build(t, doc).Fingerprint() }
	want := fp(base)
	if want == "" {
		t.Fatal("empty fingerprint")
	}
	if got := fp("# a comment\n- type: testjudge   # trailing\n  add:\n    X-A: one\n- {type: testmod, same: true}\n"); got != want {
		t.Errorf("comments and layout changed the fingerprint")
	}
	for _, doc := range []string{
		"- {type: testjudge, add: {X-A: two}}\n- {type: testmod, same: true}\n",
		"- {type: testjudge, name: other, add: {X-A: one}}\n- {type: testmod, same: true}\n",
		"- {type: testmod, same: true}\n- {type: testjudge, add: {X-A: one}}\n",
		"- {type: testjudge, add: {X-A: one}}\n",
		"- {type: testjudge, add: {X-A: one}, timeout: 5s}\n- {type: testmod, same: true}\n",
		"- {type: testjudge, add: {X-A: one}}\n- {type: testmod, same: true}\n- {type: testjudge, name: j2}\n",
	} {
		if got := fp(doc); got == want {
			t.Errorf("fingerprint unchanged for\n%s", doc)
		}
	}
}

// testGen is a judge with a generation, like clamav's signature version.
type testGen struct {
	Fail bool `yaml:"fail"`
}

var testGeneration atomic.Int32

func (*testGen) Judge(context.Context, *filter.Message) (filter.Verdict, error) {
	return filter.Verdict{}, nil
}

func (g *testGen) Generation(context.Context) (string, error) {
	if g.Fail {
		return "", errors.New("daemon does not answer")
	}
	return strings.Repeat("g", int(testGeneration.Load())), nil
}

func init() {
	filter.Register(filter.PluginInfo{Type: "testgen", New: func() filter.Plugin { return new(testGen) }})
}

// TestGeneration: the chain's generation follows its plugins' and fails
// when one cannot say; a chain without such plugins has "".
func TestGeneration(t *testing.T) {
	ctx := context.Background()
	if g, err := build(t, "- {type: testjudge}\n").Generation(ctx); g != "" || err != nil {
		t.Errorf("without generational plugins: %q, %v", g, err)
	}
	ch := build(t, "- {type: testjudge}\n- {type: testgen}\n")
	testGeneration.Store(1)
	g1, err := ch.Generation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testGeneration.Store(2)
	if g2, _ := ch.Generation(ctx); g2 == g1 {
		t.Errorf("generation unchanged: %q", g2)
	}
	if _, err := build(t, "- {type: testgen, fail: true}\n").Generation(ctx); err == nil {
		t.Error("a failing generation is no error")
	}
}

// TestHeaderSectionSize: the header section ends at the empty line, or
// with the message.
func TestHeaderSectionSize(t *testing.T) {
	for msg, want := range map[string]int64{
		"A: 1\r\nB: 2\r\n\r\nbody\r\n": 12,
		"A: 1\r\n\tfolded\r\n\r\n":     15,
		"A: 1\r\nno body at all\r\n":   22,
		"\r\nbody only\r\n":            0,
		"From x\nA: 1\n\nbody\n":       12,
	} {
		got, err := filter.HeaderSectionSize(filter.NewMessage([]byte(msg), meta))
		if err != nil || got != want {
			t.Errorf("HeaderSectionSize(%q) = %d, %v; want %d", msg, got, err, want)
		}
	}
}
