package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
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
	Skipped    atomic.Int64 // messages over max_size, delivered unscanned
	TempFailed atomic.Int64 // answered -ERR [SYS/TEMP] (or dropped after a keepalive)
	Refused    atomic.Int64 // answered -ERR by a verdict or on_error: reject
	Replaced   atomic.Int64 // delivered as a replacement (virus notice)
	KeptAlive  atomic.Int64 // scans slow enough to start the keepalive
}

// filtered passes a message being received through the chain and delivers
// all of it (topLines < 0, RETR) or its header and topLines body lines (TOP).
func (s *session) filtered(ctx context.Context, msg int, m *upstream.Message, topLines int) (*pop3server.Message, error) {
	max := s.g.opts.MaxSize
	if m.Size > max {
		s.skipped(msg, m.Size)
		return unscanned(m, topLines, m.Size), nil
	}
	return s.scan(ctx, msg, m, topLines)
}

func unscanned(body io.ReadCloser, topLines int, size int64) *pop3server.Message {
	if topLines < 0 {
		return &pop3server.Message{Size: size, Body: body}
	}
	// Read the whole message so that the connection stays in step.
	return &pop3server.Message{Size: -1, Body: pop3server.NewTopReader(drainOnClose{body}, topLines)}
}

func (s *session) skipped(msg int, size int64) {
	s.g.stats.Skipped.Add(1)
	s.log.Info("message over max_size delivered unscanned", zap.Int("msg", msg), zap.Int64("size", size),
		zap.Int64("max_size", s.g.opts.MaxSize))
}

// outcome is what the scan goroutine hands back: the chain's result, or a
// message to stream unscanned, or an upstream failure.
type outcome struct {
	res       filter.Result
	unscanned *pop3server.Message
	err       error
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

// download buffers the message and filters it. One that turns out larger
// than MaxSize (the upstream announced no size, or a wrong one) is handed
// back to stream, the buffered part first.
func (s *session) download(ctx context.Context, msg int, m *upstream.Message, topLines int, downloaded chan<- struct{}) outcome {
	max := s.g.opts.MaxSize
	var buf bytes.Buffer
	if m.Size > 0 {
		buf.Grow(int(m.Size))
	}
	n, err := io.Copy(&buf, io.LimitReader(m, max+1))
	if err != nil {
		m.Close()
		close(downloaded)
		return outcome{err: relayError(err)}
	}
	if n > max {
		s.skipped(msg, n)
		return outcome{unscanned: unscanned(readCloser{io.MultiReader(&buf, m), m}, topLines, -1)}
	}
	m.Close()
	close(downloaded)
	s.g.stats.Scanned.Add(1)
	meta := filter.Meta{User: s.user, Upstream: s.client.Addr(), Number: msg}
	return outcome{res: s.g.opts.Chain.Run(ctx, filter.NewMessage(buf.Bytes(), meta))}
}

// deliver turns an outcome into the RETR or TOP answer.
func (s *session) deliver(msg int, o outcome, topLines int) (*pop3server.Message, error) {
	switch {
	case o.err != nil:
		return nil, o.err
	case o.unscanned != nil:
		return o.unscanned, nil
	}
	return s.result(msg, o.res, topLines)
}

func (s *session) result(msg int, res filter.Result, topLines int) (*pop3server.Message, error) {
	switch res.Outcome {
	case filter.Deliver:
		if res.Filter != "" {
			s.g.stats.Replaced.Add(1)
		}
		body := io.NopCloser(bytes.NewReader(res.Message))
		if topLines >= 0 {
			return &pop3server.Message{Size: -1, Body: pop3server.NewTopReader(body, topLines)}, nil
		}
		// The octet count of what is sent, not the upstream's
		// (docs/clients.md, Thunderbird).
		return &pop3server.Message{Size: int64(len(res.Message)), Body: body}, nil
	case filter.Refuse:
		s.g.stats.Refused.Add(1)
		return nil, &pop3server.Error{Message: res.Reason, Err: errors.New("refused by filter " + res.Filter)}
	default:
		s.g.stats.TempFailed.Add(1)
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
	return nil
}

// readCloser joins a reader with the closer of what it reads from.
type readCloser struct {
	io.Reader
	io.Closer
}

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
