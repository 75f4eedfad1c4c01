// Package pop3test runs scripted fake POP3 servers for tests, in the
// spirit of net/http/httptest.
//
// A script lists what the server sends and what it expects, one line each:
//
//	S: +OK fake ready
//	C: USER alice
//	S: +OK
//	C: RETR 1
//	S: +OK 12 octets
//	S: ..dot-stuffed
//	S: .
//	C: QUIT
//	S: +OK bye
//
// "S: text" sends text and CRLF ("S:" alone sends an empty line). "C: text"
// reads one line, which must end in CRLF and equal text exactly, or the
// test fails at once; so does any byte the client sends after the script
// (a script that ends without "C: QUIT" asserts that no QUIT is sent).
// Blank lines and lines starting with '#' are ignored, and leading spaces
// and tabs are stripped.
//
// Directives for error paths:
//
//	S!close              close the connection now (the script ends here)
//	S!sleep 2s           pause; ends early if the client disconnects
//	S!raw "<Go string>"  send exactly these bytes, no CRLF added
//	S!repeat N "<str>"   send the bytes N times (a long line, a huge message)
//	S!seq N "<str>"      send the string N times, its one %d replaced by
//	                     1, 2, ... N (a numbered listing: "%d 120\r\n")
//	S!starttls           start TLS as the server (needs WithTLS); data the
//	                     client sent early fails the test
//	S!discard            read and ignore everything until the client closes
//	                     (the script ends here), e.g. a TLS ClientHello sent
//	                     to a plain server
//	S!next               the rest of the script is for the next connection
//
// Consecutive S: lines and S!raw go out in one write when the server next
// waits, sleeps, closes or ends, so bytes that follow a response arrive
// with it. S!repeat and S!seq allocate nothing per repetition, so a test
// may measure the client's allocations while the server sends.
//
// The server listens on 127.0.0.1, puts a deadline on every read and write
// (WithTimeout, default 10s), and stops when the test ends.
package pop3test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a scripted fake POP3 server.
type Server struct {
	t         testing.TB
	ln        net.Listener
	scripts   [][]step
	timeout   time.Duration
	tlsConfig *tls.Config
	implicit  bool

	done []chan struct{} // closed when connection i has finished
	errs []error         // result of connection i, set before done[i]

	quit      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
}

// Option configures a Server.
type Option func(*Server)

// WithTLS enables S!starttls with cfg.
func WithTLS(cfg *tls.Config) Option {
	return func(s *Server) { s.tlsConfig = cfg }
}

// WithImplicitTLS makes the server start TLS with cfg right after accepting
// a connection, before the script (POP3S). A failed handshake ends that
// connection without failing the test; Wait reports it.
func WithImplicitTLS(cfg *tls.Config) Option {
	return func(s *Server) { s.tlsConfig, s.implicit = cfg, true }
}

// WithListener serves on ln instead of a new listener on 127.0.0.1, for a
// script that must name the server's own port (OAUTHBEARER carries it).
// The server closes ln.
func WithListener(ln net.Listener) Option {
	return func(s *Server) { s.ln = ln }
}

// WithTimeout sets the deadline for every read and write, and how long Wait
// waits.
func WithTimeout(d time.Duration) Option {
	return func(s *Server) { s.timeout = d }
}

// NewServer parses script, starts the server and stops it when the test
// ends. A malformed script fails the test.
func NewServer(t testing.TB, script string, opts ...Option) *Server {
	t.Helper()
	scripts, err := parseScript(script)
	if err != nil {
		t.Fatalf("pop3test: script: %v", err)
	}
	s := &Server{t: t, scripts: scripts, timeout: 10 * time.Second, quit: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	for _, o := range opts {
		o(s)
	}
	for _, steps := range scripts {
		for _, st := range steps {
			if st.op == opStartTLS && s.tlsConfig == nil {
				t.Fatalf("pop3test: script line %d: S!starttls needs WithTLS", st.line)
			}
		}
	}
	if s.ln == nil {
		if s.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatalf("pop3test: listen: %v", err)
		}
	}
	s.done = make([]chan struct{}, len(scripts))
	for i := range s.done {
		s.done[i] = make(chan struct{})
	}
	s.errs = make([]error, len(scripts))
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.Close)
	return s
}

// Addr returns the server's "127.0.0.1:port".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Wait waits until every scripted connection has run its script to the end
// and been closed by the client, and fails the test if one did not or does
// not finish within the timeout.
func (s *Server) Wait(t testing.TB) {
	t.Helper()
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	for i := range s.scripts {
		select {
		case <-s.done[i]:
			if err := s.errs[i]; err != nil {
				t.Errorf("pop3test: connection %d: %v", i+1, err)
			}
		case <-timer.C:
			t.Fatalf("pop3test: connection %d did not finish its script within %v", i+1, s.timeout)
		}
	}
}

// Close stops the server and closes its connections, as when the test ends.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.quit)
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for i := 0; ; i++ {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if i >= len(s.scripts) {
			s.t.Errorf("pop3test: unexpected connection #%d (the script has %d)", i+1, len(s.scripts))
			c.Close()
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func(i int) {
			defer s.wg.Done()
			err := s.serve(i, c)
			c.Close()
			s.errs[i] = err
			close(s.done[i])
		}(i)
	}
}

// errMismatch ends a connection after a failure reported with t.Errorf.
var errMismatch = errors.New("script failed (see the test log)")

