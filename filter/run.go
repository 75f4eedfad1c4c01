package filter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Run passes a message through the chain. Adjacent judges run
// concurrently, but their verdicts and failures apply in configuration
// order: the first that rejects or replaces decides. Modifiers run one at
// a time. The Result must be closed once its message has been delivered.
func (ch *Chain) Run(ctx context.Context, m *Message) *Result {
	r := &Result{ch: ch, rec: &recorder{}}
	cur := m
	changed := false
	for i := 0; i < len(ch.stages); {
		if st := ch.stages[i]; st.modifier != nil {
			i++
			out := r.newBuffer(cur.Size())
			w := &sealedWriter{w: out}
			modified, err := st.modify(ctx, cur, w)
			w.seal()
			if err == nil && modified {
				if berr := bufferErr(out); berr != nil {
					err = fmt.Errorf("storing the output: %w", berr)
				}
			}
			if err != nil || !modified {
				r.discard(out)
			}
			if err != nil {
				edit, res := r.settle(st, err, cur)
				if res != nil {
					return res
				}
				if edit == (Edit{}) {
					continue // too large, and oversize: pass delivers it unmarked
				}
				marked, merr := applyEdits(cur, []Edit{edit}, r.newHeaderBuffer)
				if merr != nil {
					// on_error: pass promises a marked message; unmarked,
					// it would look scanned.
					st.log.Error("unscanned mark cannot be added; message not delivered", append(m.Meta.LogFields(), zap.Error(merr))...)
					return r.end(Result{Outcome: TempFail, Filter: st.name, Reason: tempfailReason})
				}
				cur, changed = marked, true
				continue
			}
			if modified {
				cur, changed = NewMessageAt(out, out.Size(), m.Meta), true
				r.rec.unusable = true // what a program wrote is no edit to replay
			}
			continue
		}

		j := i
		for j < len(ch.stages) && ch.stages[j].modifier == nil {
			j++
		}
		run := ch.stages[i:j]
		i = j
		verdicts, errs := judgeAll(ctx, run, cur)

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
				edit, res := r.settle(st, errs[k], cur)
				if res != nil {
					return res
				}
				if edit != (Edit{}) {
					addEdits(st, edit)
				}
				continue
			}
			v := verdicts[k]
			if v.Action != Continue {
				st.log.Info("verdict", append(m.Meta.LogFields(), zap.Stringer("action", v.Action), zap.String("reason", v.Reason))...)
			}
			switch v.Action {
			case Continue, Accept:
				addEdits(st, v.Edits...)
			case Replace:
				return r.end(Result{Outcome: Deliver, Message: NewMessage(v.Replacement, m.Meta), Changed: true, Filter: st.name, Reason: v.Reason})
			case Reject:
				return r.end(Result{Outcome: Refuse, Filter: st.name, Reason: v.Reason})
			default:
				return r.end(st.misbehaved(fmt.Errorf("unknown action %v", v.Action), m.Meta))
			}
			if v.Action == Accept {
				accepted = true
				break
			}
		}
		if len(edits) > 0 {
			out, err := applyEdits(cur, edits, r.newHeaderBuffer)
			if err != nil {
				// An invalid edit is a bug of the plugin that made it: the
				// message is then neither checked nor intact. A failure to
				// read or spool the message is no plugin's fault.
				var ee *editError
				if !errors.As(err, &ee) {
					ch.log.Error("header edits failed", append(m.Meta.LogFields(), zap.Error(err))...)
					return r.end(Result{Outcome: TempFail, Filter: run[0].name, Reason: tempfailReason})
				}
				return r.end(owners[ee.index].misbehaved(err, m.Meta))
			}
			cur, changed = out, true
			r.rec.batch(edits)
		}
		if accepted {
			break
		}
	}
	return r.end(Result{Outcome: Deliver, Message: cur, Changed: changed})
}

