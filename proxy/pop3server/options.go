package pop3server

import (
	"crypto/tls"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"go.uber.org/zap"
)

// Defaults for the zero values of Options.
const (
	DefaultGreeting       = "POP3 server ready"
	DefaultMaxLineLength  = 4096
	DefaultMaxBadCommands = 10
	DefaultAuthTimeout    = 60 * time.Second
	DefaultIdleTimeout    = 10 * time.Minute
	DefaultWriteTimeout   = 60 * time.Second

	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultMaxConnections      = 1000
	DefaultMaxConnectionsPerIP = 20
	DefaultFailedLoginDelay    = time.Second
	DefaultMaxFailedLoginDelay = 30 * time.Second

	// MinMaxLineLength is the smallest allowed MaxLineLength: RFC 2449 §4
	// requires servers that implement CAPA to accept 255-octet commands.
	MinMaxLineLength = 255

	// maxResponseLine is the limit on the first line of a response,
	// CRLF included (RFC 1939 §3, unchanged by RFC 2449 §4).
	maxResponseLine = 512
)

// Options configures a Server. The zero value of each field selects its
// default; NewServer reports every invalid field at once.
type Options struct {
	// Backend authenticates clients and opens their maildrops. Required.
	// If it implements UserChecker, USER is checked; if it implements
	// APOPBackend, the greeting carries an APOP timestamp and APOP is
	// accepted.
	Backend Backend

	// Logger receives the server's logs; each connection logs through
	// Logger.With(conn id, remote address). Passwords and APOP digests are
	// never logged. Default: zap.NewNop().
	Logger *zap.Logger

	// Greeting is the text after "+OK " in the greeting. It must not
	// contain CR, LF or NUL, nor anything shaped like an APOP timestamp
	// ("<...@...>"), because clients try APOP whenever they see one. The
	// whole greeting line, APOP timestamp included, must fit the 512-octet
	// response limit of RFC 1939 §3. Default: DefaultGreeting.
	Greeting string

	// Hostname is the host part of the APOP timestamp
	// (<pid.counter.clock@hostname>, RFC 1939 §7). Default: os.Hostname(),
	// or "localhost" if that is not a plain host name.
	Hostname string

	// Implementation, if set, is announced as "IMPLEMENTATION <text>" in
	// CAPA (RFC 2449 §6.9). Default: not announced.
	Implementation string

	// PreLoginCapabilities are the maildrop capabilities announced by CAPA
	// in the AUTHORIZATION state: any of "TOP" and "UIDL". A backend that
	// cannot promise them before login (RFC 2449 §5: capabilities announced
	// before login must also be announced after it) sets an empty, non-nil
	// slice. Default (nil): TOP and UIDL.
	PreLoginCapabilities []string

	// LoginDelay, if positive, is announced as "LOGIN-DELAY <n>" (RFC 2449
	// §6.5) before login, and after login for sessions that do not
	// implement CapabilitySession. Default: not announced.
	LoginDelay int

	// Expire, if set, is announced as "EXPIRE <x>" (RFC 2449 §6.7) in the
	// same way: a number of days or "NEVER", optionally followed by
	// " USER". Default: not announced.
	Expire string

	// MaxLineLength limits a command line, CRLF included. A longer line is
	// answered "-ERR line too long" and discarded without being buffered.
	// At least MinMaxLineLength. Default: DefaultMaxLineLength.
	MaxLineLength int

	// MaxBadCommands is how many unknown, malformed or out-of-state
	// commands, overlong lines and failed logins a connection may send;
	// the next one is answered "-ERR too many bad commands" and the
	// connection is closed. Default: DefaultMaxBadCommands.
	MaxBadCommands int

	// AuthTimeout is the idle limit in the AUTHORIZATION state.
	// Default: DefaultAuthTimeout.
	AuthTimeout time.Duration

	// IdleTimeout is the idle limit in the TRANSACTION state, the
	// autologout timer of RFC 1939 §3. The RFC requires at least 10
	// minutes; the server accepts any positive value (so tests can use
	// short ones) and leaves enforcing the minimum to the configuration
	// layer. On expiry, as on AuthTimeout, the connection is closed
	// without a response and without entering the UPDATE state.
	// Default: DefaultIdleTimeout.
	IdleTimeout time.Duration

	// WriteTimeout is the deadline for each write to the client.
	// Default: DefaultWriteTimeout.
	WriteTimeout time.Duration

	// OnConnect, if set, is called for each new connection before the
	// greeting. If it returns an error, that error is sent as the -ERR
	// greeting (an *Error as is, any other as an internal error) and the
	// connection is closed.
	OnConnect func(c *ConnInfo) error

	// OnDisconnect, if set, is called after a connection and its session
	// have been closed.
	OnDisconnect func(c *ConnInfo)

	// AllowShutdown enables the SHUTDOWN command of Net::Server::POP3proxy:
	// in the AUTHORIZATION state, a client for which AllowShutdown returns
	// true gets "+OK shutting down", its connection is closed, and
	// OnShutdown is called in a new goroutine (typically to call
	// Server.Shutdown). For everyone else SHUTDOWN is an unknown command.
	// It is never announced in CAPA.
	AllowShutdown func(c *ConnInfo) bool
	OnShutdown    func()

	// TLSConfig enables TLS: plain connections offer STLS (RFC 2595 §4)
	// in the AUTHORIZATION state, and ServeTLS serves implicit TLS
	// (RFC 8314). It must provide certificates (Certificates,
	// GetCertificate or GetConfigForClient); GetCertificate may reload
	// them while the server runs. The server uses a clone, with MinVersion
	// raised to TLS 1.2 (RFC 8314 §4.1) unless the caller set it.
	// Default: nil, no TLS.
	TLSConfig *tls.Config

	// HandshakeTimeout bounds the TLS handshake of ServeTLS connections
	// and after STLS. Default: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// RequireTLS refuses USER, PASS, APOP and AUTH on plain connections,
	// until STLS, with "-ERR [AUTH] Plaintext authentication disallowed on
	// non-secure (SSL/TLS) connections." (RFC 3206 §4 counts a login
	// against policy as an [AUTH] problem; the text is Dovecot's). CAPA
	// there announces STLS but neither USER nor SASL. Requires TLSConfig.
	RequireTLS bool

	// TLSExempt, if set, exempts the plain connections for which it
	// returns true (loopback clients, typically) from RequireTLS. It is
	// called once per connection, before the greeting.
	TLSExempt func(c *ConnInfo) bool

	// MaxConnections limits the connections of all listeners together;
	// one more is answered "-ERR [SYS/TEMP] too many connections" and
	// closed (after the handshake on a ServeTLS listener, so that the
	// client can read why), without OnConnect, OnDisconnect or any
	// backend call. Connections in their TLS handshake count. Negative:
	// unlimited. Default: DefaultMaxConnections.
	MaxConnections int

	// MaxConnectionsPerIP limits the connections from one client IP
	// address (the address of ConnInfo.RemoteAddr, which behind a PROXY
	// protocol listener is the real client's); one more is answered
	// "-ERR [SYS/TEMP] too many connections from your address" and closed.
	// Connections without an IP address (Unix sockets) only count toward
	// MaxConnections. Negative: unlimited. Default:
	// DefaultMaxConnectionsPerIP.
	MaxConnectionsPerIP int

	// FailedLoginDelay is how long the server waits before answering a
	// failed PASS, APOP or AUTH. The delay doubles with each further
	// failure from the same client IP address, up to MaxFailedLoginDelay,
	// and resets after a successful login from that address or 15 minutes
	// without failures. Negative: no delay. Default:
	// DefaultFailedLoginDelay.
	FailedLoginDelay time.Duration

	// MaxFailedLoginDelay caps FailedLoginDelay's doubling; it must not be
	// below FailedLoginDelay. Default: DefaultMaxFailedLoginDelay.
	MaxFailedLoginDelay time.Duration
}

