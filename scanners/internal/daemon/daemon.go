// Package daemon is what the scanner plugins' clients share about talking
// to a daemon (clamd, spamd, rspamd): telling the proxy's own read failures
// from the daemon's, the cause of a failed ping, and untrusted replies in
// error messages.
package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/internal/neterr"
)

// ReadError is a failure to read the message being sent (a spool file's
// I/O error), not the daemon's: the daemon got a short message, so no
// reply can be about it.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "reading the message: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// IsReadError reports whether err is, or wraps, a *ReadError.
func IsReadError(err error) bool {
	var re *ReadError
	return errors.As(err, &re)
}

// PingFailure says why a ping failed: the context's reason first (a ping
// cut short by the caller says nothing about the daemon), a deadline as
// context.DeadlineExceeded, else the network error's cause.
func PingFailure(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return neterr.Cause(err)
}

// Quote quotes and shortens untrusted text for an error or a log line.
func Quote(s string) string {
	const max = 200
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// Connect dials a daemon for one exchange, which ctx bounds, or
// filter.DefaultTimeout when it has no deadline: the connection carries
// the deadline, and ctx's end closes it, interrupting a blocked read or
// write at once. done releases it all.
func Connect(ctx context.Context, network, address string) (conn net.Conn, done func(), err error) {
	cancel := func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, filter.DefaultTimeout)
	}
	var d net.Dialer
	if conn, err = d.DialContext(ctx, network, address); err != nil {
		cancel()
		return nil, nil, err
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return conn, func() { stop(); conn.Close(); cancel() }, nil
}
