package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// DefaultScanKeepalive is how long a client waits in silence for a scan
// before the keepalive starts: well under Outlook's one-minute timeout
// (docs/clients.md, Outlook).
const DefaultScanKeepalive = 20 * time.Second

// wholeMessage is the TOP line count that fetches a whole message (as
// fetchmail does): any message under max_size has fewer lines.
const wholeMessage = 99999999

// keepaliveField and keepaliveTick are what a keepalive sends (see keepalive).
const (
	keepaliveField = "X-Pop3proxy-Scan: slow scan, kept alive\r\n"
	keepaliveTick  = "\t.\r\n"
)

// Stats counts what the filter chain did, for logs and metrics.
type Stats struct {
	Scanned    atomic.Int64 // messages that went through the chain
	Oversize   atomic.Int64 // messages over max_size, handled by the oversize policy
	TempFailed atomic.Int64 // answered -ERR [SYS/TEMP] (or dropped after a keepalive)
	Refused    atomic.Int64 // answered -ERR by a verdict, on_error: reject or oversize: reject
	Replaced   atomic.Int64 // delivered as a replacement (virus notice)
	KeptAlive  atomic.Int64 // scans slow enough to start the keepalive
	Replayed   atomic.Int64 // delivered, unscanned, with an earlier decision for the same bytes
	Prefetched atomic.Int64 // downloaded and checked ahead of the client (scan-ahead)
}

// filtered delivers all of a message (topLines < 0, RETR) or its header
// and topLines body lines (TOP). Whether it is too large to be checked is
// decided on the bytes, never on the upstream's claim (Exchange lists
// estimates). hold is released once the message is downloaded, or when a
// body still reading from the upstream is closed.
func (s *session) filtered(ctx context.Context, msg int, m *upstream.Message, topLines int, hold *upHold) (*pop3server.Message, error) {
	if topLines < 0 && m.Size > s.g.opts.MaxSize && s.g.opts.Oversize != filter.OversizeReject && s.g.sizesTrusted(s.client.Addr()) {
		return s.oversizeAhead(msg, m, hold), nil
	}
	return s.scan(ctx, msg, m, topLines, hold)
}

// oversizeAhead streams a RETR answer the upstream says is over MaxSize
// without holding its first MaxSize bytes: that cost about a fifth of a
// large message's relay time. If the message turns out no larger than
// MaxSize, it should have been scanned: the answer ends without its dot
// (the client keeps nothing and retries) and this upstream's sizes are
// not trusted for distrustFor.
func (s *session) oversizeAhead(msg int, m *upstream.Message, hold *upHold) *pop3server.Message {
	s.noteOversize()
	max := s.g.opts.MaxSize
	s.log.Info("message over max_size", zap.Int("msg", msg), zap.Int64("claimed_size", m.Size),
		zap.Int64("max_size", max), zap.Stringer("oversize", s.g.opts.Oversize))
	check := &atLeast{r: m, min: max + 1, onShort: func(n int64) error {
		s.g.distrustSizes(s.client.Addr())
		s.log.Warn("message claimed over max_size but was not; answer left unterminated so the client retries, and this upstream's sizes are no longer trusted",
			zap.Int("msg", msg), zap.Int64("claimed_size", m.Size), zap.Int64("size", n))
		return fmt.Errorf("message %d: claimed %d octets, sent %d", msg, m.Size, n)
	}}
	return &pop3server.Message{Size: -1, Body: readCloser{
		Reader: io.MultiReader(bytes.NewReader(s.oversizeMark(m.Size)), check),
		Closer: closers{m, hold},
	}}
}

func (s *session) noteOversize() {
	s.g.stats.Oversize.Add(1)
	s.tally.oversize++
	if o := s.g.opts.Observer; o != nil {
		o.Oversize()
	}
}

// oversizeMark is the field of oversize: tag, or nothing.
func (s *session) oversizeMark(claimed int64) []byte {
	if s.g.opts.Oversize != filter.OversizeTag {
		return nil
	}
	max := s.g.opts.MaxSize
	size := "over max_size"
	if claimed > max {
		size = strconv.FormatInt(claimed, 10) + " octets"
	}
	return []byte(fmt.Sprintf("%s: too large (%s, max_size %d)\r\n", filter.UnscannedField, size, max))
}

// atLeast fails at r's end if r yielded fewer than min bytes.
type atLeast struct {
	r       io.Reader
	min, n  int64
	onShort func(n int64) error
}

func (a *atLeast) Read(p []byte) (int, error) {
	k, err := a.r.Read(p)
	a.n += int64(k)
	if err == io.EOF && a.n < a.min {
		return k, a.onShort(a.n)
	}
	return k, err
}

