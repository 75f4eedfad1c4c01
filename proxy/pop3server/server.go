package pop3server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"
	"go.uber.org/zap"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pop3server: server closed")

// Server is a POP3 server. Its methods are safe for concurrent use.
type Server struct {
	lastConnID  atomic.Uint64
	apopCounter atomic.Uint64
	draining    atomic.Bool

	limiter  connLimiter
	failures *failureTable
	limitLog *limitLog

	mu        sync.Mutex
	cfg       *config // for connections accepted from now on
	closing   bool    // no new listeners or connections
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup // one per tracked connection
}

// NewServer checks opts and returns a server.
func NewServer(opts Options) (*Server, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg,
		limiter: connLimiter{
			max:      cfg.MaxConnections,
			maxPerIP: cfg.MaxConnectionsPerIP,
			perIP:    make(map[netip.Prefix]int),
		},
		failures:  newFailureTable(),
		limitLog:  newLimitLog(cfg.Logger),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	return s, nil
}

// Reconfigure checks opts like NewServer and, if they are valid, makes them
// the options of every connection accepted from now on; invalid options
// change nothing. A connection keeps the options it was accepted with until
// it ends: its Backend (and so its session), timeouts, per-connection
// limits, TLS configuration and callbacks. Server-wide state carries over:
// open connections count against the new MaxConnections and
// MaxConnectionsPerIP, and remembered failed logins stay. Listeners keep
// running; a ServeTLS listener closes its connections at once if the new
// options lack TLSConfig, so remove such listeners with it. The replaced
// options' OnRelease runs when the last connection accepted with them has
// ended (at once if none). Reconfigure returns ErrServerClosed after
// Shutdown or Close.
func (s *Server) Reconfigure(opts Options) error {
	cfg, err := newConfig(opts)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	old := s.cfg
	s.cfg = cfg
	old.replaced = true
	released := old.conns == 0
	s.limiter.setLimits(cfg.MaxConnections, cfg.MaxConnectionsPerIP)
	s.limitLog.setLogger(cfg.Logger)
	s.mu.Unlock()
	if released {
		old.release()
	}
	return nil
}

// config returns the options for the next connection.
func (s *Server) config() *config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// PreambleConn is a connection that starts with something the server must
// read before the greeting, such as a PROXY protocol header, which also
// changes what RemoteAddr reports. ReadPreamble is called first, in the
// connection's own goroutine, and must bound its own wait; an error closes
// the connection silently.
type PreambleConn interface {
	net.Conn
	ReadPreamble() error
}

// Serve accepts connections on ln and serves each in its own goroutine. It
// returns ErrServerClosed after Shutdown or Close, or the error that made
// Accept fail for good. It may run on several listeners, beside ServeTLS.
func (s *Server) Serve(ln net.Listener) error {
	return s.serve(ln, false)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			// Out of file descriptors and similar: retry as net/http does.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.config().Logger.Warn("accept failed, retrying", zap.Error(err), zap.Duration("delay", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.track(nc, implicitTLS)
		if c == nil {
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

// Shutdown closes the listeners and drains the connections, as go-smtp's
// does. Connections not logged in are closed when idle, or else their next
// command gets "-ERR [SYS/TEMP] server shutting down"; TLS handshakes and
// failed-login delays are cut short. Logged-in connections (a login in
// progress that succeeds included) may still QUIT, which commits their
// deletions. Shutdown returns when all connections are gone; if ctx ends
// first, it closes the rest like Close and returns ctx.Err() at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.draining.Store(true)
	err := s.closeListenersLocked()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.drain()
	}

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-ctx.Done():
		s.closeConns()
		return ctx.Err()
	}
}

// Close closes the listeners and all connections at once, without UPDATE.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	s.draining.Store(true)
	err := s.closeListenersLocked()
	s.mu.Unlock()
	s.closeConns()
	return err
}

// Draining reports whether Shutdown or Close has been called.
func (s *Server) Draining() bool { return s.draining.Load() }

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) closeListenersLocked() error {
	var errs *multierror.Error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = multierror.Append(errs, err)
		}
	}
	return errs.ErrorOrNil()
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.abort()
	}
}

// track makes and registers the connection for nc, or returns nil if the
// server is closing. Adding to wg only under s.mu while not closing orders
// every Add before Shutdown's Wait. The connection takes its options under
// s.mu too, so that Reconfigure never counts a configuration as unused
// while a connection is about to start with it.
func (s *Server) track(nc net.Conn, implicitTLS bool) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil
	}
	c := newConn(s, s.cfg, nc, implicitTLS)
	s.cfg.conns++
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

// untrack releases the connection's options if it was their last user,
// before wg.Done, so that once Shutdown has seen every connection end, every
// OnRelease has run.
func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	c.cfg.conns--
	released := c.cfg.replaced && c.cfg.conns == 0
	s.mu.Unlock()
	if released {
		c.cfg.release()
	}
	s.wg.Done()
}
