package bench

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
	_ "github.com/pop3proxy/pop3proxy/scanners/clamav" // the scanning rows
	"github.com/pop3proxy/pop3proxy/scanners/scannertest"
	_ "github.com/pop3proxy/pop3proxy/scanners/spamassassin"
	"github.com/pop3proxy/pop3proxy/upstream/upstreamtest"
)

// rounds is how many times each side of a row runs, alternating, so that
// whatever else the machine does hits both alike; the table shows medians.
const rounds = 5

// side is one thing measured: where a client connects and how it logs in.
type side struct {
	name, addr, login string
}

// workload fetches messages through addr and returns how many it fetched.
type workload func(b *testing.B, s side) int

// row compares a candidate with its limit on one workload.
type row struct {
	name      string
	candidate side
	limit     side
	work      workload
	target    float64 // the ratio the proxy should reach
	// warmup runs the candidate once before the rounds (to fill a cache).
	warmup bool
}

// sequential RETRs messages 1..n cyclically, count times, in one session.
func sequential(first, n, count int) workload {
	return func(b *testing.B, s side) int {
		cl := dial(b, s.addr, s.login)
		defer cl.c.Close()
		for i := range count {
			cl.retr(b, first+i%n)
		}
		cl.cmd(b, "QUIT")
		return count
	}
}

// parallel runs sessions sessions at once, each with w, and returns the
// messages fetched in all.
func parallel(sessions int, login func(i int, s side) side, w workload) workload {
	return func(b *testing.B, s side) int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := 0
		for i := range sessions {
			wg.Go(func() {
				n := w(b, login(i, s))
				mu.Lock()
				total += n
				mu.Unlock()
			})
		}
		wg.Wait()
		return total
	}
}

// BenchmarkSpeedTable measures the proxy against the relays that bound it
// and prints one ratio per row: the median of rounds alternating runs of
// messages per second, candidate over limit. It asserts nothing.
//
//	go test -run '^$' -bench SpeedTable -benchtime 1x ./bench/
func BenchmarkSpeedTable(b *testing.B) {
	const (
		sessions = 50
		users    = 10
	)
	logins := map[string]string{}
	for i := range users {
		logins[fmt.Sprintf("u%d", i)] = password
	}
	d := upstreamtest.StartDovecot(b, upstreamtest.DovecotOptions{Users: logins, MaxUserIPConnections: sessions})
	small := message(25 << 10)
	big := message(16 << 20)
	for i := range users {
		u := fmt.Sprintf("u%d", i)
		for range messages {
			d.Deliver(b, u, small)
		}
		if i == 0 {
			d.Deliver(b, u, big) // message messages+1
		}
	}

	plain := startProxy(b, "")
	header := startProxy(b, "- {type: header, add: {X-Scanned-By: pop3proxy}}\n", withMaxSize(10<<20))
	splice := spliceRelay(b, d.Addr)
	store := storeForwardRelay(b, d.Addr)
	via := func(addr string) side { return side{addr: addr, login: "u0%" + d.Addr} }
	direct := func(addr string) side { return side{addr: addr, login: "u0"} }
	perUser := func(i int, s side) side {
		s.login = strings.Replace(s.login, "u0", fmt.Sprintf("u%d", i%users), 1)
		return s
	}

	// The scanning rows: the real clamd and spamd (as many children as an
	// installed spamd runs), no cache unless the row is about it.
	clamd := scannertest.StartClamd(b)
	spamd := scannertest.StartSpamdWith(b, scannertest.SpamdOptions{MaxChildren: scannertest.SpamdDefaultMaxChildren})
	scanners := fmt.Sprintf("- {type: clamav, address: %q, max_stream: 1MiB}\n- {type: spamassassin, address: %q}\n",
		clamd.TCPURL(), "tcp://"+spamd.Addr)
	aheadOn := startProxy(b, scanners, withMaxSize(1<<20), withScanAhead(2))
	aheadOff := startProxy(b, scanners, withMaxSize(1<<20))
	cached := startProxy(b, scanners, withMaxSize(1<<20), withScanAhead(2),
		withCache(verdictcache.New(verdictcache.NewMemory(verdictcache.DefaultMaxEntries), verdictcache.Options{})))

	rows := []row{
		{name: "pass-through, 25 kB, vs splice relay", candidate: via(plain), limit: direct(splice), work: sequential(1, messages, 2000), target: 0.95},
		{name: "50 sessions, 25 kB, vs splice relay", candidate: via(plain), limit: direct(splice), work: parallel(sessions, perUser, sequential(1, messages, 100)), target: 0.9},
		{name: "16 MB over max_size, vs splice relay", candidate: via(header), limit: direct(splice), work: sequential(messages+1, 1, 20), target: 0.95},
		{name: "header filter only, 25 kB, vs store-and-forward relay", candidate: via(header), limit: direct(store), work: sequential(1, messages, 2000), target: 0.9},
		// Every run is a first download: neither proxy has a cache.
		{name: "clamd + spamd chain, first download of a mailbox: scan-ahead on vs off", candidate: via(aheadOn), limit: via(aheadOff),
			work: sequential(1, messages, messages), target: 1.4},
		{name: "clamd + spamd chain, the same messages downloaded again (cache) vs header-only path", candidate: via(cached), limit: via(header),
			work: sequential(1, messages, 2000), target: 0.5, warmup: true},
	}
	for i := range rows {
		rows[i].candidate.name, rows[i].limit.name = "proxy", "relay"
	}

	b.ResetTimer()
	var out strings.Builder
	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "path\tproxy msg/s\tlimit msg/s\tratio\ttarget")
	for _, r := range rows {
		if r.warmup {
			r.work(b, r.candidate)
		}
		var cand, lim []float64
		for range rounds {
			cand = append(cand, rate(b, r.work, r.candidate))
			lim = append(lim, rate(b, r.work, r.limit))
		}
		c, l := median(cand), median(lim)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2fx\t>= %.2fx\n", r.name, rateText(c), rateText(l), c/l, r.target)
	}
	tw.Flush()
	if kib, ok := peakRSSKiB(); ok {
		fmt.Fprintf(&out, "peak RSS of the benchmark process (proxies, relays and clients): %d MiB\n", kib>>10)
	}
	fmt.Fprintf(&out, "medians of %d alternating runs; %s, %d CPUs\n", rounds, machine(), numCPU())
	// Printed, not logged: the testing package cuts a benchmark's log after
	// ten lines, and the table is longer.
	fmt.Print(out.String())
}

// rate runs w once against s and returns messages per second.
func rate(b *testing.B, w workload, s side) float64 {
	start := time.Now()
	n := w(b, s)
	return float64(n) / time.Since(start).Seconds()
}

// rateText shows a rate with a decimal where it is small (scanning rows).
func rateText(r float64) string {
	if r < 100 {
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	sort.Float64s(s)
	return s[len(s)/2]
}

// machine names the CPU, for the record.
func machine() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return "unknown CPU"
}

func withMaxSize(n int64) func(*proxy.Options) {
	return func(o *proxy.Options) { o.MaxSize = n }
}

func withScanAhead(n int) func(*proxy.Options) {
	return func(o *proxy.Options) { o.ScanAhead = n }
}

func withCache(c *verdictcache.Cache) func(*proxy.Options) {
	return func(o *proxy.Options) { o.Cache = c }
}

func numCPU() int { return runtime.NumCPU() }