// scan downloads and filters in the session's own goroutine: a goroutine
// and a channel per message cost a third of the CPU of a header-only
// chain (scheduler and futex work, measured with perf), so only the
// keepalive timer's rare firing runs elsewhere.
func (s *session) scan(ctx context.Context, msg int, m *upstream.Message, topLines int, hold *upHold) (*pop3server.Message, error) {
	ka := s.startKeepalive(ctx, msg)
	out, err := s.download(ctx, msg, m, topLines, ka, hold)
	if ka.stop() && err != nil {
		s.log.Warn("message not delivered after keepalive; connection dropped so the client retries",
			zap.Int("msg", msg), zap.Error(err))
	}
	return out, err
}

// keepalive: after scan_keepalive the client gets "+OK" and a header
// field, then a folded continuation line every interval (whole lines:
// docs/clients.md, Outlook), so whatever the verdict it has the start of a
// valid header (RFC 5322 §2.2.3). Once the upstream is free, each tick
// also sends NOOP there, as upstreams drop silent sessions
// (docs/clients.md, Upstream servers).
type keepalive struct {
	s   *session
	in  *pop3server.Interim // nil: nobody to keep waiting
	msg int

	mu      sync.Mutex
	timer   *time.Timer
	ticks   int
	free    bool // the session goroutine no longer uses the upstream connection
	stopped bool
}

func (s *session) startKeepalive(ctx context.Context, msg int) *keepalive {
	ka := &keepalive{s: s, in: pop3server.InterimFrom(ctx), msg: msg}
	if ka.in != nil {
		ka.mu.Lock() // tick reads timer
		ka.timer = time.AfterFunc(s.g.keepalive(), ka.tick)
		ka.mu.Unlock()
	}
	return ka
}

func (ka *keepalive) tick() {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	if ka.stopped {
		return
	}
	p := keepaliveTick
	switch {
	case ka.ticks == 0:
		p = keepaliveField
		ka.s.g.stats.KeptAlive.Add(1)
		ka.s.log.Info("slow download or scan, keeping the client alive", zap.Int("msg", ka.msg))
	case ka.free && ka.s.up.tryLock():
		// The upstream has been silent for a whole interval by now (a
		// scan-ahead download holding it is traffic enough).
		if err := ka.s.client.Noop(); err != nil {
			ka.s.log.Warn("upstream NOOP during slow scan failed", zap.Error(err))
		}
		ka.s.up.unlock()
	}
	ka.ticks++
	if err := ka.in.Send([]byte(p)); err != nil {
		return // the client is gone, or the answer has begun anyway
	}
	ka.timer.Reset(ka.s.g.keepalive())
}

// upstreamFree allows NOOPs: the session goroutine will not use the
// upstream connection again before stop.
func (ka *keepalive) upstreamFree() {
	ka.mu.Lock()
	ka.free = true
	ka.mu.Unlock()
}

// stop ends the keepalive, waiting for a tick in progress, and reports
// whether it had begun the answer.
func (ka *keepalive) stop() bool {
	if ka.timer == nil {
		return false
	}
	ka.mu.Lock()
	defer ka.mu.Unlock()
	ka.stopped = true
	ka.timer.Stop()
	return ka.ticks > 0
}

// download spools the message and filters it (or applies the oversize
// policy). Once the message is in, the upstream is free: scan-ahead
// downloads queued now come before the client's next command, and the
// keepalive may send NOOP.
func (s *session) download(ctx context.Context, msg int, m *upstream.Message, topLines int, ka *keepalive, hold *upHold) (*pop3server.Message, error) {
	max := s.g.opts.MaxSize
	hint := int64(0)
	if m.Size > 0 && m.Size <= max {
		hint = m.Size
	}
	buf := s.g.spool.NewBuffer(hint)
	start := time.Now()
	var src io.Reader = io.LimitReader(m, max+1)
	h := sha256.New()
	if s.speedups() {
		src = io.TeeReader(src, h)
	}
	n, err := buf.ReadFrom(src)
	if err != nil {
		buf.Close()
		m.Close()
		hold.Close()
		if errors.Is(err, spool.ErrWrite) {
			s.log.Error("message cannot be spooled", zap.Int("msg", msg), zap.Error(err))
			s.tempFailed()
			return nil, &pop3server.Error{Code: "SYS/TEMP", Message: tempfailText, Err: err, Disconnect: true}
		}
		return nil, relayError(err)
	}
	if n > max {
		return s.oversize(msg, m, buf, topLines, hold)
	}
	m.Close()
	var ahead *prefetch
	if s.speedups() {
		ahead = s.takeAhead(msg)
		if topLines < 0 || topLines >= wholeMessage {
			s.scheduleAhead(msg)
		}
	}
	hold.Close()
	ka.upstreamFree()
	if o := s.g.opts.Observer; o != nil {
		o.Downloaded(time.Since(start))
	}
	fm := filter.NewMessageAt(buf, n, s.meta(msg))
	if !s.speedups() {
		s.g.stats.Scanned.Add(1)
		return s.result(msg, s.g.opts.Chain.Run(ctx, fm), buf, topLines)
	}
	return s.result(msg, s.decide(ctx, fm, digestOf(h), ahead), buf, topLines)
}

