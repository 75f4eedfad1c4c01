// Package faultnet is a TCP relay for tests that breaks things on
// purpose: placed between the proxy and a real server or scanner, it
// forwards bytes faithfully until told to refuse connections, cut them,
// stall, answer with garbage or with an answer that never ends. Real
// daemons cannot be made to fail in these ways at a chosen moment; the
// relay can, while everything else stays real. Retarget moves it to
// another instance of the server, so that a server can be restarted
// behind a stable address.
package faultnet

import (
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what the relay does to connections.
type Fault int

const (
	// None forwards faithfully.
	None Fault = iota
	// Refuse closes every new connection at once.
	Refuse
	// Cut forwards at most n more bytes from the server on each
	// connection (n given to Set), then closes both sides.
	Cut
	// Stall stops forwarding in both directions and holds the
	// connections open until the fault changes or the relay closes.
	Stall
	// Garbage answers new connections with random bytes instead of the
	// server's, then closes.
	Garbage
	// Endless forwards at most n more bytes from the server on each
	// connection, then sends lines of filler instead, without end and
	// never a line that ends a POP3 multi-line answer, until the
	// client closes or the fault changes.
	Endless
	// QuitErr answers a POP3 QUIT with "-ERR" and closes. With n = 0 the
	// server never sees the QUIT (nothing is deleted, as when the server
	// fails to commit); with n = 1 it does and its answer is replaced
	// (deletions done, yet the client hears of a failure).
	QuitErr
)

var faultNames = [...]string{"none", "refuse", "cut", "stall", "garbage", "endless", "quit-err"}

// quitErrAnswer is what QuitErr answers (RFC 2449 §8.1.2 code).
const quitErrAnswer = "-ERR [SYS/TEMP] faultnet: deletions not committed\r\n"

func (f Fault) String() string { return faultNames[f] }

// Relay forwards loopback connections to a target address.
type Relay struct {
	ln net.Listener

	target   atomic.Pointer[string]
	fault    atomic.Int32
	budget   atomic.Int64  // Cut's and Endless's n
	gen      atomic.Uint64 // counts Set calls, so connections restart their count
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when the fault changes
	conns    map[net.Conn]struct{}
	clients  int
	closed   bool
	wg       sync.WaitGroup
	accepted atomic.Int64
}

// New starts a relay on a free loopback port to target.
func New(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{ln: ln, changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	r.target.Store(&target)
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the relay's address, to give the proxy instead of the target's.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Accepted counts the connections the relay has accepted.
func (r *Relay) Accepted() int64 { return r.accepted.Load() }

// Open counts the client connections open now.
func (r *Relay) Open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clients
}

// Retarget sends new connections to addr; open ones stay where they are.
func (r *Relay) Retarget(addr string) { r.target.Store(&addr) }

// Set changes the fault. Refuse and Garbage apply to new connections;
// Cut, Stall and Endless also to open ones, whose count of n bytes
// starts now.
func (r *Relay) Set(f Fault, n int64) {
	r.budget.Store(n)
	r.fault.Store(int32(f))
	r.gen.Add(1)
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Fault returns the fault in force.
func (r *Relay) Fault() Fault { return Fault(r.fault.Load()) }

func (r *Relay) changes() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Close stops the relay and closes every connection it holds.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) track(c net.Conn, client bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	if client {
		r.clients++
	}
	return true
}

func (r *Relay) untrack(c net.Conn, client bool) {
	r.mu.Lock()
	delete(r.conns, c)
	if client {
		r.clients--
	}
	r.mu.Unlock()
	c.Close()
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.accepted.Add(1)
		if !r.track(c, true) {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.untrack(c, true)
			r.serve(c)
		}()
	}
}

func (r *Relay) serve(client net.Conn) {
	switch r.Fault() {
	case Refuse:
		return
	case Garbage:
		junk := make([]byte, 64+rand.IntN(4096))
		for i := range junk {
			junk[i] = byte(rand.IntN(256))
		}
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(junk)
		return
	}
	server, err := net.DialTimeout("tcp", *r.target.Load(), 5*time.Second)
	if err != nil {
		return
	}
	if !r.track(server, false) {
		return
	}
	defer r.untrack(server, false)
	// A half-close passes through (spamd's client ends its request that
	// way and then reads the answer); anything else ends both sides.
	abort := func() { client.Close(); server.Close() }
	var quit atomic.Bool // QUIT forwarded under QuitErr: replace the answer
	done := make(chan struct{}, 2)
	go func() { r.pipe(server, client, false, &quit, abort); done <- struct{}{} }()
	go func() { r.pipe(client, server, true, &quit, abort); done <- struct{}{} }()
	<-done
	<-done
}

// pipe copies src to dst, obeying Stall, Cut and Endless on the server's
// side (fromServer) and QuitErr on both. At src's end it half-closes dst;
// on anything else it calls abort, which ends both directions.
func (r *Relay) pipe(dst, src net.Conn, fromServer bool, quit *atomic.Bool, abort func()) {
	buf := make([]byte, 16<<10)
	gen, sent := r.gen.Load(), int64(0)
	for {
		n, err := src.Read(buf)
		// Bytes read while stalled wait here until the stall ends.
		for r.Fault() == Stall {
			select {
			case <-r.changes():
			case <-time.After(time.Second):
			}
			if r.isClosed() {
				abort()
				return
			}
		}
		if g := r.gen.Load(); g != gen {
			gen, sent = g, 0
		}
		if n > 0 && r.Fault() == QuitErr {
			if !fromServer && strings.EqualFold(string(buf[:n]), "QUIT\r\n") {
				if r.budget.Load() == 0 {
					src.SetWriteDeadline(time.Now().Add(2 * time.Second))
					io.WriteString(src, quitErrAnswer)
					abort()
					return
				}
				quit.Store(true)
			}
			if fromServer && quit.Load() {
				dst.SetWriteDeadline(time.Now().Add(2 * time.Second))
				io.WriteString(dst, quitErrAnswer)
				abort()
				return
			}
		}
		if n > 0 {
			chunk := buf[:n]
			limited := false
			if f := r.Fault(); fromServer && (f == Cut || f == Endless) {
				left := max(r.budget.Load()-sent, 0)
				if int64(len(chunk)) >= left {
					chunk, limited = chunk[:left], true
				}
			}
			if _, werr := dst.Write(chunk); werr != nil {
				abort()
				return
			}
			sent += int64(len(chunk))
			if limited {
				if r.Fault() == Endless {
					r.flood(dst, gen)
				}
				abort()
				return
			}
		}
		if err == io.EOF {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
		if err != nil {
			abort()
			return
		}
	}
}

// flood writes filler lines to dst until a write fails or the fault
// changes. Each line starts with a letter, so none is the "." that ends
// a multi-line answer (RFC 1939 §3) and none needs dot-stuffing.
func (r *Relay) flood(dst net.Conn, gen uint64) {
	line := []byte("Xfiller-line-that-never-ends-the-answer-0123456789abcdefghijklmnopqrstuvwxyz\r\n")
	block := make([]byte, 0, 64<<10)
	for len(block)+len(line) <= cap(block) {
		block = append(block, line...)
	}
	for r.gen.Load() == gen && !r.isClosed() {
		dst.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := dst.Write(block); err != nil {
			return
		}
	}
}

func (r *Relay) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}
