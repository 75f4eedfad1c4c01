package filter

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"
)

// Run passes a message through the chain. Adjacent judges run
// concurrently, but their verdicts and failures are applied in
// configuration order, so the first filter that rejects or replaces
// decides. Modifiers run one at a time.
func (ch *Chain) Run(ctx context.Context, m *Message) Result {
	cur := m.Bytes()
	changed := false
	for i := 0; i < len(ch.stages); {
		if st := ch.stages[i]; st.modifier != nil {
			out, err := st.modify(ctx, NewMessage(cur, m.Meta))
			i++
			if err != nil {
				res, stop := st.failed(err, m.Meta)
				if stop {
					return res
				}
				marked, merr := applyEdits(cur, []Edit{unscannedEdit(st, err)})
				if merr != nil {
					// on_error: pass promises a marked message; unmarked,
					// it would look scanned.
					st.log.Error("unscanned mark cannot be added; message not delivered", zap.Error(merr), zap.Int("msg", m.Meta.Number))
					return Result{Outcome: TempFail, Filter: st.name, Reason: tempfailReason}
				}
				cur, changed = marked, true
				continue
			}
			if out != nil {
				cur, changed = out, true
			}
			continue
		}

		j := i
		for j < len(ch.stages) && ch.stages[j].modifier == nil {
			j++
		}
		run := ch.stages[i:j]
		i = j
		verdicts, errs := judgeAll(ctx, run, NewMessage(cur, m.Meta))

		var edits []Edit
		var owners []*stage // owners[i] made edits[i]
		addEdits := func(st *stage, es ...Edit) {
			edits = append(edits, es...)
			for range es {
				owners = append(owners, st)
			}
		}
		accepted := false
		for k, st := range run {
			if errs[k] != nil {
				res, stop := st.failed(errs[k], m.Meta)
				if stop {
					return res
				}
				addEdits(st, unscannedEdit(st, errs[k]))
				continue
			}
			v := verdicts[k]
			if v.Action != Continue {
				st.log.Info("verdict", zap.Stringer("action", v.Action), zap.String("reason", v.Reason),
					zap.Int("msg", m.Meta.Number), zap.String("user", m.Meta.User), zap.String("upstream", m.Meta.Upstream))
			}
			switch v.Action {
			case Continue, Accept:
				addEdits(st, v.Edits...)
			case Replace:
				return Result{Outcome: Deliver, Message: v.Replacement, Changed: true, Filter: st.name, Reason: v.Reason}
			case Reject:
				return Result{Outcome: Refuse, Filter: st.name, Reason: v.Reason}
			default:
				return st.misbehaved(fmt.Errorf("unknown action %v", v.Action), m.Meta)
			}
			if v.Action == Accept {
				accepted = true
				break
			}
		}
		if len(edits) > 0 {
			out, err := applyEdits(cur, edits)
			if err != nil {
				// An invalid edit (CR or LF in a value) is a bug of the
				// plugin that made it; the message of the whole run is
				// then neither checked nor intact.
				blamed := run[0]
				var ee *editError
				if errors.As(err, &ee) {
					blamed = owners[ee.index]
				}
				return blamed.misbehaved(err, m.Meta)
			}
			cur, changed = out, true
		}
		if accepted {
			break
		}
	}
	return Result{Outcome: Deliver, Message: cur, Changed: changed}
}

func judgeAll(ctx context.Context, run []*stage, m *Message) ([]Verdict, []error) {
	verdicts := make([]Verdict, len(run))
	errs := make([]error, len(run))
	if len(run) == 1 {
		verdicts[0], errs[0] = run[0].judgeOne(ctx, m)
		return verdicts, errs
	}
	var wg sync.WaitGroup
	for k, st := range run {
		wg.Go(func() { verdicts[k], errs[k] = st.judgeOne(ctx, m) })
	}
	wg.Wait()
	return verdicts, errs
}

func (st *stage) judgeOne(ctx context.Context, m *Message) (Verdict, error) {
	return call(ctx, st, func(ctx context.Context) (Verdict, error) { return st.judge.Judge(ctx, m) })
}

func (st *stage) modify(ctx context.Context, m *Message) ([]byte, error) {
	return call(ctx, st, func(ctx context.Context) ([]byte, error) { return st.modifier.Modify(ctx, m) })
}

// call runs f under the filter's timeout. A plugin that ignores its context
// is abandoned then, its goroutine left to finish in the background, so a
// hung scanner costs no more than the timeout.
func call[T any](ctx context.Context, st *stage, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				st.log.Error("filter panicked", zap.Any("panic", p), zap.Stack("stack"))
				r.err = fmt.Errorf("filter panicked: %v", p)
			}
			done <- r
		}()
		r.v, r.err = f(ctx)
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("%w (%v): %w", errAbandoned, st.timeout, ctx.Err())
	}
}

// failed applies the filter's on_error policy to err: it returns the final
// result and true, or false when the message is to be delivered marked.
func (st *stage) failed(err error, meta Meta) (Result, bool) {
	st.log.Warn("filter failed", zap.Error(err), zap.String("on_error", st.onErrorName()),
		zap.Int("msg", meta.Number), zap.String("user", meta.User), zap.String("upstream", meta.Upstream))
	switch {
	case errors.Is(err, ErrFailClosed):
		return Result{Outcome: TempFail, Filter: st.name, Reason: tempfailReason}, true
	case st.onError == OnErrorPass:
		return Result{}, false
	case st.onError == OnErrorReject:
		return Result{Outcome: Refuse, Filter: st.name, Reason: "message refused by policy"}, true
	default:
		return Result{Outcome: TempFail, Filter: st.name, Reason: tempfailReason}, true
	}
}

// misbehaved handles a plugin bug (an unknown action, an invalid header
// edit). No on_error policy may deliver past it: the message might be
// neither checked nor intact.
func (st *stage) misbehaved(err error, meta Meta) Result {
	st.log.Error("filter misbehaved", zap.Error(err), zap.Int("msg", meta.Number))
	return Result{Outcome: TempFail, Filter: st.name, Reason: tempfailReason}
}

const tempfailReason = "message cannot be checked right now, try again later"

func (st *stage) onErrorName() string {
	return [...]string{"tempfail", "pass", "reject"}[st.onError]
}

// unscannedEdit marks a message one filter failed on (on_error: pass). The
// value says which filter and whether it timed out, never the error text,
// which may name internal hosts.
func unscannedEdit(st *stage, err error) Edit {
	why := "failed"
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errAbandoned) {
		why = "timed out"
	}
	return Add(UnscannedField, st.name+" "+why)
}
