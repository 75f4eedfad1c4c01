package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/filtertest"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server/pop3servertest"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
	"github.com/pop3proxy/pop3proxy/upstream"
	"github.com/pop3proxy/pop3proxy/upstream/pop3test"
)

// counter is a judge that counts its calls: the tests of the cache and of
// scan-ahead are about which messages are scanned. It removes a forged
// X-Spam-Flag, adds a field and prefixes the Subject (edits of every
// kind), replaces messages with VIRUS in them and rejects those with
// REJECT. With a gate set, it waits for the gate's channel to close
// before it answers for a message containing the gate's text.
type counter struct{}

type gate struct {
	text      string
	ch        chan struct{}
	failFirst atomic.Bool // the first call through the gate fails
}

var (
	counted     atomic.Int32
	countedB    atomic.Int32 // calls for cleanB
	counterGate atomic.Pointer[gate]
)

func (counter) Judge(ctx context.Context, m *filter.Message) (filter.Verdict, error) {
	counted.Add(1)
	b, err := m.Bytes()
	if err != nil {
		return filter.Verdict{}, err
	}
	if strings.Contains(string(b), "body of b") {
		countedB.Add(1)
	}
	if g := counterGate.Load(); g != nil && strings.Contains(string(b), g.text) {
		select {
		case <-g.ch:
		case <-ctx.Done():
			return filter.Verdict{}, ctx.Err()
		}
		if g.failFirst.CompareAndSwap(true, false) {
			return filter.Verdict{}, errors.New("scanner failed")
		}
	}
	switch {
	case strings.Contains(string(b), "VIRUS"):
		return filter.Verdict{Action: filter.Replace, Reason: "virus found",
			Replacement: []byte("Subject: virus removed\r\n\r\nThe message was removed.\r\n")}, nil
	case strings.Contains(string(b), "REJECT"):
		return filter.Verdict{Action: filter.Reject, Reason: "rejected by counter"}, nil
	}
	return filter.Verdict{Edits: []filter.Edit{filter.Remove("X-Spam-Flag"), filter.Add("X-Counted", "yes"), filter.SubjectPrefix("[T] ")}}, nil
}

func init() {
	filter.Register(filter.PluginInfo{Type: "counter", New: func() filter.Plugin { return new(counter) }})
}

// upMsg is a message as a scripted upstream sends it, and as the proxy
// delivers it through the counter.
type upMsg struct {
	uid     string
	lines   []string // without CRLF, not dot-stuffed
	deliver string   // what the client gets ("" for a refusal)
}

func (m upMsg) size() int {
	n := 0
	for _, l := range m.lines {
		n += len(l) + 2
	}
	return n
}

// answer is the upstream's multi-line answer of the message's first
// lines lines of body (-1: all).
func (m upMsg) answer(body int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "S: +OK %d octets\n", m.size())
	inBody := false
	for _, l := range m.lines {
		if inBody {
			if body == 0 {
				break
			}
			body--
		}
		if l == "" {
			inBody = true
		}
		if strings.HasPrefix(l, ".") {
			l = "." + l
		}
		b.WriteString("S: " + l + "\n")
	}
	b.WriteString("S: .\n")
	return b.String()
}

var (
	cleanA = upMsg{uid: "uid-a", lines: []string{"X-Spam-Flag: YES", "Subject: hello", "", ".dotted", "body of a"},
		deliver: "X-Counted: yes\r\nSubject: [T] hello\r\n\r\n.dotted\r\nbody of a\r\n"}
	cleanB = upMsg{uid: "uid-b", lines: []string{"Subject: second", "", "body of b", "more"},
		deliver: "X-Counted: yes\r\nSubject: [T] second\r\n\r\nbody of b\r\nmore\r\n"}
	virusC = upMsg{uid: "uid-c", lines: []string{"Subject: bad", "", "VIRUS inside"},
		deliver: "Subject: virus removed\r\n\r\nThe message was removed.\r\n"}
	rejectD = upMsg{uid: "uid-d", lines: []string{"Subject: no", "", "REJECT me"}}
)

