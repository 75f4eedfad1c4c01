package proxy

import (
	"context"
	"errors"
	"strings"

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
}

var (
	_ pop3server.Session           = (*session)(nil)
	_ pop3server.UIDLSession       = (*session)(nil)
	_ pop3server.TopSession        = (*session)(nil)
	_ pop3server.CapabilitySession = (*session)(nil)
	_ pop3server.Summarizer        = (*session)(nil)
)

func (s *session) Stat(context.Context) (int, int64, error) {
	n, size, err := s.client.Stat()
	if err != nil {
		return 0, 0, relayError(err)
	}
	return n, size, nil
}

func (s *session) List(_ context.Context, msg int) ([]pop3server.MessageInfo, error) {
	list, err := s.client.List(msg)
	if err != nil {
		return nil, relayError(err)
	}
	return convert(list), nil
}

func (s *session) Uidl(_ context.Context, msg int) ([]pop3server.MessageInfo, error) {
	list, err := s.client.Uidl(msg)
	if err != nil {
		return nil, relayError(err)
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
	if s.g.opts.Chain.Len() == 0 {
		// Untouched, so passed on dot-stuffed as it came: unstuffing and
		// stuffing every line again took the pass-through row of bench/
		// from 0.93 to 0.86 of a splice relay.
		m, err := s.client.RetrStuffed(msg)
		if err != nil {
			return nil, relayError(err)
		}
		return &pop3server.Message{Size: m.Size, Body: m, Stuffed: true}, nil
	}
	m, err := s.client.Retr(msg)
	if err != nil {
		return nil, relayError(err)
	}
	return s.filtered(ctx, msg, m, -1)
}

// Top must not bypass the filters: fetchmail reads messages with
// "TOP n 99999999" (docs/clients.md, fetchmail). With a chain the whole
// message is fetched with TOP (which, unlike RETR, neither marks it seen
// upstream nor counts as retrieved for EXPIRE 0), handled exactly as RETR
// would handle it (the same edits, notice, refusal and oversize policy)
// and cut to the lines asked for. Whether it is too large is decided on
// the bytes that arrive, not on what LIST claims.
func (s *session) Top(ctx context.Context, msg, lines int) (*pop3server.Message, error) {
	m, err := s.top(ctx, msg, lines)
	return s.counted(m, true), err
}

func (s *session) top(ctx context.Context, msg, lines int) (*pop3server.Message, error) {
	if s.g.opts.Chain.Len() == 0 {
		return s.relayTop(msg, lines)
	}
	m, err := s.client.Top(msg, wholeMessage)
	if err != nil {
		return nil, relayError(err)
	}
	return s.filtered(ctx, msg, m, lines)
}

func (s *session) relayTop(msg, lines int) (*pop3server.Message, error) {
	m, err := s.client.Top(msg, lines)
	if err != nil {
		return nil, relayError(err)
	}
	// An upstream octet count for TOP is not the size of what follows.
	return &pop3server.Message{Size: -1, Body: m}, nil
}

func (s *session) Dele(_ context.Context, msg int) error {
	if err := s.client.Dele(msg); err != nil {
		return relayError(err)
	}
	s.tally.deleted++
	return nil
}

func (s *session) Rset(context.Context) error {
	if err := s.client.Rset(); err != nil {
		return relayError(err)
	}
	s.tally.deleted = 0
	return nil
}

func (s *session) Noop(context.Context) error {
	if err := s.client.Noop(); err != nil {
		return relayError(err)
	}
	return nil
}

// Update relays the client's QUIT and reports the upstream's verdict
// truthfully: a client told "+OK" believes its deletions happened.
func (s *session) Update(context.Context) error {
	s.quit = true
	err := s.client.Quit()
	if err == nil {
		// The connection's last line says so (Summary).
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

// Close closes the upstream connection; without a relayed QUIT it sends
// none, so the upstream commits nothing.
func (s *session) Close() error {
	if s.quit {
		return nil
	}
	s.log.Debug("closing upstream without QUIT")
	return s.client.Abort()
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
