package proxy

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultUpstreamKeepalive is how long an idle session's upstream goes
// without a command before a NOOP: below the one minute after which many
// ISPs' servers drop a silent session, above what costs them anything.
const DefaultUpstreamKeepalive = 45 * time.Second

// idleKeeper sends NOOP upstream while the logged-in client is silent, so
// an upstream that drops idle sessions is still there when it comes back;
// never while the upLock is held.
type idleKeeper struct {
	mu      sync.Mutex // held while a NOOP is on the wire, so that stop waits for it
	timer   *time.Timer
	stopped bool
}

func (s *session) startIdleKeeper() {
	every := s.g.opts.UpstreamKeepalive
	if every <= 0 {
		return
	}
	s.idle.mu.Lock()
	defer s.idle.mu.Unlock()
	s.idle.timer = time.AfterFunc(every, s.keepUpstream)
}

// keepUpstream sends a NOOP if the upstream heard nothing for the whole
// interval and nobody uses the connection.
func (s *session) keepUpstream() {
	s.idle.mu.Lock()
	defer s.idle.mu.Unlock()
	if s.idle.stopped {
		return
	}
	every := s.g.opts.UpstreamKeepalive
	if quiet := time.Since(s.up.lastUsed()); quiet < every {
		s.idle.timer.Reset(every - quiet)
		return
	}
	if !s.up.tryLock() {
		// In use: not idle.
		s.idle.timer.Reset(every)
		return
	}
	err := s.client.Noop()
	s.up.unlock()
	if err != nil {
		// The client's next command reports the lost connection.
		s.log.Info("upstream keepalive NOOP failed", zap.Error(err))
		s.idle.stopped = true
		return
	}
	s.idle.timer.Reset(every)
}

// stopIdleKeeper stops the keeper, waiting for a NOOP on the wire.
func (s *session) stopIdleKeeper() {
	s.idle.mu.Lock()
	defer s.idle.mu.Unlock()
	s.idle.stopped = true
	if s.idle.timer != nil {
		s.idle.timer.Stop()
	}
}