// listings is the UIDL and LIST a session with the cache or scan-ahead
// asks for once.
func listings(msgs ...upMsg) string { return uidlOf(msgs...) + listOf(msgs...) }

func uidlOf(msgs ...upMsg) string {
	var b strings.Builder
	b.WriteString("C: UIDL\nS: +OK\n")
	for i, m := range msgs {
		fmt.Fprintf(&b, "S: %d %s\n", i+1, m.uid)
	}
	b.WriteString("S: .\n")
	return b.String()
}

func listOf(msgs ...upMsg) string {
	var b strings.Builder
	b.WriteString("C: LIST\nS: +OK\n")
	for i, m := range msgs {
		fmt.Fprintf(&b, "S: %d %d\n", i+1, m.size())
	}
	b.WriteString("S: .\n")
	return b.String()
}

// startSpeed serves a gateway with the counter chain and opts (Cache,
// ScanAhead, Spool), counting from zero.
func startSpeed(t *testing.T, opts proxy.Options) string {
	t.Helper()
	counted.Store(0)
	countedB.Store(0)
	opts.Chain = filtertest.MustChain(t, "- type: counter\n")
	opts.Upstream = upstream.Options{DialTimeout: 2 * time.Second, Timeout: 5 * time.Second}
	if opts.MaxSize == 0 {
		opts.MaxSize = 1 << 20
	}
	if opts.ScanKeepalive == 0 {
		opts.ScanKeepalive = time.Minute
	}
	return serve(t, opts)
}

func memoryCache() *verdictcache.Cache {
	return verdictcache.New(verdictcache.NewMemory(1000), verdictcache.Options{})
}

// retr asks for a message and checks the answer: its size line and bytes,
// or the refusal.
func retr(t *testing.T, c *pop3servertest.Client, cmd string, want upMsg) {
	t.Helper()
	if want.deliver == "" {
		c.Cmd(cmd, "-ERR*")
		return
	}
	status := "+OK message follows"
	if strings.HasPrefix(cmd, "RETR") {
		status = fmt.Sprintf("+OK %d octets", len(want.deliver))
	}
	c.Cmd(cmd, status)
	if got := string(c.Multi()); got != want.deliver {
		t.Errorf("%s delivered %q, want %q", cmd, got, want.deliver)
	}
}

func wantCounted(t *testing.T, n int32, when string) {
	t.Helper()
	if got := counted.Load(); got != n {
		t.Errorf("%s: the filter ran %d times, want %d", when, got, n)
	}
}

// TestCacheReplaysInNextSession: a message retrieved again in a later
// session (a client that leaves mail on the server, a second device) is
// delivered byte for byte as the first time, for every outcome (edits, a
// replacement, a refusal), without calling the filter. LIST and STAT then
// give the delivered sizes of cached messages (the replacement's for a
// replaced one, the upstream's for a refused one) and the upstream's for
// the others.
func TestCacheReplaysInNextSession(t *testing.T) {
	msgs := []upMsg{cleanA, cleanB, virusC, rejectD}
	first := loginScript + listings(msgs...) +
		"C: RETR 1\n" + cleanA.answer(-1) + "C: RETR 3\n" + virusC.answer(-1) + "C: RETR 4\n" + rejectD.answer(-1) + "C: QUIT\nS: +OK\n"
	// The client's LIST is the listing the proxy needs; it asks for UIDL
	// only.
	second := loginScript + listOf(msgs...) + uidlOf(msgs...) +
		"C: STAT\nS: +OK 4 " + fmt.Sprint(cleanA.size()+cleanB.size()+virusC.size()+rejectD.size()) + "\n" +
		"C: RETR 1\n" + cleanA.answer(-1) + "C: RETR 3\n" + virusC.answer(-1) + "C: RETR 4\n" + rejectD.answer(-1) + "C: QUIT\nS: +OK\n"
	up := pop3test.NewServer(t, first+"S!next\n"+second)
	gw := startSpeed(t, proxy.Options{Cache: memoryCache()})

	c := login(t, gw, up.Addr())
	retr(t, c, "RETR 1", cleanA)
	retr(t, c, "RETR 3", virusC)
	retr(t, c, "RETR 4", rejectD)
	c.Cmd("QUIT", "+OK*")
	wantCounted(t, 3, "first session")

	c = login(t, gw, up.Addr())
	c.Cmd("LIST", "+OK*")
	want := fmt.Sprintf("1 %d\r\n2 %d\r\n3 %d\r\n4 %d\r\n", len(cleanA.deliver), cleanB.size(), len(virusC.deliver), rejectD.size())
	if got := string(c.Multi()); got != want {
		t.Errorf("LIST = %q, want %q", got, want)
	}
	c.Cmd("STAT", fmt.Sprintf("+OK 4 %d", len(cleanA.deliver)+cleanB.size()+len(virusC.deliver)+rejectD.size()))
	retr(t, c, "RETR 1", cleanA)
	retr(t, c, "RETR 3", virusC)
	retr(t, c, "RETR 4", rejectD)
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	wantCounted(t, 3, "second session")
}

