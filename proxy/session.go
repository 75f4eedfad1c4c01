package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// session relays one authenticated maildrop. Message numbers, the deleted
// set and sizes are the upstream's: the proxy neither renumbers nor hides
// messages (RFC 1939 §4).
type session struct {
	g      *Gateway
	client *upstream.Client
	user   string // at the upstream
	conn   uint64 // the client connection's id
	log    *zap.Logger
	quit   bool
	tally  tally

	// ctx ends with the session (Close); scan-ahead runs under it.
	ctx    context.Context
	cancel context.CancelFunc
	// up serializes every use of client (see upLock).
	up   upLock
	wg   sync.WaitGroup // scan-ahead goroutines
	idle idleKeeper     // the upstream keepalive

	prepared           bool                   // the listings were fetched (speed.go)
	seenUidl, seenList []upstream.MessageInfo // whole listings the client asked for before

	mu           sync.Mutex // guards what scan-ahead shares with the connection's goroutine
	info         []msgInfo  // by number
	deleted      map[int]bool
	ahead        map[int]*prefetch
	aheadRunning int
	noAhead      bool
	lastMsg, dir int
}

func newSession(g *Gateway, client *upstream.Client, user string, conn uint64, log *zap.Logger) *session {
	s := &session{g: g, client: client, user: user, conn: conn, log: log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.up.last = time.Now() // the login
	s.startIdleKeeper()
	return s
}

func (s *session) lock(ctx context.Context) (*upHold, error) {
	if err := s.up.lock(ctx); err != nil {
		return nil, &pop3server.Error{Code: "SYS/TEMP", Message: "session ended", Err: err, Disconnect: true}
	}
	return &upHold{l: &s.up}, nil
}

// closeWith releases hold when a body reading from the upstream closes.
func closeWith(m *pop3server.Message, hold *upHold) *pop3server.Message {
	m.Body = readCloser{Reader: m.Body, Closer: closers{m.Body, hold}}
	return m
}

var (
	_ pop3server.Session           = (*session)(nil)
	_ pop3server.UIDLSession       = (*session)(nil)
	_ pop3server.TopSession        = (*session)(nil)
	_ pop3server.CapabilitySession = (*session)(nil)
	_ pop3server.Summarizer        = (*session)(nil)
)

// Stat counts cached decisions' delivered sizes, as List does.
func (s *session) Stat(ctx context.Context) (int, int64, error) {
	hold, err := s.lock(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer hold.Close()
	if err := s.prepare(ctx); err != nil {
		return 0, 0, err
	}
	n, size, err := s.client.Stat()
	if err != nil {
		return 0, 0, relayError(err)
	}
	return n, max(0, size+s.statDelta()), nil
}

// List reports what RETR delivers for a message with a cached decision
// made for its listed size: RFC 1939 §5 asks for exact octet counts, and
// clients compare them (docs/clients.md, Thunderbird).
func (s *session) List(ctx context.Context, msg int) ([]pop3server.MessageInfo, error) {
	hold, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer hold.Close()
	list, err := s.client.List(msg)
	if err != nil {
		return nil, relayError(err)
	}
	if msg == 0 {
		s.seen(list, false)
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	out := convert(list)
	s.mu.Lock()
	for i := range out {
		out[i].Size = s.deliveredSize(out[i].Number, out[i].Size)
	}
	s.mu.Unlock()
	return out, nil
}

func (s *session) Uidl(ctx context.Context, msg int) ([]pop3server.MessageInfo, error) {
	hold, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer hold.Close()
	list, err := s.client.Uidl(msg)
	if err != nil {
		return nil, relayError(err)
	}
	if msg == 0 {
		s.seen(list, true)
	}
	return convert(list), nil
}

func convert(list []upstream.MessageInfo) []pop3server.MessageInfo {
	out := make([]pop3server.MessageInfo, len(list))
	for i, m := range list {
		out[i] = pop3server.MessageInfo{Number: m.Number, Size: m.Size, UID: m.UID}
	}
	return out
}

func (s *session) Retr(ctx context.Context, msg int) (*pop3server.Message, error) {
	m, err := s.retr(ctx, msg)
	return s.counted(m, false), err
}

func (s *session) retr(ctx context.Context, msg int) (*pop3server.Message, error) {
	hold, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	if s.g.opts.Chain.Len() == 0 {
		// Untouched, so passed on dot-stuffed as it came: unstuffing and
		// stuffing every line again took the pass-through row of bench/
		// from 0.93 to 0.86 of a splice relay.
		m, err := s.client.RetrStuffed(msg)
		if err != nil {
			hold.Close()
			return nil, relayError(err)
		}
		return closeWith(&pop3server.Message{Size: m.Size, Body: m, Stuffed: true}, hold), nil
	}
	if err := s.prepare(ctx); err != nil {
		hold.Close()
		return nil, err
	}
	m, err := s.client.Retr(msg)
	if err != nil {
		hold.Close()
		return nil, relayError(err)
	}
	return s.filtered(ctx, msg, m, -1, hold)
}

// Top must not bypass the filters: fetchmail reads messages with "TOP n
// 99999999" (docs/clients.md, fetchmail). With a chain the whole message
// is fetched with TOP (see runAhead for why not RETR), handled as by RETR
// and cut to the lines asked for.
func (s *session) Top(ctx context.Context, msg, lines int) (*pop3server.Message, error) {
	m, err := s.top(ctx, msg, lines)
	return s.counted(m, true), err
}

func (s *session) top(ctx context.Context, msg, lines int) (*pop3server.Message, error) {
	hold, err := s.lock(ctx)
	if err != nil {
		return nil, err
	}
	if s.g.opts.Chain.Len() == 0 {
		return s.relayTop(msg, lines, hold)
	}
	if err := s.prepare(ctx); err != nil {
		hold.Close()
		return nil, err
	}
	if lines < wholeMessage {
		if m, err, ok := s.topFromCache(ctx, msg, lines, hold); ok {
			return m, err
		}
	}
	m, err := s.client.Top(msg, wholeMessage)
	if err != nil {
		hold.Close()
		return nil, relayError(err)
	}
	return s.filtered(ctx, msg, m, lines, hold)
}

func (s *session) relayTop(msg, lines int, hold *upHold) (*pop3server.Message, error) {
	m, err := s.client.Top(msg, lines)
	if err != nil {
		hold.Close()
		return nil, relayError(err)
	}
	// An upstream octet count for TOP is not the size of what follows.
	return closeWith(&pop3server.Message{Size: -1, Body: m}, hold), nil
}

func (s *session) Dele(ctx context.Context, msg int) error {
	hold, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer hold.Close()
	if err := s.client.Dele(msg); err != nil {
		return relayError(err)
	}
	s.tally.deleted++
	s.mu.Lock()
	if s.deleted == nil {
		s.deleted = map[int]bool{}
	}
	s.deleted[msg] = true
	if p := s.ahead[msg]; p != nil && !p.hasDigest {
		p.skip = true
	}
	s.mu.Unlock()
	return nil
}

func (s *session) Rset(ctx context.Context) error {
	hold, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer hold.Close()
	if err := s.client.Rset(); err != nil {
		return relayError(err)
	}
	s.tally.deleted = 0
	s.mu.Lock()
	s.deleted = nil
	s.mu.Unlock()
	return nil
}

func (s *session) Noop(ctx context.Context) error {
	hold, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer hold.Close()
	if err := s.client.Noop(); err != nil {
		return relayError(err)
	}
	return nil
}

// Update relays QUIT and reports the upstream's verdict truthfully: a
// client told "+OK" believes its deletions happened. A scan-ahead download
// under way is waited for (at most max_size): breaking it off would break
// the connection and lose the deletions.
func (s *session) Update(ctx context.Context) error {
	s.quit = true
	s.cancel()
	s.stopIdleKeeper()
	hold, err := s.lock(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	defer hold.Close()
	err = s.client.Quit()
	if err == nil {
		s.tally.committed = true
		return nil
	}
	s.log.Warn("upstream QUIT failed", zap.Error(err))
	var se *upstream.ServerError
	if errors.As(err, &se) {
		msg := "some deleted messages not removed"
		if se.Text != "" {
			msg = se.Text
		}
		return &pop3server.Error{Code: se.Code, Message: msg, Err: err}
	}
	return &pop3server.Error{Code: "SYS/TEMP", Message: "upstream connection lost during QUIT; deletions may not have been committed", Err: err}
}

// Close closes the upstream without QUIT unless the client's was relayed,
// so the upstream commits nothing. A scan-ahead download is cut off, a
// scan cancelled, and Close returns once their buffers are freed.
func (s *session) Close() error {
	s.cancel()
	var err error
	if !s.quit {
		s.log.Debug("closing upstream without QUIT")
		err = s.client.Abort() // ends a keepalive NOOP on the wire at once
	}
	s.stopIdleKeeper()
	s.wg.Wait()
	return err
}

// Capabilities lists what the upstream offers, as far as the proxy relays
// it end to end (RFC 2449 §6).
func (s *session) Capabilities() []string {
	var caps []string
	for _, line := range s.client.Capabilities() {
		name, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(name) {
		case "TOP", "UIDL":
			caps = append(caps, strings.ToUpper(name))
		case "EXPIRE", "LOGIN-DELAY":
			caps = append(caps, line)
		}
	}
	return caps
}
