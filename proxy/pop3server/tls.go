package pop3server

import (
	"crypto/tls"
	"errors"
	"net"
	"time"

	"go.uber.org/zap"
)

// errNoTLSConfig is returned by ServeTLS on a server without TLSConfig.
var errNoTLSConfig = errors.New("pop3server: ServeTLS needs Options.TLSConfig")

// Responses of STLS and RequireTLS.
var (
	// RFC 2595 §4 gives no text; this one is what hMailServer, GreenMail
	// and Python's test server send, and what clients have seen for years.
	errTLSActive = &Error{Message: "Command not permitted when TLS active"}
	// RFC 3206 §4 lets [AUTH] report an attempt "in violation of policy";
	// no RFC has a code for "TLS required". The text is Dovecot's, so
	// clients that special-case it keep working.
	errTLSRequired = &Error{Code: "AUTH", Message: "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."}
)

// checkTLS validates the TLS options and prepares the server's clone of
// TLSConfig.
func (c *config) checkTLS(fail func(format string, args ...any)) {
	if c.TLSConfig == nil {
		if c.RequireTLS {
			fail("RequireTLS needs TLSConfig: without it clients could never log in")
		}
		return
	}
	t := c.TLSConfig
	if len(t.Certificates) == 0 && t.GetCertificate == nil && t.GetConfigForClient == nil {
		fail("TLSConfig has no certificate (Certificates, GetCertificate or GetConfigForClient)")
		return
	}
	c.tls = t.Clone()
	// RFC 8314 §4.1: TLS 1.1 and older are deprecated. A GetConfigForClient
	// result is the caller's to set.
	if c.tls.MinVersion == 0 {
		c.tls.MinVersion = tls.VersionTLS12
	}
}

// ServeTLS is Serve for implicit TLS (RFC 8314 §3, POP3S on port 995): each
// connection completes a TLS handshake, within Options.HandshakeTimeout,
// before it gets the greeting. A failed handshake is logged at debug level
// and closes the connection. ln must be a plain listener, not one from
// tls.NewListener. ServeTLS fails at once without Options.TLSConfig.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.tls == nil {
		return errNoTLSConfig
	}
	return s.serve(ln, true)
}

// handshake runs the server side of a TLS handshake on the raw connection
// and switches reading and writing to TLS with a fresh line reader, so
// nothing received before it can be taken for a command after it (RFC 2595
// §4, CVE-2011-0411). Shutdown (through drainCtx) and Close interrupt it.
func (c *conn) handshake() error {
	tc := tls.Server(c.nc, c.cfg.tls)
	if err := c.nc.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout)); err != nil {
		return err
	}
	if err := tc.HandshakeContext(c.drainCtx); err != nil {
		return err
	}
	// readCommand and connWriter set their own deadlines before each use.
	state := tc.ConnectionState()
	c.rw = tc
	c.out.nc = tc
	c.lr = newLineReader(tc, c.cfg.MaxLineLength)
	c.info.TLS = &state
	if ce := c.log.Check(zap.DebugLevel, "TLS established"); ce != nil {
		ce.Write(zap.String("version", tls.VersionName(state.Version)),
			zap.String("cipher", tls.CipherSuiteName(state.CipherSuite)),
			zap.String("sni", state.ServerName))
	}
	return nil
}

// handleStls answers STLS (RFC 2595 §4). Offered only with TLSConfig, and
// valid only in the AUTHORIZATION state of a plain connection.
func (c *conn) handleStls(arg string) error {
	if c.cfg.tls == nil {
		return badCommand(errUnknownCommand)
	}
	if c.info.TLS != nil {
		return badCommand(errTLSActive)
	}
	if err := c.requireState(stateAuthorization); err != nil {
		return err
	}
	if err := requireNoArgs(arg); err != nil {
		return err
	}
	c.writeLine("+OK Begin TLS negotiation")
	if err := c.bw.Flush(); err != nil {
		c.quit = "write failed: " + err.Error()
		return nil
	}
	// A client must wait for the "+OK" before its ClientHello, so bytes
	// already here were sent in cleartext behind STLS: an injection
	// attempt (CVE-2011-0411), or a broken client. Either way no TLS.
	if n := c.lr.buffered(); n > 0 {
		c.log.Warn("data pipelined after STLS, closing", zap.Int("bytes", n))
		c.quit = "data pipelined after STLS"
		return nil
	}
	if err := c.handshake(); err != nil {
		c.log.Debug("TLS handshake failed", zap.Error(err))
		c.quit = "TLS handshake failed"
		return nil
	}
	// RFC 2595 §4: the client must forget what it learnt before TLS; the
	// server forgets the pending USER.
	c.user = ""
	return nil
}

// plaintextRefused reports whether RequireTLS forbids logging in on this
// connection now.
func (c *conn) plaintextRefused() bool {
	return c.cfg.RequireTLS && c.info.TLS == nil && !c.tlsExempt
}
