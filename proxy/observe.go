package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// Observer is told what the relay does, for metrics, so that the relay
// depends on no metrics library. Its methods are called concurrently from
// the sessions' goroutines and must be quick and must not block.
type Observer interface {
	// MessageSent: a RETR (top false) or TOP answer has ended, after
	// octets message octets (before dot-stuffing; a keepalive's included)
	// went to the client; complete says whether the whole message did.
	MessageSent(top bool, octets int64, complete bool)
	// Downloaded: a message the filters check arrived whole in d. Streamed
	// ones (no filters, over max_size) go at the client's pace: not reported.
	Downloaded(d time.Duration)
	// Oversize: a message went past MaxSize and the oversize policy decided.
	Oversize()
	// TempFailed: a RETR or TOP was answered -ERR [SYS/TEMP] (or dropped
	// after a keepalive) because the message could not be checked now.
	TempFailed()
	// UpstreamFailed: reaching or logging in to an upstream failed.
	UpstreamFailed(stage UpstreamStage, reason UpstreamReason)
}

// SpeedObserver is an optional add-on of an Observer, told what the
// verdict cache and scan-ahead save; its methods are called like Observer's.
type SpeedObserver interface {
	// Replayed: a RETR or TOP got an earlier decision for the same bytes
	// (verdict cache, scan-ahead, another session's scan) instead of a scan.
	Replayed()
	// ScannedAhead: a message was checked ahead of the client (scan-ahead).
	ScannedAhead()
}

// UpstreamStage is where an upstream connection failed.
type UpstreamStage uint8

const (
	// StageConnect covers the allow checks, TCP, TLS and the greeting.
	StageConnect UpstreamStage = iota
	// StageLogin is USER and PASS, or AUTH.
	StageLogin
	numUpstreamStages
)

var upstreamStageNames = [numUpstreamStages]string{"connect", "login"}

func (s UpstreamStage) String() string {
	if s < numUpstreamStages {
		return upstreamStageNames[s]
	}
	return "unknown"
}

// UpstreamReason is why an upstream connection failed, from a small closed
// set, so that it can label a metric.
type UpstreamReason uint8

const (
	ReasonDenied      UpstreamReason = iota // not in upstream.allow, or refused by upstream.allow_private
	ReasonRefused                           // connection refused
	ReasonDNS                               // the host name did not resolve
	ReasonTimeout                           // dial_timeout or timeout passed
	ReasonNetwork                           // unreachable, reset, closed early
	ReasonTLS                               // handshake failed, STLS not offered or refused
	ReasonCertificate                       // certificate not trusted or not for the host
	ReasonRejected                          // the greeting was -ERR
	ReasonProtocol                          // a malformed or over-long response
	ReasonAuth                              // USER or PASS refused
	ReasonInUse                             // [IN-USE]: the mailbox is locked
	ReasonLoginDelay                        // [LOGIN-DELAY]: the client polls too often
	ReasonUnavailable                       // [SYS/TEMP] or [SYS/PERM] at login
	ReasonMechanism                         // the upstream does not offer the client's SASL mechanism (oauth.go)
	numUpstreamReasons
)

var upstreamReasonNames = [numUpstreamReasons]string{
	"denied", "refused", "dns", "timeout", "network", "tls", "certificate",
	"rejected", "protocol", "auth", "in_use", "login_delay", "unavailable", "mechanism",
}

func (r UpstreamReason) String() string {
	if r < numUpstreamReasons {
		return upstreamReasonNames[r]
	}
	return "unknown"
}

// UpstreamReasons lists every UpstreamReason.
func UpstreamReasons() []UpstreamReason {
	rs := make([]UpstreamReason, numUpstreamReasons)
	for i := range rs {
		rs[i] = UpstreamReason(i)
	}
	return rs
}

// UpstreamStages lists every UpstreamStage.
func UpstreamStages() []UpstreamStage {
	return []UpstreamStage{StageConnect, StageLogin}
}

