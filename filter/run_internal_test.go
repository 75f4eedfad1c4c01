package filter

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

type failingModifier struct{}

func (failingModifier) Modify(context.Context, *Message) ([]byte, error) {
	return nil, errors.New("exit status 3")
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
	if res.Outcome != TempFail {
		t.Fatalf("Run = %v %q, want tempfail", res.Outcome, res.Message)
	}
}
