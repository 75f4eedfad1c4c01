package pop3server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// state is the protocol state of RFC 1939 §3.
type state int

const (
	stateAuthorization state = iota
	stateTransaction
	stateUpdate
)

const (
	// writeBufferSize lets a pipelined batch of responses, or a big piece
	// of a message, go out in one write.
	writeBufferSize = 64 << 10
	// authWriteBufferSize holds any response before login, so that
	// connections that never log in stay cheap.
	authWriteBufferSize = 4 << 10
	copyBufferSize      = 32 << 10
)

// Buffers of logged-in connections.
var (
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}
	copyPool   = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}
)

// conn is one client connection. Everything but mu, state and busy belongs
// to the goroutine running serve.
type conn struct {
	srv *Server
	cfg *config
	// nc is the accepted connection: other goroutines close it and set its
	// read deadline, which also works once TLS runs on top of it.
	nc          net.Conn
	rw          net.Conn     // nc, or a *tls.Conn on it
	implicitTLS bool         // ServeTLS
	key         netip.Prefix // of the client's address, for per-address limits
	info        ConnInfo
	log         *zap.Logger
	ctx         context.Context // cancelled when the connection is torn down
	cancel      context.CancelFunc
	// drainCtx is also cancelled by Shutdown, to cut short the TLS
	// handshake and the failed-login delay.
	drainCtx    context.Context
	drainCancel context.CancelFunc

	lr       *lineReader
	out      *connWriter
	bw       *bufio.Writer
	pooledBW bool // bw came from writerPool
	dot      dotWriter
	copyBuf  *[]byte // from copyPool, on the first RETR or TOP
	scratch  []byte  // response line under construction

	// mu guards state and busy, which Shutdown reads.
	mu    sync.Mutex
	state state
	busy  bool // a command is being handled

	// authDeadline, AuthTimeout after accept, ends AUTHORIZATION.
	authDeadline time.Time
	timestamp    string // APOP timestamp of the greeting
	user         string // from USER, waiting for PASS
	session      Session
	badCommands  int // in all before login, in a row after it
	failedLogins int // for the delay of clients without an IP address
	tlsExempt    bool
	verb         string // for logs
	inMultiline  bool   // data lines have been written; no -ERR may follow
	quit         ending // when its reason is set, close after this command
	started      time.Time
	summary      Summarizer // the session's, kept for the last log line
}

// newConn prepares a connection in the accept loop. Everything that may
// block, even RemoteAddr (a PROXY protocol listener reads the header
// there), waits for serve, in the connection's own goroutine.
func newConn(s *Server, cfg *config, nc net.Conn, implicitTLS bool) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	drainCtx, drainCancel := context.WithCancel(ctx)
	now := time.Now()
	return &conn{
		srv:          s,
		cfg:          cfg,
		nc:           nc,
		rw:           nc,
		implicitTLS:  implicitTLS,
		ctx:          ctx,
		cancel:       cancel,
		drainCtx:     drainCtx,
		drainCancel:  drainCancel,
		out:          &connWriter{nc: nc, timeout: cfg.WriteTimeout},
		busy:         true,
		authDeadline: now.Add(cfg.AuthTimeout),
		started:      now,
	}
}