// config is Options with defaults applied and derived values computed.
type config struct {
	Options
	prelogin []string
	apop     APOPBackend
	users    UserChecker
	pid      string
	tls      *tls.Config // clone of TLSConfig, nil without TLS
}

func newConfig(opts Options) (*config, error) {
	c := &config{Options: opts, pid: strconv.Itoa(os.Getpid())}
	var errs *multierror.Error
	fail := func(format string, args ...any) {
		errs = multierror.Append(errs, fmt.Errorf(format, args...))
	}

	if c.Backend == nil {
		fail("Backend is required")
	} else {
		c.apop, _ = c.Backend.(APOPBackend)
		c.users, _ = c.Backend.(UserChecker)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Hostname == "" {
		c.Hostname = defaultHostname()
	} else if !isHostname(c.Hostname) {
		fail("Hostname %q is not a host name", c.Hostname)
	}
	if c.Greeting == "" {
		c.Greeting = DefaultGreeting
	}
	c.checkGreeting(fail)
	if strings.ContainsAny(c.Implementation, "\r\n\x00") {
		fail("Implementation must not contain CR, LF or NUL")
	} else if n := len("IMPLEMENTATION ") + len(c.Implementation) + 2; n > maxResponseLine {
		fail("Implementation is %d octets too long", n-maxResponseLine)
	}
	if c.PreLoginCapabilities == nil {
		c.prelogin = []string{"TOP", "UIDL"}
	}
	for _, capa := range c.PreLoginCapabilities {
		switch u := strings.ToUpper(capa); u {
		case "TOP", "UIDL":
			c.prelogin = append(c.prelogin, u)
		default:
			fail("PreLoginCapabilities: %q is not TOP or UIDL", capa)
		}
	}
	if c.LoginDelay < 0 {
		fail("LoginDelay must not be negative")
	}
	if c.Expire != "" && !validExpire(c.Expire) {
		fail(`Expire %q is not "<days>", "NEVER", "<days> USER" or "NEVER USER"`, c.Expire)
	}

	switch {
	case c.MaxLineLength == 0:
		c.MaxLineLength = DefaultMaxLineLength
	case c.MaxLineLength < MinMaxLineLength:
		fail("MaxLineLength %d is below the RFC 2449 minimum of %d", c.MaxLineLength, MinMaxLineLength)
	}
	switch {
	case c.MaxBadCommands == 0:
		c.MaxBadCommands = DefaultMaxBadCommands
	case c.MaxBadCommands < 0:
		fail("MaxBadCommands must not be negative")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"AuthTimeout", &c.AuthTimeout, DefaultAuthTimeout},
		{"IdleTimeout", &c.IdleTimeout, DefaultIdleTimeout},
		{"WriteTimeout", &c.WriteTimeout, DefaultWriteTimeout},
		{"HandshakeTimeout", &c.HandshakeTimeout, DefaultHandshakeTimeout},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			fail("%s must not be negative", d.name)
		}
	}
	c.checkTLS(fail)
	c.checkLimits(fail)
	if c.AllowShutdown == nil && c.OnShutdown != nil {
		fail("OnShutdown is set but AllowShutdown is nil, so SHUTDOWN is never accepted")
	}

	if err := errs.ErrorOrNil(); err != nil {
		errs.ErrorFormat = formatErrors
		return nil, err
	}
	return c, nil
}

