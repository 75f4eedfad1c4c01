// Package proxy is the relay: a pop3server.Backend that routes each login
// ("user%host:port", "user@host:port", "user#host:port") to the named
// upstream POP3 server, logs in there with the client's password and
// relays the maildrop. It guarantees:
//
//   - Nothing is deleted unless the client QUITs in the TRANSACTION state
//     (RFC 1939 §6): DELE is relayed at once, but a disconnect, timeout,
//     forced shutdown or killed proxy closes the upstream without QUIT.
//   - Unfiltered messages stream byte for byte, so memory use does not
//     grow with message size: without a chain still dot-stuffed as the
//     upstream sent them, above MaxSize unstuffed and stuffed again on the
//     fly. A filter chain holds only messages up to MaxSize.
//   - Credentials are relayed, never logged; CR, LF and NUL in them are
//     refused before anything reaches the upstream.
//   - Only allow-listed destinations are dialled (an address pattern
//     admits only a login naming that address, which is what is dialled)
//     and, with Upstream.DenyPrivate, only public addresses (literal, or
//     resolved when the socket connects; upstream.PrivateAddr). Both
//     refusals read "-ERR [AUTH] destination not allowed by this proxy";
//     only the log says why.
//   - Upstream TLS is verified against the host named in the login, with
//     the first matching Overrides entry on top of Upstream; each
//     connection with insecure_skip_verify is logged at WARN level.
//   - A hostile upstream cannot crash the process or hold a session
//     forever: a malformed greeting fails the login with -ERR [SYS/TEMP];
//     a lost connection or a malformed, over-long (MaxResponseBytes),
//     stalled (Timeout) or endless (ResponseTimeout) response ends the
//     session with "-ERR [SYS/TEMP] upstream connection lost". A body that
//     fails after its +OK has gone out ends without the terminating dot, so
//     the client keeps none of it; a filtered message is read whole before
//     its +OK unless the scan keepalive has started. Status lines, CAPA and
//     listing lines have small caps of their own, and a LIST or UIDL of
//     more than Upstream.MaxMessages entries ends the session with
//     "-ERR [SYS/PERM] mailbox has more messages than this proxy relays
//     (upstream.max_messages)", so a listing's memory is bounded too.
//   - Upstream response codes ([IN-USE], [LOGIN-DELAY], [AUTH], [SYS/TEMP],
//     [SYS/PERM]) reach the client unchanged.
//   - CAPA is rebuilt, never forwarded: after login it has TOP and UIDL only
//     if the upstream does, plus the upstream's EXPIRE and LOGIN-DELAY
//     (RFC 2449 §6), since EXPIRE 0 warns that retrieved mail may be deleted.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/filter"
	"github.com/pop3proxy/pop3proxy/filter/spool"
	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
	"github.com/pop3proxy/pop3proxy/proxy/verdictcache"
	"github.com/pop3proxy/pop3proxy/upstream"
)

// Options configures a Gateway.
type Options struct {
	// Separators split a login into user and upstream; the last one wins.
	Separators string
	// Default is the host:port for logins naming none; "" refuses them.
	Default string
	// DefaultPort is for a host named without a port (110 when zero).
	DefaultPort int
	// Allow restricts the destinations; nil or empty allows every one.
	Allow *upstream.AllowList
	// Upstream holds the dial, I/O and TLS settings for upstream connections.
	Upstream upstream.Options
	// Overrides: the first entry matching the login's host:port applies on top of Upstream.
	Overrides *upstream.Overrides
	// Logger is the root logger; sessions log with the connection's logger.
	Logger *zap.Logger

	// Chain filters retrieved messages of at most MaxSize octets; nil or empty: none.
	Chain *filter.Chain
	// MaxSize is the largest message filtered; required when Chain has filters.
	MaxSize int64
	// Oversize is the policy for larger messages (tag by default), and for
	// those a scanner finds too large; New sets it, and Spool, on Chain.
	Oversize filter.Oversize
	// Spool holds messages while the chain decides; nil: in memory, no budget.
	Spool *spool.Spool
	// ScanKeepalive replaces DefaultScanKeepalive when non-zero.
	ScanKeepalive time.Duration
	// UpstreamKeepalive is how long the upstream of an idle, logged-in client
	// may hear nothing before a NOOP (see DefaultUpstreamKeepalive); 0 = never.
	UpstreamKeepalive time.Duration
	// Stats, if set, receives the filter counters, so that Gateways replaced
	// on a configuration reload add up in one place.
	Stats *Stats
	// Observer, if set, is told what the relay does, for metrics.
	Observer Observer

	// Cache, if set, keeps the chain's decisions so that a message seen
	// before is not scanned again (package verdictcache). It needs the
	// upstream's UIDL.
	Cache *verdictcache.Cache
	// ScanAhead is how many messages ahead of the client are fetched
	// (with TOP) and scanned while the client reads; 0 is off.
	ScanAhead int
}

