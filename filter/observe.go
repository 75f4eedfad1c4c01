package filter

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/yamlconf"
)

// Observer is told what the chain's filters do, for metrics. The chain
// depends on no metrics library: the program implements Observer.
type Observer interface {
	// Filter is called once per filter by SetObserver and returns what
	// that filter reports to, so that an implementation can resolve its
	// labels once instead of on every message. It may return nil.
	Filter(name, typ string, onError OnError) FilterObserver
}

// FilterObserver receives one filter's results. Its methods are called
// concurrently, once per call of the plugin, and must be quick and must
// not block. took runs from the call's start (a max_concurrent wait
// included) to its result or timeout. A call abandoned because the
// session ended is not reported.
type FilterObserver interface {
	// Verdict: a judge decided. A modifier's result is Continue when it
	// left the message unchanged and Replace when it wrote a new one.
	Verdict(action Action, took time.Duration)
	// Failed: the plugin failed or timed out (timedOut); on_error applies.
	Failed(timedOut bool, took time.Duration)
	// TooLarge: the scanner refused the message (ErrTooLarge); oversize applies.
	TooLarge(took time.Duration)
}

// SetObserver makes the chain report to o (nil: nobody); call it before use.
func (ch *Chain) SetObserver(o Observer) {
	if ch == nil {
		return
	}
	for _, st := range ch.stages {
		st.obs = nil
		if o != nil {
			st.obs = o.Filter(st.name, st.typ, st.onError)
		}
	}
}

func (o OnError) String() string {
	switch o {
	case OnErrorTempfail:
		return "tempfail"
	case OnErrorPass:
		return "pass"
	case OnErrorReject:
		return "reject"
	}
	return "unknown"
}

// observe reports one call of st's plugin, unless parent (the run's
// context) has ended: the session gave up, which says nothing of the filter.
func (st *stage) observe(parent context.Context, start time.Time, action Action, err error) {
	o := st.obs
	if o == nil || parent.Err() != nil {
		return
	}
	took := time.Since(start)
	switch {
	case err == nil:
		o.Verdict(action, took)
	case errors.Is(err, ErrTooLarge):
		o.TooLarge(took)
	default:
		o.Failed(timedOut(err), took)
	}
}

func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errAbandoned)
}

// Pinger is implemented by plugins with a daemon (clamd, spamd): Ping
// checks cheaply, without a message, that it answers, and must return when
// ctx ends. Failures are reported under the plugin's address key.
type Pinger interface {
	Ping(ctx context.Context) error
}

// PingError is a Pinger's failure: which daemon, where, and why.
type PingError struct {
	Daemon  string // "clamd"
	Address string // as configured: "tcp://127.0.0.1:3310"
	Err     error
}

func (e *PingError) Error() string {
	return e.Daemon + " at " + e.Address + " does not answer: " + e.Err.Error()
}

func (e *PingError) Unwrap() error { return e.Err }

// PingResult is one filter's answer to Chain.Ping.
type PingResult struct {
	Filter string // the filter's name
	Key    string // the key path of the daemon's address: "filters[0].address"
	Err    error  // nil when the daemon answered
}

// FieldError returns the failure as a configuration problem under Key, or nil.
func (r PingResult) FieldError() error {
	if r.Err == nil {
		return nil
	}
	return yamlconf.NewFieldError(r.Key, 0, "%v", r.Err)
}

// Ping asks every filter whose plugin is a Pinger, all at once, and
// returns their answers in chain order; filters without a daemon are left
// out. Each ping is bounded by ctx and by the filter's timeout.
func (ch *Chain) Ping(ctx context.Context) []PingResult {
	if ch == nil {
		return nil
	}
	var results []PingResult
	var pingers []Pinger
	var timeouts []time.Duration
	for _, st := range ch.stages {
		if p, ok := st.plugin.(Pinger); ok {
			results = append(results, PingResult{Filter: st.name, Key: yamlconf.JoinPath(st.path, "address")})
			pingers = append(pingers, p)
			timeouts = append(timeouts, st.timeout)
		}
	}
	var wg sync.WaitGroup
	for i, p := range pingers {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeouts[i])
			defer cancel()
			results[i].Err = ping(pctx, p)
		})
	}
	wg.Wait()
	return results
}

// ping runs one Ping, abandoning a plugin that ignores its context.
func ping(ctx context.Context, p Pinger) (err error) {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- errors.New("ping panicked")
			}
		}()
		done <- p.Ping(ctx)
	}()
	select {
	case err = <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LogFields returns the fields that tie a log line about the message to its session.
func (m Meta) LogFields() []zap.Field {
	return []zap.Field{
		zap.Uint64("conn", m.Conn), zap.String("user", m.User),
		zap.String("upstream", m.Upstream), zap.Int("msg", m.Number),
	}
}