func connectReason(err error) UpstreamReason {
	var certErr *tls.CertificateVerificationError
	var dnsErr *net.DNSError
	var se *upstream.ServerError
	switch {
	case errors.Is(err, upstream.ErrDestinationDenied):
		return ReasonDenied
	case errors.As(err, &certErr):
		return ReasonCertificate
	case errors.Is(err, upstream.ErrTLS):
		return ReasonTLS
	case isTimeout(err):
		return ReasonTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonRefused
	case errors.As(err, &dnsErr):
		return ReasonDNS
	case errors.As(err, &se):
		return ReasonRejected
	case isNetwork(err):
		return ReasonNetwork
	}
	return ReasonProtocol
}

func loginReason(err error) UpstreamReason {
	var se *upstream.ServerError
	switch {
	case errors.As(err, &se):
		switch se.Code {
		case "IN-USE":
			return ReasonInUse
		case "LOGIN-DELAY":
			return ReasonLoginDelay
		case "SYS/TEMP", "SYS/PERM":
			return ReasonUnavailable
		}
		return ReasonAuth
	case errors.Is(err, upstream.ErrBadArgument):
		return ReasonAuth
	case isTimeout(err):
		return ReasonTimeout
	case isNetwork(err):
		return ReasonNetwork
	}
	return ReasonProtocol
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// isNetwork tells a transport failure from a peer that broke the protocol.
func isNetwork(err error) bool {
	var op *net.OpError
	var errno syscall.Errno
	return errors.As(err, &op) || errors.As(err, &errno) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

func (g *Gateway) upstreamFailed(stage UpstreamStage, reason UpstreamReason) {
	if o := g.opts.Observer; o != nil {
		o.UpstreamFailed(stage, reason)
	}
}

// tally counts what happened in one session, for its last log line. It
// belongs to the session's connection goroutine.
type tally struct {
	retrieved int   // RETR and TOP answers sent whole
	bytesSent int64 // message octets sent, whole or not
	deleted   int   // marked by DELE since login or the last RSET
	committed bool  // QUIT was answered +OK upstream
	delivered int   // filtered and delivered as the upstream has them, or with header edits
	replaced  int   // delivered as a replacement (a virus notice)
	refused   int   // answered -ERR by a filter or the oversize policy
	tempfail  int   // answered -ERR [SYS/TEMP] (or dropped after a keepalive)
	oversize  int   // over max_size: marked, passed or refused
	replayed  int   // of those, decided before: no scan this time
}

// MarshalLogObject writes the chain's decisions that happened.
func (t *tally) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, c := range []struct {
		name string
		n    int
	}{{"delivered", t.delivered}, {"replaced", t.replaced}, {"refused", t.refused}, {"tempfailed", t.tempfail}, {"oversize", t.oversize}, {"replayed", t.replayed}} {
		if c.n > 0 {
			enc.AddInt(c.name, c.n)
		}
	}
	return nil
}

func (t *tally) verdicts() int {
	return t.delivered + t.replaced + t.refused + t.tempfail + t.oversize
}

// Summary is the session's last line: what it retrieved, sent and deleted;
// it reads "session committed" only if QUIT committed the deletions upstream.
func (s *session) Summary() (string, []zap.Field) {
	t := &s.tally
	msg := "session ended"
	if t.committed {
		msg = "session committed"
	}
	fields := []zap.Field{
		zap.String("upstream", s.client.Addr()),
		zap.Int("retrieved", t.retrieved),
		zap.Int64("bytes_sent", t.bytesSent),
		zap.Int("deleted", t.deleted),
		zap.Bool("committed", t.committed),
	}
	if t.verdicts() > 0 {
		fields = append(fields, zap.Object("verdicts", t))
	}
	return msg, fields
}

// sentBody counts what the client gets of a body, reported on Close.
type sentBody struct {
	io.ReadCloser
	s        *session
	top      bool
	n        int64
	complete bool
}

func (b *sentBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.complete = true
	}
	return n, err
}

func (b *sentBody) Close() error {
	t := &b.s.tally
	t.bytesSent += b.n
	if b.complete {
		t.retrieved++
	}
	if o := b.s.g.opts.Observer; o != nil {
		o.MessageSent(b.top, b.n, b.complete)
	}
	return b.ReadCloser.Close()
}

// counted makes m's body report what the client got of it.
func (s *session) counted(m *pop3server.Message, top bool) *pop3server.Message {
	if m != nil && m.Body != nil {
		m.Body = &sentBody{ReadCloser: m.Body, s: s, top: top}
	}
	return m
}
