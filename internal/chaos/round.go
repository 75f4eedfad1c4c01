//go:build linux

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Slack over a fresh idle proxy that an idle proxy may hold after a
// round: idle keep-alive connections to rspamd (two goroutines and one
// descriptor each, at most two by net/http's default) and to a cache.
const (
	goroutineSlack = 12
	fdSlack        = 8
	quiesceTimeout = 30 * time.Second
	sessionLimit   = 90 * time.Second
)

// Round runs round n: it tops up the mailboxes, lets the clients fetch
// while the round's faults happen, waits until everything is idle again,
// and returns every violation: of the oracle, of the leak checks, and
// what the harness itself could not do.
func (w *World) Round(n int) []string {
	var v []string
	t0 := time.Now()
	w.prepareStandbys()
	tStandby := time.Since(t0)
	v = append(v, w.ensureProxy()...)
	events := w.plan(n)
	var renumbered []string
	for i := 0; i < len(events); i++ {
		if events[i].Kind == UpRenumber {
			// Between sessions, before the mailboxes are read.
			w.renumber(rand.New(rand.NewPCG(w.opt.Seed, 3<<40|uint64(n))))
			renumbered = append(renumbered, events[i].Kind.String()+" before the round")
			events = append(events[:i], events[i+1:]...)
			i--
		}
	}
	before, err := w.snapshot()
	if err != nil {
		return append(v, fmt.Sprintf("round %d: reading the mailboxes before: %v", n, err))
	}
	w.topUp(before, rand.New(rand.NewPCG(w.opt.Seed, 2<<40|uint64(n))))
	if before, err = w.snapshot(); err != nil {
		return append(v, fmt.Sprintf("round %d: reading the mailboxes before: %v", n, err))
	}
	oracle := New(expect)
	for user, msgs := range before {
		oracle.Mailbox(user, msgs)
	}

	ctx, cancel := context.WithTimeout(context.Background(), w.opt.Round)
	defer cancel()
	inj := newInjector(w)
	inj.applied = renumbered
	w.Stats.Faults.Add(int64(len(renumbered)))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		inj.run(ctx, events)
	}()
	if w.opt.During != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.opt.During(ctx)
		}()
	}
	pick := pickBehaviour
	if w.opt.Polite {
		pick = pickPolite
	}
	users := w.sortedUsers()
	end := time.Now().Add(w.opt.Round + sessionLimit)
	for i := range w.opt.Clients {
		user := users[i%len(users)]
		c := &client{
			proxyAddr: w.proxy.Addr, login: w.login(user), user: user, pass: w.users[user],
			oracle: oracle, rng: workerRand(w.opt.Seed, n, i), stats: &w.Stats, end: end,
			slow: func(s string) {
				if w.opt.Logf != nil {
					w.opt.Logf("round %d: %s", n, s)
				}
			},
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := c.session(pick(c.rng)); err != nil {
					w.Stats.Failed.Add(1)
					if w.opt.Polite && w.opt.Logf != nil {
						w.opt.Logf("round %d: a %s session failed: %v", n, c.user, err)
					}
					// The proxy may be down; do not spin.
					time.Sleep(time.Duration(50+c.rng.IntN(200)) * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	tClients := time.Since(t0)
	for _, e := range inj.applied {
		oracle.Fault(e)
	}
	for _, err := range inj.errs {
		v = append(v, fmt.Sprintf("round %d: the harness could not inject a fault: %v", n, err))
	}
	v = append(v, w.ensureProxy()...)
	v = append(v, w.quiesce(n)...)
	w.countProxy()
	tQuiet := time.Since(t0)

	after, err := w.snapshot()
	if err != nil {
		return append(v, fmt.Sprintf("round %d: reading the mailboxes after: %v", n, err))
	}
	left := map[string]map[string]bool{}
	for user, msgs := range after {
		left[user] = map[string]bool{}
		for uid := range msgs {
			left[user][uid] = true
		}
	}
	ov, checked := oracle.Check(left)
	for _, s := range ov {
		v = append(v, fmt.Sprintf("round %d (seed %d): %s", n, w.opt.Seed, s))
	}
	w.Stats.Rounds.Add(1)
	w.Stats.Checked.Add(int64(checked))
	w.Stats.Violations.Add(int64(len(v)))
	if w.opt.Logf != nil {
		w.opt.Logf("round %d: %d messages checked in %s (standbys %s, clients done %s, idle %s); faults: %s", n, checked,
			time.Since(t0).Round(time.Millisecond), tStandby.Round(time.Millisecond), tClients.Round(time.Millisecond), tQuiet.Round(time.Millisecond),
			strings.Join(inj.applied, "; "))
	}
	return v
}

// ensureProxy starts the proxy if it is not running and returns its
// crashes since the last call.
func (w *World) ensureProxy() []string {
	w.proxyMu.Lock()
	defer w.proxyMu.Unlock()
	v := w.proxy.Crashes()
	if !w.proxy.Running() {
		if err := w.proxy.Start(); err != nil {
			v = append(v, fmt.Sprintf("the proxy does not start: %v", err))
		}
	}
	return v
}

// quiesce waits until no session is open, towards clients or the
// upstream, and then checks that the proxy holds no more goroutines and
// descriptors than an idle one, and no spool file.
func (w *World) quiesce(n int) []string {
	var v []string
	deadline := time.Now().Add(quiesceTimeout)
	var active float64
	for {
		m, err := w.proxy.Metrics()
		if err == nil {
			active = m["pop3proxy_sessions_active"]
			if active == 0 && w.upstream.Open() == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			return append(v, fmt.Sprintf("round %d: %v client sessions and %d upstream connections still open %s after the round (metrics: %v)",
				n, active, w.upstream.Open(), quiesceTimeout, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if w.baseline.pid == 0 {
		w.baseline = w.idle()
	}
	// Goroutines of ended sessions may take a moment to return.
	var now idleState
	var spoolFDs int
	var spoolFiles []os.DirEntry
	for range 50 {
		now = w.idle()
		_, spoolFDs, _ = w.proxy.FDs()
		spoolFiles, _ = os.ReadDir(w.config.Spool)
		if now.goroutines <= w.baseline.goroutines+goroutineSlack && now.fds <= w.baseline.fds+fdSlack && spoolFDs == 0 && len(spoolFiles) == 0 {
			return v
		}
		time.Sleep(200 * time.Millisecond)
	}
	return append(v, fmt.Sprintf("round %d: the idle proxy holds %v goroutines (a fresh one %v), %d descriptors (a fresh one %d), %d spool files open and %d in %s",
		n, now.goroutines, w.baseline.goroutines, now.fds, w.baseline.fds, spoolFDs, len(spoolFiles), w.config.Spool))
}

// countProxy adds what the proxy's counters gained since the last call
// to Stats; a restarted process counts from zero.
func (w *World) countProxy() {
	m, err := w.proxy.Metrics()
	if err != nil {
		return
	}
	if pid := w.proxy.Pid(); pid != w.countPid {
		w.countPid, w.counted = pid, map[string]float64{}
	}
	for name, c := range map[string]*atomic.Int64{
		"pop3proxy_messages_replayed_total":      &w.Stats.Replayed,
		"pop3proxy_messages_scanned_ahead_total": &w.Stats.ScannedAhead,
	} {
		c.Add(int64(m[name] - w.counted[name]))
		w.counted[name] = m[name]
	}
}

// idle measures the proxy's goroutines and descriptors.
func (w *World) idle() idleState {
	s := idleState{pid: w.proxy.Pid()}
	if m, err := w.proxy.Metrics(); err == nil {
		s.goroutines = m["go_goroutines"]
	}
	s.fds, _, _ = w.proxy.FDs()
	return s
}

// plan returns round n's events: the seeded plan, and under Cover three
// more kinds in turn.
func (w *World) plan(n int) []Event {
	events := Plan(w.opt.Seed, n, w.opt.Round, w.opt.Faults, w.opt.Rate)
	if w.opt.Cover && len(w.opt.Faults) > 0 {
		for i := range 3 {
			k := w.opt.Faults[(3*n+i)%len(w.opt.Faults)]
			events = append(events, One(w.opt.Seed, n, i, w.opt.Round, k))
		}
		sort.Slice(events, func(i, j int) bool { return events[i].At < events[j].At })
	}
	return events
}

func (w *World) sortedUsers() []string {
	users := make([]string, 0, len(w.users))
	for u := range w.users {
		users = append(users, u)
	}
	sort.Strings(users)
	return users
}