func (c *conn) init() {
	s := c.srv
	c.info = ConnInfo{
		ID:         s.lastConnID.Add(1),
		RemoteAddr: c.nc.RemoteAddr(),
		LocalAddr:  c.nc.LocalAddr(),
	}
	c.key = clientKey(clientIP(c.info.RemoteAddr))
	c.log = c.cfg.Logger.With(zap.Uint64("conn", c.info.ID), zap.String("remote", addrString(c.info.RemoteAddr)))
	c.info.Logger = c.log
	c.lr = newLineReader(c.nc, c.cfg.MaxLineLength, c.cfg.authLineLength())
	c.bw = bufio.NewWriterSize(c.out, authWriteBufferSize)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// serve runs the connection. Limits come first: a connection over one costs
// no backend call or TLS handshake, and those that never send a preamble or
// ClientHello hold a slot, so cannot pile up beyond it.
func (c *conn) serve() {
	defer c.srv.untrack(c)
	defer c.cancel()
	c.observeStart()
	result := SessionRefused
	defer func() { c.observeEnd(result) }()
	p, hasPreamble := c.nc.(PreambleConn)
	if !hasPreamble {
		c.init()
	}
	if !c.srv.limiter.acquire() {
		c.refuse(limitConns, errTooManyConns)
		return
	}
	holdsSlot := true
	defer func() {
		if holdsSlot {
			c.srv.limiter.release()
		}
	}()
	if hasPreamble {
		if err := p.ReadPreamble(); err != nil {
			c.cfg.Logger.Info("connection closed before the greeting", zap.String("peer", addrString(c.nc.RemoteAddr())), zap.Error(err))
			c.nc.Close()
			return
		}
		c.init()
	}
	if !c.srv.limiter.acquireIP(c.key) {
		// Free the slot before the client sees the connection close: a
		// client that then connects again must not find it still taken.
		c.srv.limiter.release()
		holdsSlot = false
		c.refuse(limitConnsPerIP, errTooManyConnsFromIP)
		return
	}
	defer c.srv.limiter.releaseIP(c.key)
	if c.implicitTLS {
		result = SessionTLSFailed
		if c.cfg.tls == nil {
			// Reconfigure removed TLSConfig while this listener ran.
			c.log.Warn("connection closed: TLS listener without a TLS configuration")
			c.nc.Close()
			return
		}
		if err := c.handshake(); err != nil {
			// Port scanners and health checks: debug is enough.
			c.log.Debug("TLS handshake failed", zap.Error(err))
			c.nc.Close()
			return
		}
	}
	end := c.run()
	result = end.result
	c.teardown(end.reason)
}

// refuse closes a connection over a limit, answering e only where the
// client can read it (see Options.MaxConnections). It skips the connect and
// disconnect log entries, OnConnect and OnDisconnect: a flood of them is
// what the limit is for.
func (c *conn) refuse(limit string, e *Error) {
	msg, key, log := "connection refused: too many connections", netip.Prefix{}, c.log
	if limit == limitConnsPerIP {
		msg, key = msg+" from one address", c.key
	}
	if log == nil {
		// Before the preamble: RemoteAddr may not be known yet.
		log = c.cfg.Logger
	}
	c.srv.limitLog.hit(log, limit, key, msg)
	if !c.implicitTLS && c.log != nil {
		c.scratch = appendErrorLine(c.scratch[:0], e)
		c.out.Write(c.scratch)
	}
	c.nc.Close()
}

func (c *conn) run() ending {
	c.log.Info("connect", zap.Bool("tls", c.info.TLS != nil))
	if f := c.cfg.TLSExempt; f != nil && c.info.TLS == nil {
		c.protect("TLSExempt", func() { c.tlsExempt = f(&c.info) })
	}
	if f := c.cfg.OnConnect; f != nil {
		var err error
		if c.protect("OnConnect", func() { err = f(&c.info) }) {
			err = errInternal
		}
		if err != nil {
			c.writeError(err)
			c.bw.Flush()
			return endWith(SessionRefused, "refused by OnConnect")
		}
	}

	c.scratch = append(c.scratch[:0], "+OK "...)
	c.scratch = append(c.scratch, c.cfg.Greeting...)
	if c.cfg.apop != nil {
		c.timestamp = c.srv.apopTimestamp(c.cfg)
		c.scratch = append(c.scratch, ' ')
		c.scratch = append(c.scratch, c.timestamp...)
	}
	c.scratch = append(c.scratch, '\r', '\n')
	c.bw.Write(c.scratch)

	for {
		line, err := c.readCommand()
		switch {
		case err == nil:
			c.handle(line)
		case errors.Is(err, errLineTooLong):
			c.verb = ""
			c.log.Debug("line too long")
			c.writeError(badCommand(errLineTooLongRsp))
		case c.out.err != nil:
			return c.writeFailure()
		default:
			return c.readFailure(err)
		}
		if c.quit.reason != "" {
			c.bw.Flush()
			return c.quit
		}
		if c.out.err != nil {
			return c.writeFailure()
		}
	}
}

// readCommand flushes pending responses unless another command is already
// buffered, so a pipelined batch is answered in one write, and reads the
// next line under IdleTimeout and, before login, authDeadline: a client
// that keeps sending CAPA or NOOP must still log in within AuthTimeout.
func (c *conn) readCommand() ([]byte, error) {
	if !c.lr.lineBuffered() {
		if err := c.bw.Flush(); err != nil {
			return nil, err
		}
	}

	c.mu.Lock()
	c.busy = false
	var deadline time.Time
	switch {
	case c.state == stateAuthorization && c.srv.draining.Load():
		// Shutting down: take what is buffered, never wait for more.
		deadline = time.Now()
	case c.state == stateAuthorization:
		deadline = earliest(time.Now().Add(c.cfg.IdleTimeout), c.authDeadline)
	default:
		deadline = time.Now().Add(c.cfg.IdleTimeout)
	}
	// This deadline also bounds skipping an endless overlong line.
	err := c.nc.SetReadDeadline(deadline)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}

	line, err := c.lr.readLine()

	c.mu.Lock()
	c.busy = true
	c.mu.Unlock()
	return line, err
}