// Gateway is the relaying pop3server.Backend.
type Gateway struct {
	opts  Options
	stats *Stats
	spool *spool.Spool

	// untrusted: host:port → when it claimed over MaxSize for a smaller message.
	untrusted sync.Map

	flightsMu sync.Mutex
	flights   map[string]*flight // scans under way, by cache key and digest
}

// distrustFor is how long an upstream that misstated a size is not believed.
const distrustFor = 24 * time.Hour

// sizesTrusted reports whether addr's claimed sizes may choose how a
// message is relayed (never whether it is scanned).
func (g *Gateway) sizesTrusted(addr string) bool {
	v, ok := g.untrusted.Load(addr)
	if !ok {
		return true
	}
	if time.Since(v.(time.Time)) > distrustFor {
		g.untrusted.Delete(addr)
		return true
	}
	return false
}

func (g *Gateway) distrustSizes(addr string) { g.untrusted.Store(addr, time.Now()) }

// Stats returns the gateway's filter counters.
func (g *Gateway) Stats() *Stats { return g.stats }

func (g *Gateway) keepalive() time.Duration {
	if g.opts.ScanKeepalive > 0 {
		return g.opts.ScanKeepalive
	}
	return DefaultScanKeepalive
}

var (
	_ pop3server.Backend     = (*Gateway)(nil)
	_ pop3server.UserChecker = (*Gateway)(nil)
)