// TestCachedTopSendsTop: with a decision cached, TOP n 0 (Thunderbird's
// headers-only mode) sends the same TOP upstream, not a whole-message
// TOP, and delivers the header with the cached edits, as the normal path
// would. A message whose header is not the one the decision was made for
// takes the normal path: a whole-message TOP and a scan.
func TestCachedTopSendsTop(t *testing.T) {
	changed := upMsg{uid: cleanA.uid, lines: []string{"Subject: other", "", ".dotted", "body of a"},
		deliver: "X-Counted: yes\r\nSubject: [T] other\r\n\r\n"}
	up := pop3test.NewServer(t, loginScript+listings(cleanA, cleanB)+
		"C: TOP 1 99999999\n"+cleanA.answer(-1)+ // not cached yet: whole message
		"C: TOP 1 0\n"+cleanA.answer(0)+
		"C: TOP 1 1\n"+cleanA.answer(1)+
		"C: QUIT\nS: +OK\nS!next\n"+
		loginScript+listings(changed, cleanB)+
		"C: TOP 1 0\n"+changed.answer(0)+ // another header under the same unique-id
		"C: TOP 1 99999999\n"+changed.answer(-1)+
		"C: QUIT\nS: +OK\n")
	gw := startSpeed(t, proxy.Options{Cache: memoryCache()})

	c := login(t, gw, up.Addr())
	c.Cmd("TOP 1 5", "+OK*")
	if got, want := string(c.Multi()), cleanA.deliver; got != want {
		t.Errorf("TOP 1 5 = %q, want %q", got, want)
	}
	wantCounted(t, 1, "first TOP")
	c.Cmd("TOP 1 0", "+OK*")
	if got, want := string(c.Multi()), "X-Counted: yes\r\nSubject: [T] hello\r\n\r\n"; got != want {
		t.Errorf("TOP 1 0 = %q, want %q", got, want)
	}
	c.Cmd("TOP 1 1", "+OK*")
	if got, want := string(c.Multi()), "X-Counted: yes\r\nSubject: [T] hello\r\n\r\n.dotted\r\n"; got != want {
		t.Errorf("TOP 1 1 = %q, want %q", got, want)
	}
	wantCounted(t, 1, "cached TOPs")
	c.Cmd("QUIT", "+OK*")

	c = login(t, gw, up.Addr())
	c.Cmd("TOP 1 0", "+OK*")
	if got := string(c.Multi()); got != changed.deliver {
		t.Errorf("TOP 1 0 of a changed header = %q, want %q", got, changed.deliver)
	}
	wantCounted(t, 2, "changed header")
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
}

