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

	// DefaultMaxAuthLineLength fits OAuth 2.0 tokens: kilobytes
	// (Microsoft's over 2 KB), and a third more in base64.
	DefaultMaxAuthLineLength = 16384

	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultMaxConnections      = 1000
	DefaultMaxConnectionsPerIP = 20
	DefaultFailedLoginDelay    = time.Second
	DefaultMaxFailedLoginDelay = 30 * time.Second

	// MinMaxLineLength is the smallest allowed MaxLineLength: RFC 2449 §4
	// requires servers that implement CAPA to accept 255-octet commands.
	MinMaxLineLength = 255

	// maxResponseLine limits the first line of a response, CRLF included
	// (RFC 1939 §3, unchanged by RFC 2449 §4).
	maxResponseLine = 512
)

// Options configures a Server. A zero field selects its default: the
// Default constant of the same name, or as stated. NewServer reports every
// invalid field at once.
type Options struct {
	// Backend is required.
	Backend Backend

	// Logger defaults to zap.NewNop().
	Logger *zap.Logger

	// Greeting is the text after "+OK ": no CR, LF, NUL or "<...@...>", and
	// the line, APOP timestamp included, within 512 octets.
	Greeting string

	// Hostname is the host part of the APOP timestamp. Default:
	// os.Hostname(), or "localhost" if that is not a plain host name.
	Hostname string

	// Implementation, if set, is announced as "IMPLEMENTATION <text>".
	Implementation string

	// PreLoginCapabilities are "TOP", "UIDL", both (the default, nil) or
	// neither (empty), announced before login. RFC 2449 §5 requires them
	// after login too, so a backend must be able to promise them.
	PreLoginCapabilities []string

	// LoginDelay, if positive, is announced as "LOGIN-DELAY <n>" (RFC 2449
	// §6.5) before login, and after it for sessions without
	// CapabilitySession.
	LoginDelay int

	// Expire, if set, is announced like LoginDelay as "EXPIRE <x>"
	// (RFC 2449 §6.7): days or "NEVER", optionally with " USER", then only
	// before login, the one place §6.7 allows USER; after login it wants
	// the user's own value, which only a CapabilitySession can give.
	Expire string

	// MaxLineLength limits every command line, AUTH exchanges included
	// (but see MaxAuthLineLength), counting CRLF; a longer one is refused
	// and discarded unbuffered.
	MaxLineLength int

	// MaxAuthLineLength limits the AUTH and SASL response lines of a
	// TokenBackend before login, which carry tokens; it must not be below
	// MaxLineLength. Such lines are assembled outside the read buffer, so a
	// connection costs more only while it sends one.
	MaxAuthLineLength int

	// MaxBadCommands limits bad commands: unknown, malformed or
	// out-of-state commands, overlong lines and failed logins; one more
	// gets "-ERR too many bad commands" and closes the connection. Before
	// login all count, however many good commands come between; after login
	// only those in a row, as in Dovecot: the login and every success start
	// the count over, and an error that is no bad command
	// ("no such message") neither counts nor starts it over.
	MaxBadCommands int

	// AuthTimeout is how long a client has to log in, from accept: a
	// PreambleConn's preamble, the TLS handshake (ServeTLS or STLS) and
	// every command before login count, and commands do not extend it. Then
	// the connection is closed silently at its next read, during a TLS
	// handshake, or instead of answering a failed login whose
	// FailedLoginDelay would end later. A Backend.Login call in progress is
	// not interrupted.
	AuthTimeout time.Duration

	// IdleTimeout is the autologout timer of RFC 1939 §3, which asks for
	// at least 10 minutes; enforcing that is left to the caller, so tests
	// can use less. It bounds every wait for a command, before login too.
	// Either timeout closes silently, without UPDATE.
	IdleTimeout time.Duration

	// WriteTimeout bounds each write to the client.
	WriteTimeout time.Duration

	// OnConnect, if set, is called before the greeting. An error it
	// returns is sent instead of the greeting and closes the connection.
	OnConnect func(c *ConnInfo) error

	// OnDisconnect, if set, is called after the connection closes.
	OnDisconnect func(c *ConnInfo)

	// AllowShutdown enables Net::Server::POP3proxy's SHUTDOWN command
	// before login: a client it approves gets "+OK shutting down" and
	// OnShutdown runs in a new goroutine (typically calling
	// Server.Shutdown). CAPA never announces SHUTDOWN.
	AllowShutdown func(c *ConnInfo) bool
	OnShutdown    func()

	// TLSConfig enables STLS on Serve and implicit TLS on ServeTLS. It
	// must provide certificates; GetCertificate may reload them. The
	// server uses a clone with MinVersion raised to TLS 1.2 unless set.
	TLSConfig *tls.Config

	// HandshakeTimeout bounds the TLS handshake, for ServeTLS and STLS.
	HandshakeTimeout time.Duration

	// RequireTLS refuses USER, PASS, APOP and AUTH on plain connections
	// with "-ERR [AUTH] Plaintext authentication disallowed on non-secure
	// (SSL/TLS) connections.", and CAPA there lists STLS but neither USER
	// nor SASL. Requires TLSConfig.
	RequireTLS bool

	// TLSExempt, if set, exempts the plain connections for which it
	// returns true (loopback, say) from RequireTLS. It is called once per
	// connection, before the greeting.
	TLSExempt func(c *ConnInfo) bool

	// MaxConnections limits the connections of all listeners together; a
	// connection holds its slot from accept, through a PreambleConn's
	// preamble and the TLS handshake. One more is closed at once, without
	// OnConnect, OnDisconnect or any backend call: on Serve after
	// "-ERR [SYS/TEMP] too many connections"; silently on ServeTLS, as a
	// plaintext line means nothing to a TLS client and a handshake to send
	// it would spend what the limit saves; and silently on a PreambleConn,
	// whose preamble is not read. Negative: unlimited.
	MaxConnections int

	// MaxConnectionsPerIP limits the connections of one client: an IPv4
	// address, or an IPv6 /64 (IPv4-mapped IPv6 addresses count as IPv4).
	// The address is ConnInfo.RemoteAddr's; behind a PROXY protocol
	// listener the real client's, so the limit is checked right after the
	// preamble, and always before the TLS handshake. One more is refused
	// like MaxConnections, with "-ERR [SYS/TEMP] too many connections from
	// your address" on Serve. Negative: unlimited.
	MaxConnectionsPerIP int

	// FailedLoginDelay delays the answer to a failed PASS, APOP or AUTH,
	// doubling with each further failure of the client (IPv4 address or
	// IPv6 /64) up to MaxFailedLoginDelay. It starts over only after 15
	// minutes without failures, not on a successful login, or a client
	// could log in to an account of its own between guesses at others.
	// Failures that say nothing about the password ([IN-USE],
	// [LOGIN-DELAY], SYS codes) are not delayed. Negative: no delay.
	FailedLoginDelay time.Duration

	// MaxFailedLoginDelay caps the doubling; not below FailedLoginDelay.
	MaxFailedLoginDelay time.Duration

	// Observer, if set, is told of every connection's start and end and of
	// every login, for metrics. A connection reports to the Observer of
	// the options it was accepted with.
	Observer Observer

	// OnRelease, if set, is called once when Server.Reconfigure has
	// replaced these options and the last connection accepted with them
	// has ended, so that what only they use (a Backend's resources) can be
	// freed without cutting off a connection. It runs in the goroutine of
	// that connection, or of Reconfigure if none was left, before Shutdown
	// can return. Options that are never replaced are never released.
	OnRelease func()
}

