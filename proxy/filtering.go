package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
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

// keepaliveField starts the header field that keeps a client waiting for a
// slow scan; each tick adds a folded continuation line, so whatever the
// verdict, the client has the start of a valid header (RFC 5322 §2.2.3).
// Whole lines, not single bytes: docs/clients.md, Outlook.
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
}

// filtered passes a message being received through the chain and delivers
// all of it (topLines < 0, RETR) or its header and topLines body lines
// (TOP). Whether it is too large to be checked is decided on the bytes
// that arrive, never on the size the upstream claims, which only sizes
// the buffer (Exchange, for one, lists estimates).
func (s *session) filtered(ctx context.Context, msg int, m *upstream.Message, topLines int) (*pop3server.Message, error) {
	return s.scan(ctx, msg, m, topLines)
}

// outcome is what the scan goroutine hands back: the chain's result with
// the buffer it read, or a message to stream unscanned, or a refusal or
// upstream failure.
type outcome struct {
	res       *filter.Result
	buf       *spool.Buffer
	unscanned *pop3server.Message
	err       error
	oversize  bool // over MaxSize: unscanned, or err for oversize: reject
	tempfail  bool // err is a temporary failure of the proxy's own
}

// scan downloads the message and runs the chain in a goroutine, so that the
// keepalive clock covers a slow download as well as a slow scan: if neither
// ends within the interval, the client gets a slowScan. Until the download
// has finished, the goroutine alone uses the upstream connection.
func (s *session) scan(ctx context.Context, msg int, m *upstream.Message, topLines int) (*pop3server.Message, error) {
	scanCtx, cancel := context.WithCancel(ctx)
	outcomes := make(chan outcome, 1)
	downloaded := make(chan struct{})
	go func() { outcomes <- s.download(scanCtx, msg, m, topLines, downloaded) }()

	timer := time.NewTimer(s.g.keepalive())
	defer timer.Stop()
	select {
	case o := <-outcomes:
		cancel()
		return s.deliver(msg, o, topLines)
	case <-timer.C:
		s.g.stats.KeptAlive.Add(1)
		s.log.Info("slow download or scan, keeping the client alive", zap.Int("msg", msg))
		return &pop3server.Message{Size: -1, Progressive: true, Body: &slowScan{
			s: s, msg: msg, outcomes: outcomes, downloaded: downloaded, cancel: cancel, topLines: topLines,
			pending: []byte(keepaliveField),
		}}, nil
	}
}

// download spools the message and filters it. One larger than MaxSize is
// handled by the oversize policy instead.
func (s *session) download(ctx context.Context, msg int, m *upstream.Message, topLines int, downloaded chan<- struct{}) outcome {
	max := s.g.opts.MaxSize
	hint := int64(0)
	if m.Size > 0 && m.Size <= max {
		hint = m.Size
	}
	buf := s.g.spool.NewBuffer(hint)
	start := time.Now()
	n, err := buf.ReadFrom(io.LimitReader(m, max+1))
	if err == nil {
		err = buf.Err()
	}
	if err != nil {
		buf.Close()
		m.Close()
		close(downloaded)
		if errors.Is(err, spool.ErrWrite) {
			s.log.Error("message cannot be spooled", zap.Int("msg", msg), zap.Error(err))
			return outcome{err: &pop3server.Error{Code: "SYS/TEMP", Message: tempfailText, Err: err, Disconnect: true}, tempfail: true}
		}
		return outcome{err: relayError(err)}
	}
	if n > max {
		return s.oversize(msg, m, buf, topLines, downloaded)
	}
	m.Close()
	close(downloaded)
	if o := s.g.opts.Observer; o != nil {
		o.Downloaded(time.Since(start))
	}
	s.g.stats.Scanned.Add(1)
	meta := filter.Meta{Conn: s.conn, User: s.user, Upstream: s.client.Addr(), Number: msg}
	return outcome{res: s.g.opts.Chain.Run(ctx, filter.NewMessageAt(buf, n, meta)), buf: buf}
}

// tempfailText is the client's answer when the proxy itself cannot handle
// a message for now.
const tempfailText = "message cannot be checked right now, try again later"

// oversize applies the oversize policy to a message that went past
// MaxSize: buf holds its first MaxSize+1 bytes, m the rest.
func (s *session) oversize(msg int, m *upstream.Message, buf *spool.Buffer, topLines int, downloaded chan<- struct{}) outcome {
	s.g.stats.Oversize.Add(1)
	if o := s.g.opts.Observer; o != nil {
		o.Oversize()
	}
	max := s.g.opts.MaxSize
	s.log.Info("message over max_size", zap.Int("msg", msg), zap.Int64("claimed_size", m.Size),
		zap.Int64("max_size", max), zap.Stringer("oversize", s.g.opts.Oversize))
	if s.g.opts.Oversize == filter.OversizeReject {
		buf.Close()
		// The rest must be read, or the connection is out of step.
		_, err := io.Copy(io.Discard, m)
		m.Close()
		close(downloaded)
		if err != nil {
			return outcome{err: relayError(err)}
		}
		s.g.stats.Refused.Add(1)
		return outcome{err: &pop3server.Error{Message: "message too large to be checked (over max_size)",
			Err: fmt.Errorf("message %d over max_size %d (oversize: reject)", msg, max)}, oversize: true}
	}
	var prefix []byte
	if s.g.opts.Oversize == filter.OversizeTag {
		size := "over max_size"
		if m.Size > max {
			size = strconv.FormatInt(m.Size, 10) + " octets"
		}
		prefix = []byte(fmt.Sprintf("%s: too large (%s, max_size %d)\r\n", filter.UnscannedField, size, max))
	}
	body := readCloser{
		Reader: io.MultiReader(bytes.NewReader(prefix), buf.Open(), m),
		Closer: closers{m, buf, closeFunc(func() error { close(downloaded); return nil })},
	}
	return outcome{unscanned: unscanned(body, topLines, -1), oversize: true}
}