func (s *Server) serve(i int, c net.Conn) error {
	conn := c
	logf := func(format string, args ...any) {
		s.t.Logf("pop3test #%d: "+format, append([]any{i + 1}, args...)...)
	}
	if s.implicit {
		tc, err := s.handshake(c)
		if err != nil {
			logf("implicit TLS handshake: %v", err)
			return fmt.Errorf("implicit TLS handshake: %w", err)
		}
		conn = tc
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	w := bufio.NewWriterSize(conn, 64<<10)
	flush := func() error {
		conn.SetWriteDeadline(time.Now().Add(s.timeout))
		return w.Flush()
	}
	for _, st := range s.scripts[i] {
		fail := func(err error) error { return fmt.Errorf("script line %d: %w", st.line, err) }
		switch st.op {
		case opSend:
			logf("S: %s", short(st.text))
			conn.SetWriteDeadline(time.Now().Add(s.timeout))
			if _, err := w.WriteString(st.text + "\r\n"); err != nil {
				return fail(err)
			}
		case opRaw:
			logf("S!raw %d x %s", st.count, short(fmt.Sprintf("%q", st.data)))
			for k := 0; k < st.count; k++ {
				if w.Available() < len(st.data) {
					conn.SetWriteDeadline(time.Now().Add(s.timeout))
				}
				if _, err := w.Write(st.data); err != nil {
					return fail(err)
				}
			}
		case opSeq:
			logf("S!seq %d x %s", st.count, short(fmt.Sprintf("%q", string(st.data)+"%d"+string(st.tail))))
			num := make([]byte, 0, 20)
			for k := 1; k <= st.count; k++ {
				num = strconv.AppendInt(num[:0], int64(k), 10)
				if w.Available() < len(st.data)+len(num)+len(st.tail) {
					conn.SetWriteDeadline(time.Now().Add(s.timeout))
				}
				w.Write(st.data)
				w.Write(num)
				if _, err := w.Write(st.tail); err != nil {
					return fail(err)
				}
			}
		case opExpect:
			if err := flush(); err != nil {
				return fail(err)
			}
			conn.SetReadDeadline(time.Now().Add(s.timeout))
			line, err := r.ReadSlice('\n')
			if err != nil {
				return fail(fmt.Errorf("waiting for %q: %w (got %q)", st.text, err, line))
			}
			got, ok := strings.CutSuffix(string(line), "\r\n")
			logf("C: %s", short(got))
			if !ok {
				s.t.Errorf("pop3test #%d: script line %d: command %q does not end in CRLF", i+1, st.line, line)
				return errMismatch
			}
			if got != st.text {
				s.t.Errorf("pop3test #%d: script line %d: client sent %q, want %q", i+1, st.line, got, st.text)
				return errMismatch
			}
		case opClose:
			logf("S!close")
			return flush()
		case opDiscard:
			if err := flush(); err != nil {
				return fail(err)
			}
			logf("S!discard")
			return s.discard(conn)
		case opSleep:
			if err := flush(); err != nil {
				return fail(err)
			}
			logf("S!sleep %v", st.d)
			s.sleep(conn, r, st.d)
		case opStartTLS:
			if err := flush(); err != nil {
				return fail(err)
			}
			if n := r.Buffered(); n > 0 {
				early, _ := r.Peek(n)
				s.t.Errorf("pop3test #%d: script line %d: client sent %q before the TLS handshake", i+1, st.line, early)
				return errMismatch
			}
			tc, err := s.handshake(conn)
			if err != nil {
				logf("S!starttls handshake: %v", err)
				return fail(fmt.Errorf("TLS handshake: %w", err))
			}
			logf("S!starttls done")
			conn = tc
			r.Reset(tc)
			w.Reset(tc)
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("end of script: %w", err)
	}
	// The script is over: the client may only close the connection.
	conn.SetReadDeadline(time.Now().Add(s.timeout))
	var buf [256]byte
	n, err := r.Read(buf[:])
	if n > 0 {
		s.t.Errorf("pop3test #%d: client sent %q after the end of the script", i+1, buf[:n])
		return errMismatch
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.New("end of script: the client did not close the connection")
	}
	return nil // EOF, or a reset from a client that closed with unread data
}

func (s *Server) discard(conn net.Conn) error {
	buf := make([]byte, 4096)
	for {
		conn.SetReadDeadline(time.Now().Add(s.timeout))
		if _, err := conn.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errors.New("S!discard: the client did not close the connection")
			}
			return nil
		}
	}
}

func (s *Server) handshake(c net.Conn) (*tls.Conn, error) {
	tc := tls.Server(c, s.tlsConfig)
	c.SetDeadline(time.Now().Add(s.timeout))
	err := tc.Handshake()
	c.SetDeadline(time.Time{})
	return tc, err
}

// sleep pauses for d, or less if the client disconnects (the read fails
// with EOF) or the server stops. Data the client sends meanwhile stays
// buffered for the next C: line.
func (s *Server) sleep(conn net.Conn, r *bufio.Reader, d time.Duration) {
	end := time.Now().Add(d)
	conn.SetReadDeadline(end)
	if _, err := r.Peek(1); err != nil {
		return // the deadline passed (a full sleep), or the client is gone
	}
	select {
	case <-time.After(time.Until(end)):
	case <-s.quit:
	}
}

func short(s string) string {
	if len(s) > 100 {
		return fmt.Sprintf("%s... (%d bytes)", s[:100], len(s))
	}
	return s
}
