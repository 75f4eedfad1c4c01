package filter_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
)

// countingObserver counts each filter's results as "name action",
// "name failed", "name timeout" and "name too_large".
type countingObserver struct {
	mu      sync.Mutex
	filters []string // "name type on_error", in the order SetObserver asked
	events  map[string]int
	took    []time.Duration
}

func newCountingObserver() *countingObserver {
	return &countingObserver{events: map[string]int{}}
}

func (o *countingObserver) Filter(name, typ string, onError filter.OnError) filter.FilterObserver {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.filters = append(o.filters, name+" "+typ+" "+onError.String())
	return &countingFilter{o: o, name: name}
}

func (o *countingObserver) add(event string, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events[event]++
	o.took = append(o.took, took)
}

func (o *countingObserver) counts() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.events)
}

type countingFilter struct {
	o    *countingObserver
	name string
}

func (f *countingFilter) Verdict(a filter.Action, took time.Duration) {
	f.o.add(f.name+" "+a.String(), took)
}

func (f *countingFilter) Failed(timedOut bool, took time.Duration) {
	what := " failed"
	if timedOut {
		what = " timeout"
	}
	f.o.add(f.name+what, took)
}

func (f *countingFilter) TooLarge(took time.Duration) { f.o.add(f.name+" too_large", took) }

// Every call of a plugin reaches its filter's observer once, with the
// verdict, the failure (a timeout told apart) or the size refusal; judges
// running beside one that rejects are reported too.
func TestObserverSeesEveryCall(t *testing.T) {
	ch := filtertest.MustChain(t, `
- {type: testmod, name: rewrite, append: "added"}
- {type: testmod, name: same, same: true}
- {type: testjudge, name: clean}
- {type: testjudge, name: spam, action: reject, on_error: pass}
`)
	obs := newCountingObserver()
	ch.SetObserver(obs)
	if want := []string{"rewrite testmod tempfail", "same testmod tempfail", "clean testjudge tempfail", "spam testjudge pass"}; !slices.Equal(obs.filters, want) {
		t.Errorf("SetObserver asked for %v, want %v", obs.filters, want)
	}
	res, _ := filtertest.Run(t, ch, []byte("Subject: x\r\n\r\nbody\r\n"), filter.Meta{Number: 1})
	if res.Outcome != filter.Refuse {
		t.Fatalf("outcome %v, want refuse", res.Outcome)
	}
	want := map[string]int{"rewrite replace": 1, "same continue": 1, "clean continue": 1, "spam reject": 1}
	if got := obs.counts(); !maps.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}

	ch = filtertest.MustChain(t, `
- {type: testjudge, name: down, fail: true, on_error: pass}
- {type: testjudge, name: slow, hang: true, timeout: 50ms, on_error: pass}
- {type: testjudge, name: big, too_large: true}
`)
	obs = newCountingObserver()
	ch.SetObserver(obs)
	filtertest.Run(t, ch, []byte("Subject: x\r\n\r\nbody\r\n"), filter.Meta{Number: 2})
	want = map[string]int{"down failed": 1, "slow timeout": 1, "big too_large": 1}
	if got := obs.counts(); !maps.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}
	for _, d := range obs.took {
		if d <= 0 || d > 4*time.Second {
			t.Errorf("took %v: not the time of the call", d)
		}
	}
}

// A run the session abandoned says nothing about its filters; without an
// observer nothing is reported and nothing breaks.
func TestObserverSkipsAbandonedRuns(t *testing.T) {
	ch := filtertest.MustChain(t, `[{type: testjudge, name: slow, hang: true, timeout: 5s}]`)
	obs := newCountingObserver()
	ch.SetObserver(obs)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	res := ch.Run(ctx, filter.NewMessage([]byte("Subject: x\r\n\r\n"), filter.Meta{}))
	res.Close()
	if got := obs.counts(); len(got) != 0 {
		t.Errorf("abandoned run observed: %v", got)
	}
	fast := filtertest.MustChain(t, `[{type: testjudge}]`)
	fast.SetObserver(obs)
	fast.SetObserver(nil)
	filtertest.Run(t, fast, []byte("Subject: x\r\n\r\n"), filter.Meta{})
	if got := obs.counts(); len(got) != 0 {
		t.Errorf("observed after SetObserver(nil): %v", got)
	}
}

// testPing is a filter with a daemon that answers, fails or hangs.
type testPing struct {
	Answer string `yaml:"answer"` // "" (pong) | fail | hang
}

func (p *testPing) Judge(context.Context, *filter.Message) (filter.Verdict, error) {
	return filter.Verdict{}, nil
}

func (p *testPing) Ping(ctx context.Context) error {
	switch p.Answer {
	case "fail":
		return errors.New("daemon at tcp://127.0.0.1:1 does not answer: connection refused")
	case "hang":
		time.Sleep(3 * time.Second) // ignores ctx
	}
	return nil
}

func init() {
	filter.Register(filter.PluginInfo{Type: "testping", New: func() filter.Plugin { return new(testPing) }})
}

// Ping asks the filters that have a daemon, all at once and each within
// its timeout, and names the failing ones by their address key.
func TestChainPing(t *testing.T) {
	ch := filtertest.MustChain(t, `
- {type: testping, name: up}
- {type: testjudge, name: plain}
- {type: testping, name: down, answer: fail}
- {type: testping, name: stuck, answer: hang, timeout: 100ms}
`)
	start := time.Now()
	results := ch.Ping(t.Context())
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Ping took %v despite a 100ms timeout", elapsed)
	}
	var got []string
	for _, r := range results {
		got = append(got, fmt.Sprintf("%s %s %v", r.Filter, r.Key, r.Err != nil))
	}
	if want := []string{"up filters[0].address false", "down filters[2].address true", "stuck filters[3].address true"}; !slices.Equal(got, want) {
		t.Errorf("Ping = %v, want %v", got, want)
	}
	if err := results[1].FieldError(); err == nil || !strings.HasPrefix(err.Error(), "filters[2].address: daemon at tcp://127.0.0.1:1 does not answer") {
		t.Errorf("FieldError = %v", err)
	}
	if !errors.Is(results[2].Err, context.DeadlineExceeded) {
		t.Errorf("hung ping: %v, want a deadline error", results[2].Err)
	}
	if results[0].FieldError() != nil {
		t.Error("an answering daemon has a FieldError")
	}
}
