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
	DefaultMaxMessages      = 100000
)

// Options configures Dial. The zero value is plain POP3 (TLSNone) with the
// default limits.
type Options struct {
	// DialTimeout bounds all of Dial, unless the deadline of Dial's context
	// is earlier. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Timeout bounds every single read and write after Dial, so a stalled
	// server fails the command. Default DefaultTimeout.
	Timeout time.Duration
	// ResponseTimeout bounds each whole response after Dial, however
	// steadily its bytes trickle in. It alone ends a RETR or TOP body that
	// never ends, so it must leave room for the largest message at the
	// slower of the two connections (the proxy reads only as fast as its
	// client takes): the default, 30 minutes, allows 55 kB/s for 100 MB.
	ResponseTimeout time.Duration
	TLS             TLSMode
	// TLSConfig supplies roots, client certificates and so on; nil means
	// Go's defaults. It is cloned, and an empty ServerName is set to Dial's
	// serverName, which the certificate is verified against (RFC 7817)
	// unless InsecureSkipVerify is set here or in Options.
	TLSConfig *tls.Config
	// InsecureSkipVerify accepts any server certificate: the connection is
	// still encrypted, but an attacker on the path can read and change it,
	// passwords included. Every such connection is logged at WARN level.
	InsecureSkipVerify bool
	// DenyPrivate refuses destinations whose address is not public (see
	// PrivateAddr). It checks each address the socket is about to connect
	// to, after name resolution, so no byte reaches such an address, and a
	// name that resolves or is rebound to one gains nothing. Dial's error
	// then wraps ErrDestinationDenied.
	DenyPrivate bool
	// MaxResponseBytes caps every response except RETR and TOP bodies,
	// which are streamed in constant memory and not capped, as the maildrop
	// decides how large a message is. Status lines have a cap of their own,
	// 1024 octets (twice RFC 1939 §3's 512), and CAPA one of 16 KiB. LIST
	// and UIDL listings are parsed line by line, so for them this bounds
	// the bytes on the wire, not memory; MaxMessages bounds that. Default
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// MaxMessages caps the entries of a LIST or UIDL listing, and so the
	// memory one takes: 32 bytes an entry, plus the unique-ids. A longer
	// listing fails with ErrTooManyMessages and closes the connection
	// without QUIT. Default DefaultMaxMessages.
	MaxMessages int
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
	if o.MaxMessages <= 0 {
		o.MaxMessages = DefaultMaxMessages
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// connWrapperKey is a context key for the package's tests: its value, a
// func(net.Conn) net.Conn, wraps the TCP connection Dial makes, so a test
// can count the bytes the Client reads.
type connWrapperKey struct{}

// Dial connects to addr (as Route.Addr returns it), secures the connection
// as opt.TLS says, reads the greeting and the capabilities (RFC 2449 §5),
// and returns a Client in the AUTHORIZATION state. serverName is the name
// the certificate is checked against, normally Route.Host; "" means the
// host part of addr. ctx bounds the dial only.
//
// Every error wraps ErrConnection (TLS failures also ErrTLS, a refused
// destination also ErrDestinationDenied); a -ERR greeting is also a
// *ServerError.
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
	if wrap, ok := ctx.Value(connWrapperKey{}).(func(net.Conn) net.Conn); ok {
		raw = wrap(raw)
	}
	c := &Client{addr: addr, host: host, port: port, opt: opt, log: opt.Logger.With(zap.String("upstream", addr)), raw: raw}
	c.g = newGuard(raw, opt.Timeout, opt.ResponseTimeout, deadline, opt.MaxResponseBytes)
	// Cancelling ctx interrupts whatever step is blocked.
	stop := context.AfterFunc(dctx, func() { raw.Close() })

	err = c.connect(dctx, implicit, stls, clientTLSConfig(opt.TLSConfig, serverName, opt.InsecureSkipVerify))
	if stopped := stop(); err == nil && !stopped {
		err = fmt.Errorf("upstream %s: %w", addr, dctx.Err())
	}
	if err != nil {
		c.shut()
		// The socket deadline and the context's timer are the same instant:
		// report the context's reason even if the socket noticed first.
		cerr := dctx.Err()
		if cerr == nil && !time.Now().Before(deadline) {
			cerr = context.DeadlineExceeded
		}
		switch {
		case cerr == nil || errors.Is(err, cerr):
		case cerr == context.DeadlineExceeded:
			// Whichever step was cut short (the socket may have been
			// closed under it), the server was too slow.
			err = tag(cerr, &relabelled{text: fmt.Sprintf("upstream %s: no greeting within %v (dial_timeout)", addr, opt.DialTimeout), err: err})
		default:
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		err = tag(ErrConnection, err)
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
			return fmt.Errorf("upstream %s: %w", c.addr, tag(ErrTLS, errors.New("server does not offer STLS")))
		}
		return nil // TLSAuto: plain text, the capabilities are known
	}
	if _, err := c.do(respSingle, "STLS", "STLS"); err != nil {
		// Plain text injected after the +OK fails here (errUnsolicited).
		return tag(ErrTLS, err)
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
		return c.fail("TLS handshake", tag(ErrTLS, err))
	}
	c.tls = tc
	c.g.Conn = tc
	if cfg.InsecureSkipVerify {
		c.log.Warn("upstream certificate not verified (insecure_skip_verify)", zap.String("server_name", cfg.ServerName))
	}
	return nil
}

// greet has go-pop3 read the greeting through conn. go-pop3 discards it, so
// the guard's copy is kept, to be replayed after STLS.
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