// tempfailText answers a message the proxy itself cannot handle for now.
const tempfailText = "message cannot be checked right now, try again later"

// oversize applies the oversize policy to a message that went past
// MaxSize: buf holds its first MaxSize+1 bytes, m the rest.
func (s *session) oversize(msg int, m *upstream.Message, buf *spool.Buffer, topLines int, hold *upHold) (*pop3server.Message, error) {
	s.noteOversize()
	max := s.g.opts.MaxSize
	s.log.Info("message over max_size", zap.Int("msg", msg), zap.Int64("claimed_size", m.Size),
		zap.Int64("max_size", max), zap.Stringer("oversize", s.g.opts.Oversize))
	if s.g.opts.Oversize == filter.OversizeReject {
		buf.Close()
		// The rest must be read, or the connection is out of step.
		_, err := io.Copy(io.Discard, m)
		m.Close()
		hold.Close()
		if err != nil {
			return nil, relayError(err)
		}
		s.g.stats.Refused.Add(1)
		return nil, &pop3server.Error{Message: "message too large to be checked (over max_size)",
			Err: fmt.Errorf("message %d over max_size %d (oversize: reject)", msg, max)}
	}
	body := readCloser{
		Reader: io.MultiReader(bytes.NewReader(s.oversizeMark(m.Size)), buf.Open(), m),
		Closer: closers{m, buf, hold},
	}
	return unscanned(body, topLines, -1), nil
}

func unscanned(body io.ReadCloser, topLines int, size int64) *pop3server.Message {
	if topLines < 0 {
		return &pop3server.Message{Size: size, Body: body}
	}
	// Read the whole message so that the connection stays in step.
	return &pop3server.Message{Size: -1, Body: pop3server.NewTopReader(drainOnClose{body}, topLines)}
}

// result turns the chain's decision into the RETR or TOP answer, releasing
// the buffers when the client has the message, or at once.
func (s *session) result(msg int, res *filter.Result, buf *spool.Buffer, topLines int) (*pop3server.Message, error) {
	release := closers{res, buf}
	if res.Replayed {
		s.g.stats.Replayed.Add(1)
		s.tally.replayed++
		if o, ok := s.g.opts.Observer.(SpeedObserver); ok {
			o.Replayed()
		}
		if res.Outcome != filter.Deliver || res.Filter != "" {
			s.log.Info("cached verdict", zap.Int("msg", msg), zap.Stringer("outcome", res.Outcome),
				zap.String("filter", res.Filter), zap.String("reason", res.Reason))
		}
	}
	switch res.Outcome {
	case filter.Deliver:
		if res.Filter != "" {
			s.g.stats.Replaced.Add(1)
			s.tally.replaced++
		} else {
			s.tally.delivered++
		}
		body := readCloser{res.Message.Open(), release}
		if topLines >= 0 {
			return &pop3server.Message{Size: -1, Body: pop3server.NewTopReader(body, topLines)}, nil
		}
		// The size sent, not the upstream's (docs/clients.md, Thunderbird).
		return &pop3server.Message{Size: res.Message.Size(), Body: body}, nil
	case filter.Refuse:
		release.Close()
		s.g.stats.Refused.Add(1)
		s.tally.refused++
		return nil, &pop3server.Error{Message: res.Reason, Err: errors.New("refused by filter " + res.Filter)}
	default:
		release.Close()
		s.tempFailed()
		return nil, &pop3server.Error{Code: "SYS/TEMP", Message: res.Reason, Err: errors.New("filter " + res.Filter + " failed")}
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// closers closes each of its elements, in order.
type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// drainOnClose reads to the end before closing, when only a part is sent on.
type drainOnClose struct{ io.ReadCloser }

func (d drainOnClose) Close() error {
	_, err := io.Copy(io.Discard, d.ReadCloser)
	if cerr := d.ReadCloser.Close(); err == nil {
		err = cerr
	}
	return err
}

// tempFailed counts a -ERR [SYS/TEMP]; it runs in the connection's goroutine.
func (s *session) tempFailed() {
	s.g.stats.TempFailed.Add(1)
	s.tally.tempfail++
	if o := s.g.opts.Observer; o != nil {
		o.TempFailed()
	}
}
