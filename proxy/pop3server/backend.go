package pop3server

import (
	"context"
	"crypto/tls"
	"io"
	"net"

	"go.uber.org/zap"
)

// Backend authenticates clients and opens their maildrops. Package proxy
// and examples/maildir implement it.
type Backend interface {
	// Login is called for USER/PASS and for AUTH PLAIN and LOGIN (OAuth 2.0
	// tokens go to TokenBackend). On success the connection enters the
	// TRANSACTION state with the returned Session. username and password
	// never contain CR, LF or NUL.
	Login(ctx context.Context, c *ConnInfo, username, password string) (Session, error)
}

// BackendFunc adapts a function to the Backend interface.
type BackendFunc func(ctx context.Context, c *ConnInfo, username, password string) (Session, error)

// Login calls f.
func (f BackendFunc) Login(ctx context.Context, c *ConnInfo, username, password string) (Session, error) {
	return f(ctx, c, username, password)
}

var _ Backend = BackendFunc(nil)

// UserChecker is an optional Backend add-on. CheckUser is called on USER
// and with the user name of AUTH, before the client sends its password, so
// that a name the backend can never serve is refused early.
type UserChecker interface {
	CheckUser(ctx context.Context, c *ConnInfo, username string) error
}

// APOPBackend is an optional Backend add-on for APOP (RFC 1939 §7). Only
// then does the greeting carry a timestamp, because clients try APOP
// whenever they see one (docs/clients.md, Thunderbird).
type APOPBackend interface {
	// LoginAPOP checks digest against APOPDigest(timestamp, secret).
	// timestamp is the one this connection's greeting carried; digest is
	// 32 lower-case hex digits.
	LoginAPOP(ctx context.Context, c *ConnInfo, username, timestamp, digest string) (Session, error)
}

// ConnInfo describes one client connection; backends must not modify it.
type ConnInfo struct {
	// ID is unique per server process.
	ID         uint64
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	// TLS is set once TLS is up (ServeTLS or STLS); nil before.
	TLS *tls.ConnectionState
	// Logger carries the connection id and remote address.
	Logger *zap.Logger
}

// MessageInfo is one entry of a LIST or UIDL listing; Number is 1-based.
type MessageInfo struct {
	Number int
	// Size counts CRLF line endings and no dot-stuffing (RFC 1939 §11).
	Size int64
	// UID is the unique-id for UIDL: 1 to 496 octets in 0x21-0x7E. RFC 1939
	// §7 allows at most 70, but longer ones from an upstream are relayed;
	// the bound keeps "+OK <n> <uid>" within 512 octets. A listing with
	// any other UID is answered "-ERR [SYS/TEMP] internal error".
	UID string
}

// Message is a message being retrieved by RETR or TOP.
type Message struct {
	// Size is sent as "+OK <size> octets"; a negative Size sends
	// "+OK message follows".
	Size int64
	// Body is the message with CRLF line endings and without dot-stuffing.
	// The server closes it exactly once, even on error.
	Body io.ReadCloser
	// Stuffed says Body is dot-stuffed already (RFC 1939 §3), as relayed
	// from another server, and holds no terminating line: the server sends
	// it as it is, adds a CRLF if it lacks a final one, and terminates it.
	Stuffed bool
	// Progressive makes the server flush each piece Body yields at once,
	// so a body that trickles out (a keepalive during a slow scan) is seen.
	Progressive bool
}

// Session is one authenticated maildrop in the TRANSACTION state. State and
// syntax are already checked; message numbers are positive, as on the wire.
// Methods are never called concurrently.
//
// The Session owns the maildrop semantics of RFC 1939 §5: messages marked
// deleted are left out of Stat and List, a command naming one gets an
// error, and Rset unmarks them.
type Session interface {
	// Stat returns the number and total size of undeleted messages.
	Stat(ctx context.Context) (count int, size int64, err error)
	// List returns the listing of message msg, or of all undeleted
	// messages when msg is 0.
	List(ctx context.Context, msg int) ([]MessageInfo, error)
	Retr(ctx context.Context, msg int) (*Message, error)
	Dele(ctx context.Context, msg int) error
	Rset(ctx context.Context) error
	// Noop may keep the backend's own resources alive.
	Noop(ctx context.Context) error
	// Update commits the deletions. It is called only for QUIT in the
	// TRANSACTION state.
	Update(ctx context.Context) error
	// Close is called exactly once: on QUIT after Update and before the
	// reply, so that a client logging in again at once finds the maildrop
	// unlocked; otherwise without Update. It must not commit deletions.
	Close() error
}

// UIDLSession is an optional Session add-on for UIDL. Uidl is List with
// unique-ids, each as MessageInfo.UID requires.
type UIDLSession interface {
	Uidl(ctx context.Context, msg int) ([]MessageInfo, error)
}

// TopSession is an optional Session add-on for TOP. Top returns the
// header, the blank line and the first lines lines of the body.
type TopSession interface {
	Top(ctx context.Context, msg, lines int) (*Message, error)
}

// CapabilitySession is an optional Session add-on. Capabilities returns any
// of "TOP", "UIDL", "EXPIRE <arg>" and "LOGIN-DELAY <arg>" to announce
// after login; TOP and UIDL also need their add-ons. Without it,
// Options.LoginDelay and Expire apply (see Options.Expire).
type CapabilitySession interface {
	Capabilities() []string
}