// TestCacheNeverMixesUp: a message that changed under the same unique-id,
// and unique-ids that moved to other messages, are scanned again and
// delivered as what they now are; a LIST size that is not the one the
// decision was made for is reported as the upstream's.
func TestCacheNeverMixesUp(t *testing.T) {
	// The second session's upstream gives message 1 the infected content
	// under cleanA's unique-id, and cleanA's content under a new one.
	reusedUID := upMsg{uid: cleanA.uid, lines: virusC.lines, deliver: virusC.deliver}
	movedA := upMsg{uid: "uid-new", lines: cleanA.lines, deliver: cleanA.deliver}
	up := pop3test.NewServer(t, loginScript+listings(cleanA, cleanB)+
		"C: RETR 1\n"+cleanA.answer(-1)+"C: RETR 2\n"+cleanB.answer(-1)+"C: QUIT\nS: +OK\nS!next\n"+
		loginScript+fmt.Sprintf("C: LIST 1\nS: +OK 1 %d\n", reusedUID.size())+listings(reusedUID, movedA)+
		"C: RETR 1\n"+reusedUID.answer(-1)+"C: RETR 2\n"+movedA.answer(-1)+"C: QUIT\nS: +OK\n")
	gw := startSpeed(t, proxy.Options{Cache: memoryCache()})

	c := login(t, gw, up.Addr())
	retr(t, c, "RETR 1", cleanA)
	retr(t, c, "RETR 2", cleanB)
	c.Cmd("QUIT", "+OK*")
	wantCounted(t, 2, "first session")

	c = login(t, gw, up.Addr())
	c.Cmd("LIST 1", fmt.Sprintf("+OK 1 %d", reusedUID.size()))
	retr(t, c, "RETR 1", reusedUID)
	retr(t, c, "RETR 2", movedA)
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	wantCounted(t, 4, "second session")
}