func formatErrors(errs []error) string {
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return "pop3server: invalid Options: " + strings.Join(msgs, "; ")
}

// checkGreeting enforces RFC 1939 §3 (512 octets per response line) and
// keeps "<...@...>" out of the text (clients would take it for an APOP
// timestamp, RFC 1939 §7).
func (c *config) checkGreeting(fail func(format string, args ...any)) {
	g := c.Greeting
	if strings.ContainsAny(g, "\r\n\x00") {
		fail("Greeting must not contain CR, LF or NUL")
		return
	}
	if lt := strings.IndexByte(g, '<'); lt >= 0 {
		if at := strings.IndexByte(g[lt:], '@'); at >= 0 && strings.IndexByte(g[lt+at:], '>') >= 0 {
			fail(`Greeting must not contain "<...@...>", which clients take for an APOP timestamp`)
			return
		}
	}
	n := len("+OK ") + len(g) + len("\r\n")
	if c.apop != nil {
		n += 1 + c.maxTimestampLen()
	}
	if n > maxResponseLine {
		fail("Greeting line can reach %d octets, more than the %d of RFC 1939 §3", n, maxResponseLine)
	}
}

// validExpire checks the EXPIRE argument of RFC 2449 §6.7.
func validExpire(s string) bool {
	s = strings.TrimSuffix(s, " USER")
	return s == "NEVER" || isDigits(s)
}

func defaultHostname() string {
	h, err := os.Hostname()
	if err != nil || !isHostname(h) {
		return "localhost"
	}
	return h
}

// isHostname accepts letters, digits, '-' and '.', which keeps the APOP
// timestamp a valid msg-id and free of CR/LF.
func isHostname(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		b := h[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '.') {
			return false
		}
	}
	return true
}
