package pop3server

import (
	"errors"

	"go.uber.org/zap"
)

// Observer receives the server's events, for metrics. It is this package's
// interface, so that the framework depends on no metrics library. Its
// methods are called concurrently from the connections' goroutines on every
// connection and login, so they must be quick and must not block.
type Observer interface {
	// SessionStarted is called for every accepted connection, before
	// anything is read from it.
	SessionStarted()
	// SessionEnded is called exactly once for every SessionStarted, once
	// the connection is closed, with why it ended.
	SessionEnded(result SessionResult)
	// Login is called for every login attempt that reached a decision: a
	// password, APOP digest or token checked by the backend, a user name
	// refused by UserChecker, or a token login that failed before the
	// backend saw it (malformed, or abandoned at the error challenge).
	Login(mechanism LoginMechanism, result LoginResult)
}

// SessionResult is why a connection ended, from a small closed set, so
// that it can label a metric.
type SessionResult uint8

const (
	// SessionQuit: the client sent QUIT (whether or not UPDATE succeeded).
	SessionQuit SessionResult = iota
	// SessionDisconnect: the client closed the connection, or reading
	// from or writing to it failed.
	SessionDisconnect
	// SessionTimeout: the idle timeout, or the login timeout (AuthTimeout).
	SessionTimeout
	// SessionRefused: over MaxConnections or MaxConnectionsPerIP, refused
	// by OnConnect, or without a valid preamble (PROXY header).
	SessionRefused
	// SessionTLSFailed: the TLS handshake failed (implicit TLS or STLS),
	// or the client sent data after STLS before the handshake.
	SessionTLSFailed
	// SessionBadCommands: one bad command more than MaxBadCommands.
	SessionBadCommands
	// SessionShutdown: closed by Shutdown or Close, or after SHUTDOWN.
	SessionShutdown
	// SessionError: the backend ended the session (an Error with
	// Disconnect, such as a lost upstream), a message body failed, or a
	// panic.
	SessionError
	numSessionResults
)

var sessionResultNames = [numSessionResults]string{
	"quit", "disconnect", "timeout", "refused", "tls_failed", "bad_commands", "shutdown", "error",
}

func (r SessionResult) String() string {
	if r < numSessionResults {
		return sessionResultNames[r]
	}
	return "unknown"
}

// SessionResults lists every SessionResult, for metrics that want all
// label values from the start.
func SessionResults() []SessionResult {
	rs := make([]SessionResult, numSessionResults)
	for i := range rs {
		rs[i] = SessionResult(i)
	}
	return rs
}

// LoginMechanism is how a client logged in.
type LoginMechanism uint8

const (
	LoginUser        LoginMechanism = iota // USER and PASS
	LoginAPOP                              // APOP
	LoginPlain                             // AUTH PLAIN
	LoginLogin                             // AUTH LOGIN
	LoginXOAUTH2                           // AUTH XOAUTH2 (TokenBackend)
	LoginOAUTHBEARER                       // AUTH OAUTHBEARER (TokenBackend)
	numLoginMechanisms
)

var loginMechanismNames = [numLoginMechanisms]string{"user", "apop", "plain", "login", "xoauth2", "oauthbearer"}

func (m LoginMechanism) String() string {
	if m < numLoginMechanisms {
		return loginMechanismNames[m]
	}
	return "unknown"
}

// LoginMechanisms lists every LoginMechanism.
func LoginMechanisms() []LoginMechanism {
	ms := make([]LoginMechanism, numLoginMechanisms)
	for i := range ms {
		ms[i] = LoginMechanism(i)
	}
	return ms
}

// LoginResult is how a login attempt ended.
type LoginResult uint8

const (
	// LoginOK: the client is logged in.
	LoginOK LoginResult = iota
	// LoginFailed: the backend refused the client ([AUTH], [IN-USE],
	// [LOGIN-DELAY], no code, or a user name UserChecker refused).
	LoginFailed
	// LoginError: the backend could not decide ([SYS/TEMP], [SYS/PERM],
	// or an internal error); an outage, not a client's mistake.
	LoginError
	numLoginResults
)

var loginResultNames = [numLoginResults]string{"ok", "failed", "error"}

func (r LoginResult) String() string {
	if r < numLoginResults {
		return loginResultNames[r]
	}
	return "unknown"
}

// LoginResults lists every LoginResult.
func LoginResults() []LoginResult {
	rs := make([]LoginResult, numLoginResults)
	for i := range rs {
		rs[i] = LoginResult(i)
	}
	return rs
}

func loginResult(err error) LoginResult {
	switch {
	case err == nil:
		return LoginOK
	case isSysError(err):
		return LoginError
	}
	return LoginFailed
}

// Summarizer is an optional Session add-on for the connection's last log
// line. Summary is called once, after Close; the line then reads msg
// instead of "disconnect" and carries fields besides the reason and the
// duration, so that one line tells how the session went.
type Summarizer interface {
	Summary() (msg string, fields []zap.Field)
}

// ending is why a connection ends: a log reason, an Observer result.
type ending struct {
	reason string
	result SessionResult
}

func endWith(result SessionResult, reason string) ending {
	return ending{reason: reason, result: result}
}

func (c *conn) observeStart() {
	if o := c.cfg.Observer; o != nil {
		o.SessionStarted()
	}
}

func (c *conn) observeEnd(r SessionResult) {
	if o := c.cfg.Observer; o != nil {
		o.SessionEnded(r)
	}
}

func (c *conn) observeLogin(m LoginMechanism, r LoginResult) {
	if o := c.cfg.Observer; o != nil {
		o.Login(m, r)
	}
}

// isSysError reports a failure of the server rather than a refusal of the
// client: SYS codes (RFC 3206 §4) and errors that are no *Error.
func isSysError(err error) bool {
	var pe *Error
	if !errors.As(err, &pe) {
		return true
	}
	return pe.Code == "SYS/TEMP" || pe.Code == "SYS/PERM"
}