// TestCacheAfterDele: a client that lists unique-ids, deletes the first
// message and then retrieves the last (clients that delete mail after some
// days do) gets the last message's decision cached under its unique-id:
// the listing the proxy merges has the deleted message in its UIDL and not
// in its LIST.
func TestCacheAfterDele(t *testing.T) {
	mk := func(uid, subject string) upMsg {
		return upMsg{uid: uid, lines: []string{"Subject: " + subject, "", "body"},
			deliver: "X-Counted: yes\r\nSubject: [T] " + subject + "\r\n\r\nbody\r\n"}
	}
	msgs := []upMsg{mk("uid-1", "one"), mk("uid-2", "two"), mk("uid-3", "three"), mk("uid-4", "four"), mk("uid-5", "five")}
	afterDele := "C: LIST\nS: +OK\n"
	for i, m := range msgs[1:] {
		afterDele += fmt.Sprintf("S: %d %d\n", i+2, m.size())
	}
	afterDele += "S: .\n"
	up := pop3test.NewServer(t, loginScript+uidlOf(msgs...)+"C: DELE 1\nS: +OK\n"+afterDele+
		"C: RETR 5\n"+msgs[4].answer(-1)+"C: RSET\nS: +OK\nC: QUIT\nS: +OK\nS!next\n"+
		loginScript+listings(msgs...)+"C: RETR 5\n"+msgs[4].answer(-1)+"C: QUIT\nS: +OK\n")
	gw := startSpeed(t, proxy.Options{Cache: memoryCache()})

	c := login(t, gw, up.Addr())
	c.Cmd("UIDL", "+OK*")
	c.Multi()
	c.Cmd("DELE 1", "+OK*")
	retr(t, c, "RETR 5", msgs[4])
	c.Cmd("RSET", "+OK*")
	c.Cmd("QUIT", "+OK*")
	wantCounted(t, 1, "first session")

	c = login(t, gw, up.Addr())
	retr(t, c, "RETR 5", msgs[4])
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	wantCounted(t, 1, "second session")
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestScanAhead: after RETR 1 the upstream gets TOP 2 99999999 before the
// client asks for message 2, and the filter checks message 2 meanwhile;
// the client's RETR 2 is still a RETR upstream, delivered without a second
// scan. Nothing is ever RETRieved or DELEted for scan-ahead (the script
// fails on any command it does not list), a message LIST says is over
// max_size is not fetched ahead, and one the client never asks for is
// dropped with its verdict cached.
func TestScanAhead(t *testing.T) {
	big := upMsg{uid: "uid-big", lines: []string{"Subject: big", "", strings.Repeat("x", 300)}}
	up := pop3test.NewServer(t, loginScript+listings(cleanA, cleanB, big, virusC)+
		"C: RETR 1\n"+cleanA.answer(-1)+
		"C: TOP 2 99999999\n"+cleanB.answer(-1)+
		"C: RETR 2\n"+cleanB.answer(-1)+
		// message 3 is over max_size by LIST: the next one is fetched
		"C: TOP 4 99999999\n"+virusC.answer(-1)+
		"C: QUIT\nS: +OK\nS!next\n"+
		loginScript+listings(cleanA, cleanB, big, virusC)+
		"C: RETR 4\n"+virusC.answer(-1)+"C: QUIT\nS: +OK\n")
	gw := startSpeed(t, proxy.Options{Cache: memoryCache(), ScanAhead: 2, MaxSize: 200})

	c := login(t, gw, up.Addr())
	retr(t, c, "RETR 1", cleanA)
	waitFor(t, "the scan of message 2 before the client asks", func() bool { return counted.Load() == 2 })
	retr(t, c, "RETR 2", cleanB)
	if n := countedB.Load(); n != 1 {
		t.Errorf("message 2 was scanned %d times, want once (ahead)", n)
	}
	waitFor(t, "the scan of message 4", func() bool { return counted.Load() == 3 })
	c.Cmd("QUIT", "+OK*")

	c = login(t, gw, up.Addr())
	retr(t, c, "RETR 4", virusC)
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	wantCounted(t, 3, "message 4 in the next session")
}

// TestScanAheadDownwards: a client that fetches from the last message
// down gets the messages below it fetched ahead.
func TestScanAheadDownwards(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+listings(cleanA, cleanB, virusC)+
		"C: RETR 3\n"+virusC.answer(-1)+ // no message 4: nothing ahead
		"C: RETR 2\n"+cleanB.answer(-1)+
		"C: TOP 1 99999999\n"+cleanA.answer(-1)+
		"C: RETR 1\n"+cleanA.answer(-1)+"C: QUIT\nS: +OK\n")
	gw := startSpeed(t, proxy.Options{ScanAhead: 1})
	c := login(t, gw, up.Addr())
	retr(t, c, "RETR 3", virusC)
	retr(t, c, "RETR 2", cleanB)
	waitFor(t, "the scan of message 1", func() bool { return counted.Load() == 3 })
	retr(t, c, "RETR 1", cleanA)
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	wantCounted(t, 3, "RETR 1 after its scan-ahead")
}

// leakedGoroutines returns the stacks of goroutines still running code of
// a proxy session or of the filter chain.
func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	var out []string
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "pop3proxy/proxy.(*session)") || strings.Contains(g, "pop3proxy/filter.") {
			out = append(out, g)
		}
	}
	return out
}

