package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	pop3 "github.com/knadh/go-pop3"
	"go.uber.org/zap"
)

// Defaults for zero Options fields.
const (
	DefaultDialTimeout      = 10 * time.Second
	DefaultTimeout          = 60 * time.Second
	DefaultMaxResponseBytes = 32 << 20
	DefaultResponseTimeout  = 30 * time.Minute
)

// Options configures Dial. The zero value is usable: plain POP3 (TLSNone)
// with the default limits.
type Options struct {
	// DialTimeout bounds everything Dial does: TCP connect, TLS handshake,
	// greeting, CAPA and STLS. Default DefaultDialTimeout. A deadline on
	// Dial's context applies too, whichever is earlier.
	DialTimeout time.Duration
	// Timeout is the idle limit for every single read and write after
	// Dial, so a stalled server fails the command after Timeout. Default
	// DefaultTimeout.
	Timeout time.Duration
	// ResponseTimeout bounds each whole response after Dial, from the
	// command to the response's last byte, however steadily the bytes
	// trickle in. Default DefaultResponseTimeout (30 minutes). It is what
	// ends a RETR or TOP body that never ends: those are streamed and not
	// capped in size, so it must also leave room for the largest message
	// at the slower of the two connections (the proxy reads the body only
	// as fast as its client takes it); 30 minutes allow about 55 kB/s for 100 MB.
	ResponseTimeout time.Duration
	// TLS is the TLS policy; see TLSMode.
	TLS TLSMode
	// TLSConfig supplies roots, client certificates and so on. It is
	// cloned; ServerName is set from Dial's serverName if empty. Nil means
	// Go's defaults with the system roots. Certificates are always verified,
	// against RootCAs (nil: the system roots) and the server name, unless
	// InsecureSkipVerify is set here or in TLSConfig.
	TLSConfig *tls.Config
	// InsecureSkipVerify accepts any server certificate: the connection is
	// still encrypted, but an attacker on the path can read and change it,
	// passwords included. Every such connection is logged at WARN level
	// ("upstream certificate not verified (insecure_skip_verify)").
	InsecureSkipVerify bool
	// DenyPrivate refuses destinations whose address, after name
	// resolution, is loopback, link-local, private or otherwise not
	// publicly routable (see PrivateAddr). The check runs on the address
	// the socket is about to connect to (net.Dialer.ControlContext), so no
	// byte reaches such an address and a name that resolves or is rebound
	// to one gains nothing. Dial's error then wraps ErrDestinationDenied.
	DenyPrivate bool
	// MaxResponseBytes caps every response that is buffered: status lines
	// and the LIST, UIDL and CAPA listings. Default
	// DefaultMaxResponseBytes. RETR and TOP are streamed and not capped;
	// ResponseTimeout bounds them.
	MaxResponseBytes int64
	// Logger receives debug messages and the InsecureSkipVerify warning;
	// nil discards them. Passwords are never logged.
	Logger *zap.Logger
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ResponseTimeout <= 0 {
		o.ResponseTimeout = DefaultResponseTimeout
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// Dial connects to the POP3 server at addr ("host:port", IPv6 in brackets,
// as Route.Addr returns), secures the connection as opt.TLS says, reads the
// greeting and the capabilities (CAPA, RFC 2449 §5), and returns a Client in
// the AUTHORIZATION state. serverName is the name the server certificate is
// checked against, normally Route.Host; "" means the host part of addr.
//
// ctx bounds the dial only; cancelling it later does not affect the Client.
// Every error wraps ErrConnection (TLS failures also ErrTLS, a destination
// refused by DenyPrivate also ErrDestinationDenied); a -ERR greeting is also
// a *ServerError.
func Dial(ctx context.Context, addr string, serverName string, opt Options) (*Client, error) {
	opt = opt.withDefaults()
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w: %w", addr, ErrBadArgument, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("upstream %s: %w: bad port", addr, ErrBadArgument)
	}
	implicit, stls, err := planTLS(opt.TLS, port)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", addr, err)
	}
	if serverName == "" {
		serverName = host
	}

	dctx, cancel := context.WithTimeout(ctx, opt.DialTimeout)
	defer cancel()
	deadline, _ := dctx.Deadline()

	var d net.Dialer
	if opt.DenyPrivate {
		d.ControlContext = denyPrivate
	}
	raw, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: connect: %w", addr, connError(err))
	}
	c := &Client{addr: addr, host: host, port: port, opt: opt, log: opt.Logger.With(zap.String("upstream", addr)), raw: raw}
	c.g = newGuard(raw, opt.Timeout, opt.ResponseTimeout, deadline, opt.MaxResponseBytes)
	// Cancelling ctx (or reaching the dial deadline) interrupts whatever
	// step is blocked by closing the socket.
	stop := context.AfterFunc(dctx, func() { raw.Close() })

	err = c.connect(dctx, implicit, stls, clientTLSConfig(opt.TLSConfig, serverName, opt.InsecureSkipVerify))
	if stopped := stop(); err == nil && !stopped {
		err = fmt.Errorf("upstream %s: %w", addr, dctx.Err())
	}
	if err != nil {
		c.shut()
		// The socket deadline and the context's timer are the same instant;
		// report the context's reason even if the socket noticed first.
		cerr := dctx.Err()
		if cerr == nil && !time.Now().Before(deadline) {
			cerr = context.DeadlineExceeded
		}
		if cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		if !errors.Is(err, ErrConnection) {
			err = fmt.Errorf("%w (%w)", err, ErrConnection)
		}
		c.log.Debug("upstream dial failed", zap.Error(err))
		return nil, err
	}
	c.g.fixed = time.Time{} // from now on: Options.Timeout per read/write
	c.log.Debug("upstream connected", zap.Bool("tls", c.tls != nil), zap.Strings("capa", c.caps))
	return c, nil
}