// unscanned delivers a message that is not filtered.
func unscanned(body io.ReadCloser, topLines int, size int64) *pop3server.Message {
	if topLines < 0 {
		return &pop3server.Message{Size: size, Body: body}
	}
	// Read the whole message so that the connection stays in step.
	return &pop3server.Message{Size: -1, Body: pop3server.NewTopReader(drainOnClose{body}, topLines)}
}

// release frees what an outcome holds, for one nobody delivers.
func (o outcome) release() {
	if o.res != nil {
		o.res.Close()
	}
	if o.buf != nil {
		o.buf.Close()
	}
	if o.unscanned != nil {
		o.unscanned.Body.Close()
	}
}

// deliver turns an outcome into the RETR or TOP answer.
func (s *session) deliver(msg int, o outcome, topLines int) (*pop3server.Message, error) {
	switch {
	case o.oversize:
		s.tally.oversize++
	case o.tempfail:
		s.tempFailed()
	}
	switch {
	case o.err != nil:
		return nil, o.err
	case o.unscanned != nil:
		return o.unscanned, nil
	}
	return s.result(msg, o.res, o.buf, topLines)
}

// result turns the chain's decision into the RETR or TOP answer. The
// buffers are released when the client has the message, or at once.
func (s *session) result(msg int, res *filter.Result, buf *spool.Buffer, topLines int) (*pop3server.Message, error) {
	release := closers{res, buf}
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
		// The size of what is sent, not the upstream's (docs/clients.md,
		// Thunderbird).
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

// slowScan is the body of a RETR or TOP answered before its scan finished:
// the keepalive field, a continuation line (and a NOOP upstream, as
// upstreams drop idle sessions: docs/clients.md, Upstream servers) every
// interval, then the filtered message. If the chain refuses or fails it,
// Read returns an error, so the server closes the connection before the
// terminating dot and the message stays on the server.
type slowScan struct {
	s          *session
	msg        int
	outcomes   <-chan outcome
	downloaded <-chan struct{} // closed once the upstream connection is free
	cancel     context.CancelFunc
	topLines   int
	pending    []byte
	rest       io.Reader
	restCloser io.Closer
	received   bool // the outcome has been taken from outcomes
}

func (b *slowScan) Read(p []byte) (int, error) {
	for len(b.pending) == 0 {
		if b.rest != nil {
			return b.rest.Read(p)
		}
		ticker := time.NewTimer(b.s.g.keepalive())
		select {
		case o := <-b.outcomes:
			ticker.Stop()
			b.received = true
			m, err := b.s.deliver(b.msg, o, b.topLines)
			if err != nil {
				b.s.log.Warn("message not delivered after keepalive; connection dropped so the client retries",
					zap.Int("msg", b.msg), zap.Error(err))
				return 0, err
			}
			b.rest, b.restCloser = m.Body, m.Body
		case <-ticker.C:
			// No NOOP while the download still uses the connection.
			select {
			case <-b.downloaded:
				if err := b.s.client.Noop(); err != nil {
					b.s.log.Warn("upstream NOOP during slow scan failed", zap.Error(err))
				}
			default:
			}
			b.pending = []byte(keepaliveTick)
		}
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

func (b *slowScan) Close() error {
	b.cancel()
	if b.restCloser != nil {
		return b.restCloser.Close()
	}
	if !b.received {
		// The client left first; what the scan holds is freed when it ends.
		go func() { o := <-b.outcomes; o.release() }()
	}
	return nil
}

// readCloser joins a reader with the closer of what it reads from.
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

type closeFunc func() error

func (f closeFunc) Close() error { return f() }

// drainOnClose reads its body to the end before closing it, for upstream
// responses of which only a part is sent on.
type drainOnClose struct{ io.ReadCloser }

func (d drainOnClose) Close() error {
	_, err := io.Copy(io.Discard, d.ReadCloser)
	if cerr := d.ReadCloser.Close(); err == nil {
		err = cerr
	}
	return err
}

// tempFailed counts a message answered -ERR [SYS/TEMP] because it could
// not be checked now. It runs in the connection's goroutine.
func (s *session) tempFailed() {
	s.g.stats.TempFailed.Add(1)
	s.tally.tempfail++
	if o := s.g.opts.Observer; o != nil {
		o.TempFailed()
	}
}