// readFailure names why a read ended the connection. Nothing is sent:
// RFC 1939 §3 autologout is silent, and otherwise no client is left.
func (c *conn) readFailure(err error) ending {
	switch {
	case errors.Is(err, io.EOF):
		return endWith(SessionDisconnect, "client closed the connection")
	case errors.Is(err, os.ErrDeadlineExceeded):
		switch {
		case c.state != stateAuthorization:
		case c.srv.draining.Load():
			return endWith(SessionShutdown, "server shutting down")
		case !time.Now().Before(c.authDeadline):
			return endWith(SessionTimeout, "login timeout")
		}
		return endWith(SessionTimeout, "idle timeout")
	case errors.Is(err, net.ErrClosed):
		return endWith(SessionShutdown, "closed by server")
	default:
		return endWith(SessionDisconnect, "read failed: "+err.Error())
	}
}

func (c *conn) writeFailure() ending {
	return endWith(SessionDisconnect, "write failed: "+c.out.err.Error())
}

// handle runs one command. A panic ends the connection, not the process.
func (c *conn) handle(line []byte) {
	c.verb = ""
	c.inMultiline = false
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic while handling command", zap.String("command", c.verb),
				zap.Any("panic", r), zap.Stack("stack"))
			if !c.inMultiline {
				c.writeError(errInternal)
			}
			c.quit = endWith(SessionError, "panic")
		}
	}()

	// A CR or NUL inside a line could split a command relayed upstream.
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		c.writeError(badCommand(errBadCharacters))
		return
	}
	verb, arg := splitCommand(line)
	if c.state == stateAuthorization && c.srv.draining.Load() && string(verb) != "QUIT" {
		c.writeError(errShuttingDown)
		return
	}
	cmd, ok := commands[string(verb)]
	if !ok {
		c.logUnknown(verb, line)
		c.writeError(badCommand(errUnknownCommand))
		return
	}
	c.verb = cmd.name
	if ce := c.log.Check(zap.DebugLevel, "command"); ce != nil {
		if cmd.secret {
			ce.Write(zap.String("command", cmd.name))
		} else {
			ce.Write(zap.String("command", cmd.name), zap.ByteString("args", arg))
		}
	}
	switch err := cmd.handle(c, string(arg)); {
	case err == nil:
		// After login only bad commands in a row count, so a long session
		// with an odd command now and then goes on; before login all do, or
		// a client could try for ever with CAPA in between.
		if c.state != stateAuthorization {
			c.badCommands = 0
		}
	case err != errNoResponse:
		c.writeError(err)
	}
}

// unimplementedVerbs are POP3 keywords the server lacks, from earlier POP3
// specifications (LAST, RPOP, XTND) and RFC 6856 (UTF8, LANG); logUnknown
// logs them by name, which tells what a client tried.
var unimplementedVerbs = map[string]bool{"LAST": true, "RPOP": true, "XTND": true, "UTF8": true, "LANG": true}