// connect runs the dial steps after the TCP connect.
func (c *Client) connect(ctx context.Context, implicit bool, stls stlsPolicy, cfg *tls.Config) error {
	if implicit {
		if err := c.handshake(ctx, cfg); err != nil {
			return err
		}
	}
	if err := c.greet(c.g); err != nil {
		return err
	}
	if stls == stlsNever {
		return c.capa()
	}

	// STLS (RFC 2595 §4): CAPA in plain text says whether it is offered.
	if err := c.capa(); err != nil {
		return err
	}
	if _, ok := c.HasCapability("STLS"); !ok {
		if stls == stlsRequired {
			return fmt.Errorf("upstream %s: %w: server does not offer STLS", c.addr, ErrTLS)
		}
		return nil // TLSAuto: plain text, the capabilities are known
	}
	if _, err := c.do(respSingle, "STLS", "STLS"); err != nil {
		// The guard refused any byte after the +OK line (protocols.md
		// §2.3: injected plain text would be taken as coming from inside
		// TLS), which surfaces here as errUnsolicited.
		return fmt.Errorf("%w (%w)", err, ErrTLS)
	}
	if err := c.handshake(ctx, cfg); err != nil {
		return err
	}
	// Forget what was said in plain text and ask again (RFC 2595 §4).
	greeting := append(append([]byte(nil), c.rawGreeting...), '\r', '\n')
	if err := c.greet(&replayConn{Conn: c.g, pending: greeting}); err != nil {
		return err
	}
	return c.capa()
}

// handshake starts TLS on the raw connection, bounded by the dial deadline.
func (c *Client) handshake(ctx context.Context, cfg *tls.Config) error {
	tc := tls.Client(c.raw, cfg)
	if err := c.raw.SetDeadline(c.g.fixed); err != nil {
		return c.fail("TLS handshake", err)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail("TLS handshake", fmt.Errorf("%w: %w", ErrTLS, err))
	}
	c.tls = tc
	c.g.Conn = tc
	if cfg.InsecureSkipVerify {
		c.log.Warn("upstream certificate not verified (insecure_skip_verify)", zap.String("server_name", cfg.ServerName))
	}
	return nil
}

// greet lets go-pop3 read the greeting through conn and keeps the
// resulting *pop3.Conn. The guard checks the greeting like any response;
// go-pop3 discards it, so the guard's copy is kept for STLS.
func (c *Client) greet(conn net.Conn) error {
	replay := conn != c.g
	pc, err := pop3.New(pop3.Opt{Host: c.host, Port: c.port, Dialer: handOver{conn}}).NewConn()
	if !replay {
		if err := c.outcome("greeting", err); err != nil {
			return err
		}
		c.rawGreeting = append([]byte(nil), c.g.status()...)
		c.greeting = sanitize(statusText(c.rawGreeting), maxErrorText)
	} else if err != nil {
		return c.fail("greeting", err)
	}
	c.pc = pc
	return nil
}

// statusText drops the "+OK" of a status line and the space after it.
func statusText(status []byte) []byte {
	if len(status) >= 3 {
		status = status[3:]
	}
	if len(status) > 0 && status[0] == ' ' {
		status = status[1:]
	}
	return status
}
