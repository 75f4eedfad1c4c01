//go:build linux

package chaos

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"
)

// Kind is a fault the harness can inject.
type Kind int

// The faults. Client-side faults (hanging up mid-RETR, after DELE, during
// a scan) are not here: every client session picks its behaviour from
// the same seed (see behaviour).
const (
	ProxyKill      Kind = iota // SIGKILL the proxy, start it again
	ProxyTerm                  // SIGTERM: drain, exit, start again
	ProxyReload                // SIGHUP with a changed configuration
	UpRefuse                   // the upstream refuses connections
	UpCut                      // the upstream drops connections mid-answer
	UpStall                    // the upstream stops answering
	UpGarbage                  // the upstream greets with random bytes
	UpEndless                  // an answer that never ends
	UpQuitErr                  // QUIT answered -ERR, deletions not done
	UpQuitErrAfter             // QUIT answered -ERR after the deletions
	ScanRefuse                 // a scanner refuses connections
	ScanCut                    // a scanner closes before answering
	ScanStall                  // a scanner hangs
	ScanGarbage                // a scanner answers garbage
	ScanRestart                // a scanner dies mid-scan; a new one takes over
	SpoolGone                  // the spool directory disappears
	SpoolFull                  // spool writes fail (RLIMIT_FSIZE)
	QuarantineGone             // the quarantine directory disappears
	QuarantineFull             // the quarantine is over its limit
	CacheAway                  // the shared cache (Redis) is unreachable
	UpRenumber                 // between rounds: the server comes back with new UIDLs, old ones reused
	numKinds
)

var kindNames = [...]string{
	"proxy-kill", "proxy-term", "proxy-reload",
	"upstream-refuse", "upstream-cut", "upstream-stall", "upstream-garbage", "upstream-endless",
	"upstream-quit-err", "upstream-quit-err-after",
	"scanner-refuse", "scanner-cut", "scanner-stall", "scanner-garbage", "scanner-restart",
	"spool-gone", "spool-full", "quarantine-gone", "quarantine-full", "cache-away",
	"upstream-renumbered",
}

func (k Kind) String() string { return kindNames[k] }

// AllKinds lists every fault.
func AllKinds() []Kind {
	ks := make([]Kind, numKinds)
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

// Event is one fault at a time in a round.
type Event struct {
	At     time.Duration // from the round's start
	Kind   Kind
	For    time.Duration // how long it lasts
	N      int64         // a size or a choice, by kind
	Target int           // which scanner, for Scan*
}

func (e Event) String() string {
	s := fmt.Sprintf("%s at %s for %s", e.Kind, e.At.Round(time.Millisecond), e.For.Round(time.Millisecond))
	if e.Kind >= ScanRefuse && e.Kind <= ScanRestart {
		s += fmt.Sprintf(" on %s", scannerNames[e.Target])
	}
	if e.N != 0 {
		s += fmt.Sprintf(" (n=%d)", e.N)
	}
	return s
}

// The scanners a Scan* event can target.
const (
	scanClamd = iota
	scanSpamd
	scanRspamd
	numScanners
)

var scannerNames = [...]string{"clamd", "spamd", "rspamd"}

// Plan returns the faults of one round: kinds drawn from kinds, about
// perSecond of them a second, each at most a few seconds long. The same
// seed and round give the same plan, so a failing run can be replayed
// (the daemons' own timing still varies from run to run).
func Plan(seed uint64, round int, length time.Duration, kinds []Kind, perSecond float64) []Event {
	if len(kinds) == 0 || perSecond <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(seed, uint64(round)))
	var events []Event
	at := time.Duration(0)
	for {
		at += time.Duration(rng.ExpFloat64() / perSecond * float64(time.Second))
		if at >= length {
			break
		}
		events = append(events, newEvent(rng, at, kinds[rng.IntN(len(kinds))]))
	}
	sort.Slice(events, func(i, j int) bool { return events[i].At < events[j].At })
	return events
}

// One returns the i-th extra event of a round: kind k at a random time
// in its first three quarters, so that it ends within the round.
func One(seed uint64, round, i int, length time.Duration, k Kind) Event {
	rng := rand.New(rand.NewPCG(seed, 1<<32|uint64(round)<<8|uint64(i)))
	return newEvent(rng, time.Duration(rng.Int64N(int64(length)*3/4)), k)
}

func newEvent(rng *rand.Rand, at time.Duration, k Kind) Event {
	e := Event{At: at, Kind: k, Target: rng.IntN(numScanners)}
	e.For = time.Duration(500+rng.IntN(3500)) * time.Millisecond
	switch k {
	case UpCut, UpEndless:
		e.N = int64(rng.IntN(96 << 10))
	case ScanCut:
		e.N = int64(rng.IntN(8))
	case SpoolFull:
		e.N = int64(rng.IntN(64 << 10))
	case ProxyReload, CacheAway:
		e.N = int64(rng.IntN(2))
	}
	return e
}

// workerRand is the random source of one worker in one round.
func workerRand(seed uint64, round, worker int) *rand.Rand {
	return rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, uint64(round)<<20|uint64(worker)))
}
