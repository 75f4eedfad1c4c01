package filter

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

type failingModifier struct{}

func (failingModifier) Modify(context.Context, *Message, io.Writer) (bool, error) {
	return false, errors.New("exit status 3")
}

// TestUnmarkableFailureIsTempFail: a failed modifier with on_error: pass
// is delivered only with the UnscannedField mark; when the mark cannot be
// added, the message must not go out unmarked. Build refuses such names
// (TestBuildRefusesUnsafeNames), so the stage is made by hand.
func TestUnmarkableFailureIsTempFail(t *testing.T) {
	log := zaptest.NewLogger(t)
	ch := &Chain{log: log, stages: []*stage{{
		name: "mod\r\nX-Injected: yes", typ: "testmod", modifier: failingModifier{},
		timeout: time.Second, onError: OnErrorPass, log: log,
	}}}
	res := ch.Run(context.Background(), NewMessage([]byte("Subject: a\r\n\r\nbody\r\n"), Meta{Number: 1}))
	defer res.Close()
	if res.Outcome != TempFail {
		t.Fatalf("Run = %v, want tempfail", res.Outcome)
	}
}

type slotsJudge struct{}

func (slotsJudge) Judge(context.Context, *Message) (Verdict, error) { return Verdict{}, nil }

func init() {
	Register(PluginInfo{Type: "testslots", New: func() Plugin { return new(slotsJudge) }, MaxConcurrent: 3})
}

// TestMaxConcurrentDefault: PluginInfo.MaxConcurrent is the default of
// max_concurrent, which overrides it, down to 0 for no limit.
func TestMaxConcurrentDefault(t *testing.T) {
	for _, tc := range []struct {
		doc   string
		slots int // 0: no limit
	}{
		{"- {type: testslots}", 3},
		{"- {type: testslots, max_concurrent: 5}", 5},
		{"- {type: testslots, max_concurrent: 0}", 0},
	} {
		ch, err := BuildYAML([]byte(tc.doc), zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("%s: %v", tc.doc, err)
		}
		st := ch.stages[0]
		if (st.slots == nil) != (tc.slots == 0) || cap(st.slots) != tc.slots {
			t.Errorf("%s: %d slots (nil %v), want %d", tc.doc, cap(st.slots), st.slots == nil, tc.slots)
		}
	}
}