// noLeaks waits until the session is gone: no goroutine of it left, and
// the spool holds nothing.
func noLeaks(t *testing.T, sp *spool.Spool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		leaked := leakedGoroutines()
		st := sp.Stats()
		if len(leaked) == 0 && st.MemoryUsed == 0 && st.FilesOpen == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the session: spool %+v, goroutines left:\n%s", st, strings.Join(leaked, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestScanAheadEndsWithSession: a scan-ahead whose scan is still running
// when the client QUITs or disconnects leaves nothing behind: its
// goroutine ends, its buffer goes back to the spool, and QUIT is answered
// without waiting for the scan.
func TestScanAheadEndsWithSession(t *testing.T) {
	for _, quit := range []bool{true, false} {
		t.Run(fmt.Sprintf("quit=%v", quit), func(t *testing.T) {
			sp, err := spool.New(spool.Options{Memory: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			script := loginScript + listings(cleanA, cleanB) +
				"C: RETR 1\n" + cleanA.answer(-1) + "C: TOP 2 99999999\n" + cleanB.answer(-1)
			if quit {
				script += "C: QUIT\nS: +OK\n"
			}
			up := pop3test.NewServer(t, script)
			gw := startSpeed(t, proxy.Options{Cache: memoryCache(), ScanAhead: 1, Spool: sp})
			counterGate.Store(&gate{text: "body of b", ch: make(chan struct{})}) // message 2's scan hangs
			defer counterGate.Store(nil)
			c := login(t, gw, up.Addr())
			retr(t, c, "RETR 1", cleanA)
			waitFor(t, "the scan of message 2", func() bool { return counted.Load() == 2 })
			if sp.Stats().MemoryUsed == 0 {
				t.Error("message 2 is not held while it is scanned ahead")
			}
			if quit {
				c.Cmd("QUIT", "+OK*")
			} else {
				c.Conn.Close()
			}
			up.Wait(t)
			noLeaks(t, sp)
		})
	}
}

// TestScanAheadJoinsScan: the client's RETR of a message whose scan-ahead
// is still being scanned waits for that scan instead of starting another.
func TestScanAheadJoinsScan(t *testing.T) {
	up := pop3test.NewServer(t, loginScript+listings(cleanA, cleanB)+
		"C: RETR 1\n"+cleanA.answer(-1)+"C: TOP 2 99999999\n"+cleanB.answer(-1)+
		"C: RETR 2\n"+cleanB.answer(-1)+"C: QUIT\nS: +OK\n")
	gw := startSpeed(t, proxy.Options{ScanAhead: 1})
	g := &gate{text: "body of b", ch: make(chan struct{})}
	counterGate.Store(g)
	defer counterGate.Store(nil)
	c := login(t, gw, up.Addr())
	retr(t, c, "RETR 1", cleanA)
	waitFor(t, "the scan of message 2", func() bool { return counted.Load() == 2 })
	go func() {
		time.Sleep(100 * time.Millisecond)
		close(g.ch)
	}()
	retr(t, c, "RETR 2", cleanB)
	c.Cmd("QUIT", "+OK*")
	up.Wait(t)
	wantCounted(t, 2, "RETR 2 during its scan-ahead")
}

// TestTwoSessionsScanOnce: with the cache on, a message retrieved by two
// sessions at once (two devices) is scanned once: the second waits for
// the first's decision. If the first scan fails, the second session scans
// the message itself.
func TestTwoSessionsScanOnce(t *testing.T) {
	session := loginScript + listings(cleanA, cleanB) + "C: RETR 2\n" + cleanB.answer(-1) + "C: QUIT\nS: +OK\n"
	for _, firstFails := range []bool{false, true} {
		t.Run(fmt.Sprintf("first scan fails %v", firstFails), func(t *testing.T) {
			up := pop3test.NewServer(t, session+"S!next\n"+session)
			gw := startSpeed(t, proxy.Options{Cache: memoryCache()})
			g := &gate{text: "body of b", ch: make(chan struct{})}
			g.failFirst.Store(firstFails)
			counterGate.Store(g)
			defer counterGate.Store(nil)

			a := login(t, gw, up.Addr())
			a.Send("RETR 2\r\n")
			waitFor(t, "the first session's scan", func() bool { return counted.Load() == 1 })
			b := login(t, gw, up.Addr())
			done := make(chan struct{})
			go func() {
				defer close(done)
				retr(t, b, "RETR 2", cleanB)
			}()
			time.Sleep(200 * time.Millisecond) // b waits for a's scan
			if n := counted.Load(); n != 1 {
				t.Errorf("the second session scanned at once (%d scans)", n)
			}
			close(g.ch)
			if firstFails {
				a.Expect("-ERR [SYS/TEMP]*")
			} else {
				a.Expect(fmt.Sprintf("+OK %d octets", len(cleanB.deliver)))
				if got := string(a.Multi()); got != cleanB.deliver {
					t.Errorf("first session got %q", got)
				}
			}
			<-done
			a.Cmd("QUIT", "+OK*")
			b.Cmd("QUIT", "+OK*")
			up.Wait(t)
			want := int32(1)
			if firstFails {
				want = 2
			}
			wantCounted(t, want, "two sessions at once")
		})
	}
}

// TestScanAheadSkips: no message the client deleted is fetched ahead, nor
// any while the memory budget has no room for it (scan-ahead never
// spools to disk); the client's own RETR is unaffected.
func TestScanAheadSkips(t *testing.T) {
	t.Run("deleted", func(t *testing.T) {
		up := pop3test.NewServer(t, loginScript+
			"C: DELE 3\nS: +OK\n"+listings(cleanA, cleanB, virusC, rejectD)+
			"C: RETR 2\n"+cleanB.answer(-1)+
			"C: TOP 4 99999999\n"+rejectD.answer(-1)+ // not 3
			"C: QUIT\nS: +OK\n")
		c := login(t, startSpeed(t, proxy.Options{ScanAhead: 2}), up.Addr())
		c.Cmd("DELE 3", "+OK*")
		retr(t, c, "RETR 2", cleanB)
		waitFor(t, "the scan of message 4", func() bool { return counted.Load() == 2 })
		c.Cmd("QUIT", "+OK*")
		up.Wait(t)
	})
	t.Run("no memory", func(t *testing.T) {
		sp, err := spool.New(spool.Options{Memory: 0, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer sp.Close()
		up := pop3test.NewServer(t, loginScript+listings(cleanA, cleanB)+
			"C: RETR 1\n"+cleanA.answer(-1)+"C: RETR 2\n"+cleanB.answer(-1)+"C: QUIT\nS: +OK\n")
		c := login(t, startSpeed(t, proxy.Options{ScanAhead: 2, Spool: sp}), up.Addr())
		retr(t, c, "RETR 1", cleanA)
		retr(t, c, "RETR 2", cleanB)
		c.Cmd("QUIT", "+OK*")
		up.Wait(t)
		wantCounted(t, 2, "without scan-ahead")
	})
	// An upstream that refuses TOP, or sends more than its LIST said, gets
	// no more scan-ahead in the session: the script has no further TOP.
	t.Run("TOP refused", func(t *testing.T) {
		up := pop3test.NewServer(t, loginScript+listings(cleanA, cleanB, virusC)+
			"C: RETR 1\n"+cleanA.answer(-1)+"C: TOP 2 99999999\nS: -ERR no TOP here\n"+
			"C: RETR 2\n"+cleanB.answer(-1)+"C: RETR 3\n"+virusC.answer(-1)+"C: QUIT\nS: +OK\n")
		c := login(t, startSpeed(t, proxy.Options{ScanAhead: 1}), up.Addr())
		retr(t, c, "RETR 1", cleanA)
		retr(t, c, "RETR 2", cleanB)
		retr(t, c, "RETR 3", virusC)
		c.Cmd("QUIT", "+OK*")
		up.Wait(t)
	})
	t.Run("LIST understated", func(t *testing.T) {
		long := upMsg{uid: "uid-long", lines: []string{"Subject: long", "", strings.Repeat("x", 200)}}
		list := fmt.Sprintf("C: LIST\nS: +OK\nS: 1 %d\nS: 2 20\nS: 3 %d\nS: 4 %d\nS: .\n", cleanA.size(), virusC.size(), cleanB.size())
		up := pop3test.NewServer(t, loginScript+uidlOf(cleanA, long, virusC, cleanB)+list+
			"C: RETR 1\n"+cleanA.answer(-1)+"C: TOP 2 99999999\n"+long.answer(-1)+
			"C: RETR 3\n"+virusC.answer(-1)+"C: QUIT\nS: +OK\n")
		c := login(t, startSpeed(t, proxy.Options{ScanAhead: 1, MaxSize: 100}), up.Addr())
		retr(t, c, "RETR 1", cleanA)
		retr(t, c, "RETR 3", virusC)
		c.Cmd("QUIT", "+OK*")
		up.Wait(t)
	})
}