// New returns a Gateway.
func New(opts Options) *Gateway {
	if opts.DefaultPort == 0 {
		opts.DefaultPort = 110
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	g := &Gateway{opts: opts, stats: opts.Stats, spool: opts.Spool}
	if g.stats == nil {
		g.stats = new(Stats)
	}
	if g.spool == nil {
		g.spool, _ = spool.New(spool.Options{Memory: -1}) // cannot fail without a directory
	}
	// The chain's rewritten messages go to the same spool, and a scanner's
	// "too large" follows the same policy as a message over MaxSize.
	if opts.Chain != nil {
		opts.Chain.SetSpool(g.spool)
		opts.Chain.SetOversize(opts.Oversize)
	}
	return g
}

// route parses a login and applies the allow list, and DenyPrivate to an
// IP address in the login (a host name is checked when it is dialled).
func (g *Gateway) route(login string) (upstream.Route, error) {
	r, err := upstream.ParseLogin(login, g.opts.Separators, g.opts.Default, g.opts.DefaultPort)
	if err != nil {
		return r, &pop3server.Error{Message: loginHint(err), Err: err}
	}
	if !g.opts.Allow.Allows(r.Addr()) {
		g.upstreamFailed(StageConnect, ReasonDenied)
		return r, notAllowed(fmt.Errorf("upstream %s not in upstream.allow", r.Addr()))
	}
	if ip, err := netip.ParseAddr(r.Host); err == nil && g.opts.Upstream.DenyPrivate {
		if kind, private := upstream.PrivateAddr(ip); private {
			g.upstreamFailed(StageConnect, ReasonDenied)
			return r, notAllowed(fmt.Errorf("upstream %s: %w: %s is a %s address (upstream.allow_private)",
				r.Addr(), upstream.ErrDestinationDenied, ip, kind))
		}
	}
	return r, nil
}

// notAllowed is the refusal of a destination. Its text is the same
// whatever the reason and never names an address.
func notAllowed(err error) error {
	return &pop3server.Error{Code: "AUTH", Message: "destination not allowed by this proxy", Err: err}
}

func loginHint(err error) string {
	var le *upstream.LoginError
	if errors.As(err, &le) {
		return le.Reason
	}
	return "log in as user%host:port"
}

// CheckUser refuses, at USER time, a login that cannot be routed, so the
// client is not asked for a password in vain.
func (g *Gateway) CheckUser(_ context.Context, c *pop3server.ConnInfo, login string) error {
	_, err := g.route(login)
	if err != nil {
		c.Logger.Info("login refused", zap.String("login", login), zap.Error(err))
	}
	return err
}

// Login dials the upstream named by the login and logs in there.
func (g *Gateway) Login(ctx context.Context, c *pop3server.ConnInfo, login, password string) (pop3server.Session, error) {
	r, err := g.route(login)
	if err != nil {
		return nil, err
	}
	// A CR or LF would end PASS early and turn the rest into a command of
	// the client's choosing on the upstream's wire (RFC 1939 §3).
	if strings.ContainsAny(password, "\r\n\x00") {
		return nil, &pop3server.Error{Code: "AUTH", Message: "password contains characters that cannot be relayed"}
	}
	client, log, err := g.dial(ctx, c, r)
	if err != nil {
		return nil, err
	}
	if err := client.Login(r.User, password); err != nil {
		return nil, g.loginFailed(client, log, err)
	}
	// The server logs the login; this adds the upstream's side.
	log.Debug("logged in")
	return newSession(g, client, r.User, c.ID, log), nil
}

// loginFailed ends a login the upstream refused, with a password or a
// token: the connection is closed and the client told why.
func (g *Gateway) loginFailed(client *upstream.Client, log *zap.Logger, err error) error {
	client.Abort()
	g.upstreamFailed(StageLogin, loginReason(err))
	log.Info("upstream login failed", zap.Error(err))
	return loginError(err)
}

// dial connects to r's upstream for Login or LoginToken; log names both.
func (g *Gateway) dial(ctx context.Context, c *pop3server.ConnInfo, r upstream.Route) (_ *upstream.Client, log *zap.Logger, _ error) {
	userLog := c.Logger.With(zap.String("user", r.User))
	log = userLog.With(zap.String("upstream", r.Addr()))

	opts := g.opts.Upstream
	if o, ok := g.opts.Overrides.Lookup(r.Addr()); ok {
		opts = o.Apply(opts)
		log.Debug("upstream destination override", zap.String("match", o.Match),
			zap.Stringer("tls", opts.TLS), zap.Bool("insecure_skip_verify", opts.InsecureSkipVerify))
	}
	opts.Logger = userLog // Dial adds the upstream address itself
	if opts.TLSConfig != nil {
		opts.TLSConfig = opts.TLSConfig.Clone()
	} else {
		opts.TLSConfig = &tls.Config{}
	}
	client, err := upstream.Dial(ctx, r.Addr(), r.Host, opts)
	if err != nil {
		g.upstreamFailed(StageConnect, connectReason(err))
	}
	if errors.Is(err, upstream.ErrDestinationDenied) {
		log.Warn("destination refused: it resolves to an address upstream.allow_private does not allow", zap.Error(err))
		return nil, log, notAllowed(err)
	}
	if err != nil {
		log.Warn("upstream unreachable", zap.Error(err))
		return nil, log, dialError(err)
	}
	return client, log, nil
}

// dialError maps a failed connection attempt. A certificate problem needs an
// administrator, so it is [SYS/PERM]; anything else may pass.
func dialError(err error) error {
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return &pop3server.Error{Code: "SYS/PERM", Message: "upstream certificate not trusted", Err: err}
	}
	return &pop3server.Error{Code: "SYS/TEMP", Message: "cannot reach upstream server, try again later", Err: err}
}

// loginError maps a failed upstream login, keeping the upstream's code and
// words: [IN-USE] tells the client its password was right, [LOGIN-DELAY]
// that it polls too often (RFC 2449 §8.1).
func loginError(err error) error {
	var se *upstream.ServerError
	if errors.As(err, &se) {
		msg := se.Text
		if msg == "" {
			msg = "authentication failed"
		}
		return &pop3server.Error{Code: se.Code, Message: msg, Err: err}
	}
	if errors.Is(err, upstream.ErrBadArgument) {
		return &pop3server.Error{Code: "AUTH", Message: "login contains characters that cannot be relayed", Err: err}
	}
	return relayError(err)
}

// relayError maps an error from a relayed command.
func relayError(err error) error {
	if errors.Is(err, upstream.ErrTooManyMessages) {
		// Permanent: the client would meet the same mailbox again. The
		// upstream connection was closed without QUIT.
		return &pop3server.Error{Code: "SYS/PERM", Message: "mailbox has more messages than this proxy relays (upstream.max_messages)",
			Err: err, Disconnect: true}
	}
	var se *upstream.ServerError
	if errors.As(err, &se) {
		msg := se.Text
		if msg == "" {
			msg = "upstream refused the command"
		}
		return &pop3server.Error{Code: se.Code, Message: msg, Err: err}
	}
	// After a transport or protocol failure the upstream connection cannot
	// be trusted: end the session, committing nothing.
	return &pop3server.Error{Code: "SYS/TEMP", Message: "upstream connection lost", Err: err, Disconnect: true}
}
