package pop3server

import (
	"context"
	"crypto/tls"
	"io"
	"net"

	"go.uber.org/zap"
)

// Backend authenticates clients and opens their maildrops. The relaying
// gateway (package proxy) is the production implementation; the
// Maildir server in examples/maildir is a second one.
//
// An *Error returned by any Backend or Session method is sent to the client
// as is; any other error is logged and the client gets a generic
// -ERR line with the SYS/TEMP response code, so internal detail never
// reaches the wire.
type Backend interface {
	// Login is called for USER/PASS in the AUTHORIZATION state (RFC 1939 §7),
	// and for AUTH PLAIN and AUTH LOGIN (RFC 5034), which the server
	// terminates itself. On success the connection enters the TRANSACTION
	// state with the returned Session. From AUTH, username and password
	// never contain CR, LF or NUL; from USER and PASS never CR or NUL (LF
	// ends the line).
	Login(ctx context.Context, c *ConnInfo, username, password string) (Session, error)
}

// BackendFunc adapts a function to the Backend interface.
type BackendFunc func(ctx context.Context, c *ConnInfo, username, password string) (Session, error)

// Login calls f.
func (f BackendFunc) Login(ctx context.Context, c *ConnInfo, username, password string) (Session, error) {
	return f(ctx, c, username, password)
}

var _ Backend = BackendFunc(nil)

// UserChecker is an optional Backend add-on. CheckUser is called on USER, and
// with the user name of AUTH (for LOGIN before the password is asked for), so
// that a name the backend can never serve (for the gateway: a malformed route
// or a destination outside the allow list) is refused before the client sends
// its password. Backends that do not implement it accept every USER.
type UserChecker interface {
	CheckUser(ctx context.Context, c *ConnInfo, username string) error
}

// APOPBackend is an optional Backend add-on for APOP (RFC 1939 §7). Only when
// the backend implements it does the greeting carry a <timestamp>, because
// clients try APOP whenever they see one.
type APOPBackend interface {
	// LoginAPOP verifies digest = lower-case hex MD5(timestamp + secret),
	// as computed by APOPDigest. timestamp is the one this connection's
	// greeting carried; digest has been checked to be 32 hex digits and
	// lower-cased.
	LoginAPOP(ctx context.Context, c *ConnInfo, username, timestamp, digest string) (Session, error)
}

// ConnInfo describes one client connection. Backends must treat it as
// read-only.
type ConnInfo struct {
	// ID is unique per server process, for logs.
	ID uint64
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
	// LocalAddr is the listener address the client connected to.
	LocalAddr net.Addr
	// TLS is the connection's TLS state: set by the handshake of ServeTLS
	// before the greeting, and by STLS; nil on plain connections.
	TLS *tls.ConnectionState
	// Logger carries the connection's fields (conn id, remote address).
	Logger *zap.Logger
}

// MessageInfo is one entry of a scan listing (LIST) or unique-id listing
// (UIDL). Number is the 1-based message number of the session.
type MessageInfo struct {
	Number int
	// Size in octets as defined by RFC 1939 §11: CRLF line endings, without
	// dot-stuffing.
	Size int64
	// UID is the unique-id (RFC 1939 §7: 1-70 characters 0x21-0x7E); only
	// used for UIDL.
	UID string
}

// Message is a message being retrieved by RETR or TOP.
type Message struct {
	// Size is sent in the "+OK <size> octets" line; a negative Size sends
	// "+OK message follows" instead.
	Size int64
	// Body is the message with CRLF line endings and without dot-stuffing.
	// The server stuffs it, makes sure it ends with CRLF, appends the
	// terminating ".", and closes Body exactly once, even on error.
	Body io.ReadCloser
	// Progressive says Body produces data slowly, piece by piece (a
	// keepalive while a filter is still scanning): the server then sends
	// every piece as soon as it is read instead of filling its buffer
	// first, so the client sees the response advance.
	Progressive bool
}

// Session is one authenticated maildrop in the TRANSACTION state. The server
// has already checked the command's state and syntax; message numbers are
// positive and 1-based as on the wire. Methods are called from one goroutine,
// never concurrently.
//
// The Session owns the maildrop's semantics (RFC 1939 §5): messages marked
// deleted are excluded from Stat and List and any command that names one
// gets an error; Rset unmarks them. Backends that only have a list of
// messages can use NewMailboxSession, which implements all of that.
type Session interface {
	// Stat returns the number and total size of undeleted messages.
	Stat(ctx context.Context) (count int, size int64, err error)
	// List returns the scan listing of one message, or of all undeleted
	// messages when msg is 0.
	List(ctx context.Context, msg int) ([]MessageInfo, error)
	// Retr opens a message for RETR.
	Retr(ctx context.Context, msg int) (*Message, error)
	// Dele marks a message deleted.
	Dele(ctx context.Context, msg int) error
	// Rset unmarks all messages marked deleted.
	Rset(ctx context.Context) error
	// Noop is called for NOOP; a backend may use it to keep its own
	// resources alive.
	Noop(ctx context.Context) error
	// Update commits the deletions. It is called only for QUIT in the
	// TRANSACTION state (RFC 1939 §6), never on a dropped connection, a
	// timeout or a shutdown. An error is reported to the client as -ERR.
	Update(ctx context.Context) error
	// Close releases the session. It is called exactly once on every path:
	// on QUIT after Update and before the reply, so that a client logging
	// in again at once finds the maildrop unlocked (RFC 1939 §6); otherwise
	// without Update. A backend must not commit deletions in Close.
	Close() error
}

// UIDLSession is an optional Session add-on: UIDL (RFC 1939 §7).
type UIDLSession interface {
	// Uidl returns the unique-id listing of one message, or of all
	// undeleted messages when msg is 0.
	Uidl(ctx context.Context, msg int) ([]MessageInfo, error)
}

// TopSession is an optional Session add-on: TOP (RFC 1939 §7).
type TopSession interface {
	// Top opens the header, the blank line and the first lines lines of
	// the body of a message.
	Top(ctx context.Context, msg, lines int) (*Message, error)
}

// CapabilitySession is an optional Session add-on. Capabilities returns the
// maildrop capabilities to announce in the TRANSACTION state (RFC 2449 §6):
// any of "TOP", "UIDL", "EXPIRE <arg>" and "LOGIN-DELAY <arg>". The server
// adds its own protocol capabilities (USER, RESP-CODES, PIPELINING, ...).
// TOP and UIDL are announced only if the session also implements TopSession
// or UIDLSession. Without this add-on the server announces TOP and UIDL by
// the interfaces the session implements, and EXPIRE and LOGIN-DELAY from
// Options.
type CapabilitySession interface {
	Capabilities() []string
}
