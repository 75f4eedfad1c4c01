package pop3server

import (
	"context"
	"errors"
	"sync"
)

// Interim lets a Retr or Top that may take long keep its client waiting:
// clients give up on a silent server after about a minute (docs/clients.md,
// Outlook), while a download and a scan may take longer. The server puts
// one into the context of those calls (InterimFrom).
//
// Send may be called from any goroutine while the call runs, typically from
// a timer, so that the call itself needs no goroutine of its own.
type Interim struct {
	c *conn

	mu      sync.Mutex
	started bool // the status line has gone out
	ended   bool // the call has returned
}

// ErrInterimEnded is returned by Send after the call has returned.
var ErrInterimEnded = errors.New("pop3server: the command's answer has begun")

type interimKey struct{}

// InterimFrom returns the Interim of a Retr or Top call, or nil.
func InterimFrom(ctx context.Context) *Interim {
	i, _ := ctx.Value(interimKey{}).(*Interim)
	return i
}

// Send sends "+OK message follows" unless it has been sent, then p as the
// next bytes of the message (dot-stuffed like the rest of it), and flushes
// them to the client. p should end with a line.
//
// After the first Send the call's Message is sent without a status line of
// its own (its Size is not announced), and the call can no longer be
// answered with -ERR: if it returns an error, the server closes the
// connection without the terminating dot, so that the client keeps
// nothing of the message and nothing is committed upstream.
func (i *Interim) Send(p []byte) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.ended {
		return ErrInterimEnded
	}
	c := i.c
	if !i.started {
		i.started = true
		c.writeLine("+OK message follows")
		c.inMultiline = true
		c.dot.reset(c.bw)
	}
	if _, err := c.dot.Write(p); err != nil {
		return err
	}
	return c.bw.Flush()
}

// end stops further Sends and reports whether one has started the answer.
// The conn goroutine calls it before it writes again itself.
func (i *Interim) end() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.ended = true
	return i.started
}

// withInterim runs a Retr or Top call with an Interim in its context and
// returns its result and whether the answer has begun.
func (c *conn) withInterim(call func(ctx context.Context) (*Message, error)) (*Message, error, bool) {
	i := &Interim{c: c}
	m, err := call(context.WithValue(c.ctx, interimKey{}, i))
	return m, err, i.end()
}
