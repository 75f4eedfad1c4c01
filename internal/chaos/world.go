//go:build linux

package chaos

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/internal/faultnet"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache/redistest"
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// Options configures a World.
type Options struct {
	Seed    uint64
	Users   int           // mailboxes
	Clients int           // concurrent clients; more than Users means some users read from two devices
	Round   time.Duration // how long clients run and faults happen in each round
	Faults  []Kind        // the faults to draw from
	Rate    float64       // faults a second
	Bin     string        // the proxy binary (Build)
	Logf    func(format string, args ...any)
	// MaxConnections and MaxConnectionsPerIP set the proxy's limits
	// (default 2000 each: the chaos clients all come from 127.0.0.1).
	MaxConnections, MaxConnectionsPerIP int
	// Polite clients only fetch (with and without DELE, headers first),
	// never hang up on purpose.
	Polite bool
	// During runs beside the clients in every round, until ctx ends
	// (load generators).
	During func(ctx context.Context)
	// Cover adds, in round n, the kinds Faults[3n%len], [3n+1%len] and
	// [3n+2%len] to the random plan, so that a short run injects every
	// fault.
	Cover bool
}

// Stats counts what a World did, for progress reports.
type Stats struct {
	Rounds       atomic.Int64
	Sessions     atomic.Int64
	Delivered    atomic.Int64 // complete RETR answers
	Refused      atomic.Int64 // RETR answered -ERR
	Checked      atomic.Int64 // messages the oracle checked
	Faults       atomic.Int64 // faults injected by the schedule
	ClientFaults atomic.Int64 // client sessions that hung up on purpose
	Failed       atomic.Int64 // client sessions that ended in an error
	Violations   atomic.Int64
	TokenLogins  atomic.Int64 // sessions logged in with an OAuth2 token
	Replayed     atomic.Int64 // verdicts the proxy replayed from the cache
	ScannedAhead atomic.Int64 // messages the proxy checked ahead of a client

	mu      sync.Mutex
	retrs   []time.Duration // how long each complete RETR took
	answers map[string]int  // -ERR answers to RETR and TOP, by text
}

func (s *Stats) refused(line string) {
	s.Refused.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.answers == nil {
		s.answers = map[string]int{}
	}
	s.answers[line]++
}

// Refusals returns the -ERR answers to RETR and TOP so far, by text.
func (s *Stats) Refusals() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.answers)
}

func (s *Stats) retrTook(d time.Duration) {
	s.mu.Lock()
	s.retrs = append(s.retrs, d)
	s.mu.Unlock()
}

// RetrTimes returns, and forgets, how long each complete RETR took.
func (s *Stats) RetrTimes() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.retrs
	s.retrs = nil
	return r
}

// World is the system under test: a real Dovecot, clamd, spamd and
// rspamd, each behind a faultnet relay, and the proxy as a process.
type World struct {
	t        testing.TB
	opt      Options
	dir      string
	users    map[string]string
	dovecot  *upstreamtest.Dovecot
	tokens   *upstreamtest.TokenServer // OAuth2 bearer tokens, "token-" + user
	upstream *faultnet.Relay
	cache    *faultnet.Relay // before Redis, the shared verdict cache
	scanners [numScanners]*scanner
	proxy    *Proxy
	proxyMu  sync.Mutex // one signal, stop or start at a time
	config   proxyConfig
	baseline idleState
	counted  map[string]float64 // proxy counters already added to Stats, for the current process
	countPid int
	seq      int
	Stats    Stats
}

// idleState is what an idle proxy process holds.
type idleState struct {
	pid        int
	goroutines float64
	fds        int
}

// scanner is one scanner daemon behind a relay, with a standby instance
// that takes over when the fault schedule kills the current one.
type scanner struct {
	name    string
	relay   *faultnet.Relay
	start   func(testing.TB) instance
	mu      sync.Mutex
	current instance
	standby *instance
}

type instance struct {
	addr string
	stop func()
}

