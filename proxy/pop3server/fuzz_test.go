package pop3server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// FuzzCommand feeds arbitrary client bytes to a server, before and after
// login, and checks that nothing is logged at error level, every status
// line is "+OK", "-ERR" or "+ " within 512 octets, multi-line responses are
// terminated, and the session ends soon after the input.
func FuzzCommand(f *testing.F) {
	p := newTestPKI(f)
	core, logs := observer.New(zapcore.ErrorLevel)
	ln := newPipeListener()
	srv, err := pop3server.NewServer(pop3server.Options{
		Backend:             fuzzBackend{},
		Logger:              zap.New(core),
		TLSConfig:           p.server,
		HandshakeTimeout:    time.Second,
		AuthTimeout:         2 * time.Second,
		IdleTimeout:         2 * time.Second,
		WriteTimeout:        2 * time.Second,
		MaxLineLength:       512,
		FailedLoginDelay:    -1,
		MaxConnections:      -1,
		MaxConnectionsPerIP: -1,
	})
	if err != nil {
		f.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(served)
	}()
	f.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})

	f.Fuzz(func(t *testing.T, input []byte) {
		for _, prefix := range []string{"", "USER alice\r\nPASS secret\r\n"} {
			out := ln.session(t, append([]byte(prefix), input...))
			checkResponses(t, prefix != "", out)
			if entries := logs.TakeAll(); len(entries) > 0 {
				t.Fatalf("logged at error level: %q %v", entries[0].Message, entries[0].ContextMap())
			}
		}
	})
}

// fuzzBackend accepts any user with password "secret" and the token
// "good"; other tokens get an error challenge; APOP always fails.
type fuzzBackend struct{}

func (fuzzBackend) LoginToken(ctx context.Context, c *pop3server.ConnInfo, mech string, cred pop3server.TokenCredentials) (pop3server.Session, error) {
	if cred.Token == "good" {
		return newFakeSession(), nil
	}
	return nil, &pop3server.Challenge{Data: []byte(`{"status":"401"}`),
		Answer: func(context.Context, []byte) error { return pop3server.ErrAuthFailed }}
}

func (fuzzBackend) Login(ctx context.Context, c *pop3server.ConnInfo, user, pass string) (pop3server.Session, error) {
	if pass != "secret" {
		return nil, pop3server.ErrAuthFailed
	}
	return newFakeSession(), nil
}

func (fuzzBackend) LoginAPOP(ctx context.Context, c *pop3server.ConnInfo, user, timestamp, digest string) (pop3server.Session, error) {
	return nil, pop3server.ErrAuthFailed
}

var octetsLine = regexp.MustCompile(`^\+OK [0-9]+ octets$`)

// checkResponses parses a server's output. The multi-line responses are
// recognised by their first lines, which are the server's own texts.
func checkResponses(t *testing.T, loggedIn bool, out []byte) {
	t.Helper()
	all := out
	transaction := false
	inMulti := false
	first := true
	for len(out) > 0 {
		i := bytes.Index(out, []byte("\r\n"))
		if i < 0 {
			t.Fatalf("output ends without CRLF: %q", out)
		}
		line := string(out[:i])
		out = out[i+2:]
		if bytes.IndexByte([]byte(line), '\n') >= 0 {
			t.Fatalf("bare LF in response line %q", line)
		}
		if inMulti {
			if line == "." {
				inMulti = false
			}
			continue
		}
		if len(line)+2 > 512 {
			t.Fatalf("status line of %d octets: %.80q", len(line)+2, line)
		}
		ok := line == "+OK" || hasPrefix(line, "+OK ")
		if !ok && line != "-ERR" && !hasPrefix(line, "-ERR ") && !hasPrefix(line, "+ ") {
			t.Fatalf("not a status line: %q", line)
		}
		if first {
			if !ok {
				t.Fatalf("greeting %q", line)
			}
			first = false
			continue
		}
		switch {
		case line == "+OK maildrop locked and ready":
			transaction = true
		case line == "+OK Begin TLS negotiation":
			// The rest is TLS records, or nothing.
			return
		case line == "+OK capability list follows", line == "+OK scan listing follows",
			line == "+OK unique-id listing follows", line == "+OK message follows",
			octetsLine.MatchString(line),
			// A bare AUTH's mechanism list; in TRANSACTION "+OK" answers
			// NOOP and RSET.
			line == "+OK" && !transaction:
			inMulti = true
		}
	}
	if inMulti {
		t.Fatal("output ends inside a multi-line response")
	}
	if first {
		t.Fatal("no greeting")
	}
	if loggedIn && !transaction {
		t.Fatalf("login prefix did not log in: %q", all)
	}
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// pipeListener makes each connection of two net.Pipes, one per direction,
// so that the client can end its input and still read all the responses.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return fuzzServerAddr }

var (
	fuzzServerAddr = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 110}
	fuzzClientAddr = &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 40000}
)

// session sends input to a new connection, ends it, and returns all the
// server wrote before closing, which must happen within ioTimeout.
func (l *pipeListener) session(t *testing.T, input []byte) []byte {
	t.Helper()
	inC, inS := net.Pipe()   // client writes, server reads
	outS, outC := net.Pipe() // server writes, client reads
	select {
	case l.conns <- &pipeConn{r: inS, w: outS}:
	case <-time.After(ioTimeout):
		t.Fatal("server does not accept")
	}
	writeErr := make(chan error, 1)
	go func() {
		inC.SetWriteDeadline(time.Now().Add(ioTimeout))
		_, err := inC.Write(input)
		inC.Close()
		if errors.Is(err, io.ErrClosedPipe) {
			err = nil // the server hung up first (QUIT, too many bad commands)
		}
		writeErr <- err
	}()
	outC.SetReadDeadline(time.Now().Add(ioTimeout))
	out, err := io.ReadAll(bufio.NewReader(outC))
	outC.Close()
	if err != nil {
		t.Fatalf("reading responses: %v (session did not end?) after %q", err, truncateBytes(out, 200))
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("writing input: %v", err)
	}
	return out
}

func truncateBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

type pipeConn struct {
	r, w net.Conn
}

func (c *pipeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c *pipeConn) Close() error {
	c.r.Close()
	return c.w.Close()
}
func (c *pipeConn) LocalAddr() net.Addr                { return fuzzServerAddr }
func (c *pipeConn) RemoteAddr() net.Addr               { return fuzzClientAddr }
func (c *pipeConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// SetReadDeadline ignores a closed input pipe: net.Pipe refuses deadlines
// once the client has closed its end, where a TCP socket after the peer's
// FIN accepts them and reads EOF.
func (c *pipeConn) SetReadDeadline(t time.Time) error {
	if err := c.r.SetReadDeadline(t); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		return err
	}
	return nil
}

func (c *pipeConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.w.SetWriteDeadline(t)
}
