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
	"github.com/pop3proxy/pop3proxy/internal/neterr"
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

// Options configures Dial; the zero value is plain POP3 with default limits.
type Options struct {
	// DialTimeout bounds all of Dial, unless ctx's deadline is earlier.
	DialTimeout time.Duration
	// Timeout bounds each read and write after Dial, failing a stalled command.
	Timeout time.Duration
	// ResponseTimeout bounds each whole response after Dial, however steadily
	// it trickles in; it alone ends an endless RETR or TOP body. Leave room for
	// the largest message at the slower connection (the proxy reads as fast as
	// its client takes): 30 minutes, the default, allows 55 kB/s for 100 MB.
	ResponseTimeout time.Duration
	TLS             TLSMode
	// TLSConfig supplies roots, client certificates and so on (nil: Go's
	// defaults). It is cloned; an empty ServerName becomes Dial's serverName,
	// verified (RFC 7817) unless InsecureSkipVerify is set here or in Options.
	TLSConfig *tls.Config
	// InsecureSkipVerify accepts any certificate, so an attacker on the path can
	// read and change the connection, passwords included; each is logged at WARN.
	InsecureSkipVerify bool
	// DenyPrivate refuses non-public destinations (see PrivateAddr) at each
	// address the socket is about to connect to, after DNS: no byte reaches one
	// and rebinding gains nothing. Dial's error wraps ErrDestinationDenied.
	DenyPrivate bool
	// MaxResponseBytes caps every response but RETR and TOP bodies, streamed in
	// constant memory as the maildrop decides message sizes. Status lines have
	// 1024 octets (twice RFC 1939 §3's 512), CAPA 16 KiB. For LIST and UIDL,
	// parsed line by line, it bounds wire bytes; MaxMessages bounds memory.
	MaxResponseBytes int64
	// MaxMessages caps a LIST or UIDL listing's entries (32 bytes each plus the
	// unique-id); more fail with ErrTooManyMessages, closing without QUIT.
	MaxMessages int
	// Logger gets debug messages and the InsecureSkipVerify warning, never
	// passwords; nil discards them.
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

// connWrapperKey's value, a func(net.Conn) net.Conn, wraps Dial's TCP
// connection, so the package's tests can count the bytes the Client reads.
type connWrapperKey struct{}

// Dial connects to addr (as Route.Addr returns it), secures the connection
// as opt.TLS says, reads the greeting and CAPA (RFC 2449 §5), and returns a
// Client in the AUTHORIZATION state. The certificate is checked against
// serverName, normally Route.Host ("": addr's host). ctx bounds the dial
// only. Every error wraps ErrConnection (TLS failures also ErrTLS, a refused
// destination ErrDestinationDenied); a -ERR greeting is also a *ServerError.
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
		// The socket may notice the shared deadline first: report the context's.
		cerr := dctx.Err()
		if cerr == nil && !time.Now().Before(deadline) {
			cerr = context.DeadlineExceeded
		}
		switch {
		case cerr == nil || errors.Is(err, cerr):
		case cerr == context.DeadlineExceeded:
			// Whichever step was cut short, the server was too slow.
			err = tag(cerr, neterr.WithText(fmt.Sprintf("upstream %s: no greeting within %v (dial_timeout)", addr, opt.DialTimeout), err))
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

// greet keeps the greeting, which go-pop3 discards, for replay after STLS.
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