// logUnknown logs an unknown command without its text, which may be a
// password: sent with a tab instead of a space ("PASS<TAB>secret"), or
// as a SASL response pipelined behind a user name the server refused.
func (c *conn) logUnknown(verb, line []byte) {
	ce := c.log.Check(zap.DebugLevel, "unknown command")
	if ce == nil {
		return
	}
	if unimplementedVerbs[string(verb)] {
		ce.Write(zap.String("command", string(verb)))
	} else {
		ce.Write(zap.Int("length", len(line)))
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// protect runs user code outside command handling, reporting a panic.
func (c *conn) protect(what string, f func()) bool { return protect(c.log, what, f) }

func protect(log *zap.Logger, what string, f func()) (panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic in "+what, zap.Any("panic", r), zap.Stack("stack"))
			panicked = true
		}
	}()
	f()
	return false
}

// enterTransaction also switches to the large write buffer.
func (c *conn) enterTransaction(sess Session) {
	c.mu.Lock()
	c.session = sess
	c.state = stateTransaction
	c.mu.Unlock()
	c.summary, _ = sess.(Summarizer)
	c.lr.authMax = 0 // AUTH is over

	c.bw.Flush()
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c.out)
	c.bw = bw
	c.pooledBW = true
}

func (c *conn) copyBuffer() []byte {
	if c.copyBuf == nil {
		c.copyBuf = copyPool.Get().(*[]byte)
	}
	return *c.copyBuf
}

func (c *conn) setState(s state) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

// teardown closes the connection, then any session left, without Update.
func (c *conn) teardown(reason string) {
	c.cancel()
	// Under TLS this sends close_notify, so the client can tell the end
	// from a truncation.
	c.rw.Close()
	c.closeSession()
	c.logEnd(reason)
	if f := c.cfg.OnDisconnect; f != nil {
		c.protect("OnDisconnect", func() { f(&c.info) })
	}
	if c.pooledBW {
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.bw, c.pooledBW = nil, false
	}
	if c.copyBuf != nil {
		copyPool.Put(c.copyBuf)
		c.copyBuf = nil
	}
}

func (c *conn) logEnd(reason string) {
	msg, fields := "disconnect", []zap.Field(nil)
	if s := c.summary; s != nil {
		c.protect("Session.Summary", func() { msg, fields = s.Summary() })
	}
	c.log.Info(msg, append(fields, zap.String("reason", reason), zap.Duration("duration", time.Since(c.started)))...)
}

func (c *conn) closeSession() {
	s := c.session
	if s == nil {
		return
	}
	c.session = nil
	c.protect("Session.Close", func() {
		if err := s.Close(); err != nil {
			c.log.Warn("closing session failed", zap.Error(err))
		}
	})
}

// drain wakes an idle connection in the AUTHORIZATION state so that it
// closes; a busy one sees the draining flag before its next read.
func (c *conn) drain() {
	c.drainCancel()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateAuthorization && !c.busy {
		c.nc.SetReadDeadline(time.Now())
	}
}

// abort tears the connection down from another goroutine. The socket is
// closed before the context is cancelled: a session call that returns on
// the cancellation must find no socket to answer on, or a client cut off
// by a forced shutdown could still read "+OK" for abandoned work.
func (c *conn) abort() {
	c.nc.Close()
	c.cancel()
}

// connWriter applies WriteTimeout to each write and keeps the first error,
// which is checked after each command.
type connWriter struct {
	nc      net.Conn
	timeout time.Duration
	err     error
}

func (w *connWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if err := w.nc.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		w.err = err
		return 0, err
	}
	n, err := w.nc.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

func (c *conn) writeLine(s string) {
	c.bw.WriteString(s)
	c.bw.Write(crlf)
}

func (c *conn) writeOKNumbers(a, b int64) {
	c.scratch = append(c.scratch[:0], "+OK "...)
	c.writeNumbers(a, b)
}

// writeNumbers appends "a b" CRLF to c.scratch and writes it.
func (c *conn) writeNumbers(a, b int64) {
	c.scratch = strconv.AppendInt(c.scratch, a, 10)
	c.scratch = append(c.scratch, ' ')
	c.scratch = strconv.AppendInt(c.scratch, b, 10)
	c.scratch = append(c.scratch, '\r', '\n')
	c.bw.Write(c.scratch)
}