// settle decides what a filter's failure does to the message: an edit
// marking it (the zero Edit for none), or the final Result.
func (r *Result) settle(st *stage, err error, m *Message) (Edit, *Result) {
	r.rec.unusable = true
	if errors.Is(err, ErrTooLarge) {
		st.log.Info("message too large for the filter", append(m.Meta.LogFields(), zap.Error(err), zap.Int64("size", m.Size()),
			zap.Stringer("oversize", r.ch.oversize))...)
		switch r.ch.oversize {
		case OversizeReject:
			return Edit{}, r.end(Result{Outcome: Refuse, Filter: st.name, Reason: "message too large to be checked"})
		case OversizePass:
			return Edit{}, nil
		}
		return Add(UnscannedField, fmt.Sprintf("%s: too large (%d octets)", st.name, m.Size())), nil
	}
	if res, stop := st.failed(err, m.Meta); stop {
		return Edit{}, r.end(res)
	}
	return unscannedEdit(st, err), nil
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
	start := time.Now()
	v, err := call(ctx, st, func(ctx context.Context) (Verdict, error) { return st.judge.Judge(ctx, m) })
	st.observe(ctx, start, v.Action, err)
	return v, err
}

func (st *stage) modify(ctx context.Context, m *Message, out io.Writer) (bool, error) {
	start := time.Now()
	modified, err := call(ctx, st, func(ctx context.Context) (bool, error) { return st.modifier.Modify(ctx, m, out) })
	action := Continue
	if modified {
		action = Replace
	}
	st.observe(ctx, start, action, err)
	return modified, err
}

// call runs f under the filter's timeout. A plugin that ignores its context
// is abandoned then, its goroutine left to finish in the background, so a
// hung scanner costs no more than the timeout.
func call[T any](ctx context.Context, st *stage, f func(context.Context) (T, error)) (T, error) {
	if st.inline {
		return callInline(ctx, st, f)
	}
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	var zero T
	// The wait for a slot counts against the timeout: a daemon that is
	// already as busy as it may be makes this filter fail like a slow one.
	if st.slots != nil {
		select {
		case st.slots <- struct{}{}:
		case <-ctx.Done():
			return zero, fmt.Errorf("%w: no free slot within %v (max_concurrent %d): %w", errAbandoned, st.timeout, cap(st.slots), ctx.Err())
		}
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			// An abandoned call keeps its slot until it really ends, so
			// that hung scans still count against the daemon's capacity.
			if st.slots != nil {
				<-st.slots
			}
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
		return zero, fmt.Errorf("%w (%v): %w", errAbandoned, st.timeout, ctx.Err())
	}
}

// sealedWriter is a modifier's out. A modifier abandoned at its timeout
// runs on, but the run owns the buffer again, so a late write must fail
// rather than race (and write into memory given back to the spool).
type sealedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	sealed bool
}

var errSealed = errors.New("filter: output written after the filter's call ended")

func (s *sealedWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sealed {
		return 0, errSealed
	}
	return s.w.Write(p)
}

// seal makes later writes fail; it waits for a write under way.
func (s *sealedWriter) seal() {
	s.mu.Lock()
	s.sealed = true
	s.mu.Unlock()
}

// failed applies the filter's on_error policy to err: it returns the final
// result and true, or false when the message is to be delivered marked.
func (st *stage) failed(err error, meta Meta) (Result, bool) {
	st.log.Warn("filter failed", append(meta.LogFields(), zap.Error(err), zap.Stringer("on_error", st.onError))...)
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

// misbehaved handles a plugin bug (an unknown action, an invalid edit): no
// on_error policy may deliver a message that might be neither checked nor intact.
func (st *stage) misbehaved(err error, meta Meta) Result {
	st.log.Error("filter misbehaved", append(meta.LogFields(), zap.Error(err))...)
	return Result{Outcome: TempFail, Filter: st.name, Reason: tempfailReason}
}

const tempfailReason = "message cannot be checked right now, try again later"

// unscannedEdit marks a message for on_error: pass, naming the filter,
// never the error text, which may name internal hosts.
func unscannedEdit(st *stage, err error) Edit {
	why := "failed"
	if timedOut(err) {
		why = "timed out"
	}
	return Add(UnscannedField, st.name+" "+why)
}

// callInline runs f in the caller's goroutine (PluginInfo.Inline): a
// goroutine and a timer per message would cost more than the plugin (a
// third of the CPU of a header-only chain, measured).
func callInline[T any](ctx context.Context, st *stage, f func(context.Context) (T, error)) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			st.log.Error("filter panicked", zap.Any("panic", p), zap.Stack("stack"))
			var zero T
			v, err = zero, fmt.Errorf("filter panicked: %v", p)
		}
	}()
	return f(ctx)
}