// NewWorld starts everything; it is all stopped when the test ends.
func NewWorld(t testing.TB, opt Options) *World {
	t.Helper()
	w := &World{t: t, opt: opt, dir: t.TempDir(), users: map[string]string{}}
	for i := range opt.Users {
		w.users["user"+strconv.Itoa(i)] = "pass-" + strconv.Itoa(i)
	}
	w.tokens = upstreamtest.StartTokenServer(t)
	for user := range w.users {
		w.tokens.Add("token-"+user, user)
	}
	w.dovecot = w.startDovecot()
	w.upstream = w.relay(w.dovecot.Addr)
	w.cache = w.relay(redistest.Start(t).Addr)

	w.scanners[scanClamd] = &scanner{name: "clamd", start: func(t testing.TB) instance {
		c := scannertest.StartClamdWith(t, scannertest.ClamdOptions{StreamMaxLength: "1M"})
		return instance{addr: c.TCPAddr, stop: func() { killPidFile(filepath.Join(c.Dir, "clamd.pid")) }}
	}}
	w.scanners[scanSpamd] = &scanner{name: "spamd", start: func(t testing.TB) instance {
		s := scannertest.StartSpamdWith(t, scannertest.SpamdOptions{MaxChildren: 2})
		return instance{addr: s.Addr, stop: func() { s.Stop() }}
	}}
	w.scanners[scanRspamd] = &scanner{name: "rspamd", start: func(t testing.TB) instance {
		r := scannertest.StartRspamd(t)
		return instance{addr: r.Addr, stop: func() { r.Stop() }}
	}}
	for _, s := range w.scanners {
		s.current = s.start(t)
		s.relay = w.relay(s.current.addr)
	}
	w.prepareStandbys()

	for _, sub := range []string{"spool", "quarantine"} {
		if err := os.Mkdir(filepath.Join(w.dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	addr, err1 := freeAddr()
	metrics, err2 := freeAddr()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	w.config = proxyConfig{
		Listen: addr, Metrics: metrics,
		Spool: filepath.Join(w.dir, "spool"), Quarantine: filepath.Join(w.dir, "quarantine"),
		Clamd:  w.scanners[scanClamd].relay.Addr(),
		Spamd:  w.scanners[scanSpamd].relay.Addr(),
		Rspamd: w.scanners[scanRspamd].relay.Addr(),
		Redis:  w.cache.Addr(), ScanAhead: 2,
		MaxConnections: cmp.Or(opt.MaxConnections, 2000), MaxConnectionsPerIP: cmp.Or(opt.MaxConnectionsPerIP, 2000),
	}
	w.proxy = NewProxy(opt.Bin, filepath.Join(w.dir, "config.yaml"), addr, metrics, w.config.Spool)
	if err := w.writeConfig(); err != nil {
		t.Fatal(err)
	}
	if err := w.proxy.Start(); err != nil {
		t.Fatalf("%v\n%s", err, w.proxy.Output())
	}
	t.Cleanup(func() {
		w.proxy.Kill()
		if t.Failed() {
			t.Logf("pop3proxy output (tail):\n%s", w.proxy.Output())
		}
	})
	// What a fresh idle proxy holds, once its scanner checks (every
	// check_interval) have run.
	time.Sleep(1500 * time.Millisecond)
	w.baseline = w.idle()
	return w
}

// startDovecot starts a Dovecot whose UIDLs are the bare UIDs, as on
// servers that number messages from 1, so that a renumbered mailbox
// reuses UIDLs for other messages: what a verdict cache must not be
// fooled by.
func (w *World) startDovecot() *upstreamtest.Dovecot {
	return upstreamtest.StartDovecot(w.t, upstreamtest.DovecotOptions{
		Users: w.users, MaxUserIPConnections: 200, UIDLFormat: "%u",
		OAuth2: &upstreamtest.OAuth2Options{IntrospectionURL: w.tokens.URL},
	})
}

// renumber replaces the upstream by a new Dovecot with the same mail in
// another order: every message gets a new UID, and UIDL "1" now names
// another message, as after a server restores its mailboxes or rebuilds
// its index. Clients reach it through the same relay address.
func (w *World) renumber(rng *rand.Rand) {
	next := w.startDovecot()
	for _, user := range w.sortedUsers() {
		msgs := w.dovecot.Messages(w.t, user)
		rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
		for _, m := range msgs {
			next.Deliver(w.t, user, m)
		}
	}
	w.upstream.Retarget(next.Addr)
	if err := w.dovecot.Stop(); err != nil {
		w.t.Logf("stopping the replaced Dovecot: %v", err)
	}
	w.dovecot = next
}

func (w *World) relay(target string) *faultnet.Relay {
	r, err := faultnet.New(target)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { r.Close() })
	return r
}

// prepareStandbys starts a standby for every scanner that lacks one.
// Daemons start in the test's goroutine (testing.TB requires it), so
// this runs between rounds.
func (w *World) prepareStandbys() {
	for _, s := range w.scanners {
		s.mu.Lock()
		need := s.standby == nil
		s.mu.Unlock()
		if need {
			in := s.start(w.t)
			s.mu.Lock()
			s.standby = &in
			s.mu.Unlock()
		}
	}
}

// killPidFile sends SIGKILL to the process whose id the file holds.
func killPidFile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid > 1 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// login is what a client types as its user name.
func (w *World) login(user string) string { return user + "%" + w.upstream.Addr() }

// snapshot reads every mailbox directly from Dovecot, bypassing the
// relay and the proxy: user → unique-id → message.
func (w *World) snapshot() (map[string]map[string]Message, error) {
	boxes := map[string]map[string]Message{}
	for user, pass := range w.users {
		c, err := dialPOP3(w.dovecot.Addr, "", 10*time.Second)
		if err != nil {
			return nil, err
		}
		msgs, err := readAll(c, user, pass)
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", user, err)
		}
		boxes[user] = msgs
	}
	return boxes, nil
}

func readAll(c *pop3Conn, user, pass string) (map[string]Message, error) {
	if err := c.login(user, pass); err != nil {
		return nil, err
	}
	ids, err := c.uidl()
	if err != nil {
		return nil, err
	}
	msgs := map[string]Message{}
	for n, uid := range ids {
		if _, err := c.cmd("RETR " + strconv.Itoa(n)); err != nil {
			return nil, err
		}
		body, err := c.multi(maxAnswer)
		if err != nil {
			return nil, err
		}
		msgs[uid] = Message{Wire: body, Infected: bytes.Contains(body, scannertest.EICAR())}
	}
	_, err = c.cmd("QUIT")
	return msgs, err
}

// topUp delivers new messages so that every mailbox holds 3 to 9.
func (w *World) topUp(boxes map[string]map[string]Message, rng *rand.Rand) {
	users := make([]string, 0, len(w.users))
	for u := range w.users {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, user := range users {
		want := 3 + rng.IntN(7)
		for range want - len(boxes[user]) {
			w.seq++
			msg, _ := newMessage(rand.New(rand.NewPCG(w.opt.Seed, 1<<40|uint64(w.seq))), w.seq)
			w.dovecot.Deliver(w.t, user, msg)
		}
	}
}