// config is Options with defaults applied.
type config struct {
	Options
	prelogin []string
	apop     APOPBackend
	users    UserChecker
	tokens   TokenBackend
	pid      string
	tls      *tls.Config // clone of TLSConfig, nil without TLS

	// Guarded by Server.mu.
	conns    int  // connections accepted with this config, not yet ended
	replaced bool // by Server.Reconfigure
}

// release runs OnRelease; a panic in it must not end the process.
func (c *config) release() {
	if f := c.OnRelease; f != nil {
		protect(c.Logger, "OnRelease", f)
	}
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
		c.tokens, _ = c.Backend.(TokenBackend)
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
	case c.MaxAuthLineLength == 0:
		c.MaxAuthLineLength = max(DefaultMaxAuthLineLength, c.MaxLineLength)
	case c.MaxAuthLineLength < c.MaxLineLength:
		fail("MaxAuthLineLength %d is below MaxLineLength %d", c.MaxAuthLineLength, c.MaxLineLength)
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

func (c *config) authLineLength() int {
	if c.tokens == nil {
		return c.MaxLineLength
	}
	return c.MaxAuthLineLength
}

func formatErrors(errs []error) string {
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return "pop3server: invalid Options: " + strings.Join(msgs, "; ")
}

// checkGreeting enforces the 512 octets of RFC 1939 §3 and keeps out
// "<...@...>", which clients take for an APOP timestamp.
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
// timestamp a valid msg-id.
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
