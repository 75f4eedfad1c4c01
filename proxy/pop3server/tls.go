package pop3server

import (
	"crypto/tls"
	"errors"
	"net"
	"time"

	"go.uber.org/zap"
)

var errNoTLSConfig = errors.New("pop3server: ServeTLS needs Options.TLSConfig")

var (
	// errTLSActive has the text of RFC 2595 §4's example.
	errTLSActive = &Error{Message: "Command not permitted when TLS active"}
	// errTLSRequired uses [AUTH], which RFC 3206 §5 allows for a login
	// against policy, and Dovecot's text, which clients know.
	errTLSRequired = &Error{Code: "AUTH", Message: "Plaintext authentication disallowed on non-secure (SSL/TLS) connections."}
)

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
	// RFC 8314 §4.1 deprecates TLS before 1.1; 1.2 is the floor here. A
	// GetConfigForClient result is the caller's to set.
	if c.tls.MinVersion == 0 {
		c.tls.MinVersion = tls.VersionTLS12
	}
}

// ServeTLS is Serve for implicit TLS (RFC 8314 §3, port 995): the TLS
// handshake precedes the greeting; a failed one is logged at debug level
// only. ln must be a plain listener, not one from tls.NewListener. ServeTLS
// fails at once without Options.TLSConfig.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.config().tls == nil {
		return errNoTLSConfig
	}
	return s.serve(ln, true)
}

// handshake switches the connection to TLS with a fresh line reader, so
// nothing received before it can be taken for a command after it
// (CVE-2011-0411). Being before login, it is bounded by authDeadline too.
func (c *conn) handshake() error {
	tc := tls.Server(c.nc, c.cfg.tls)
	if err := c.nc.SetDeadline(earliest(time.Now().Add(c.cfg.HandshakeTimeout), c.authDeadline)); err != nil {
		return err
	}
	if err := tc.HandshakeContext(c.drainCtx); err != nil {
		return err
	}
	// readCommand and connWriter set their own deadlines before each use.
	state := tc.ConnectionState()
	c.rw = tc
	c.out.nc = tc
	c.lr = newLineReader(tc, c.cfg.MaxLineLength, c.cfg.authLineLength())
	c.info.TLS = &state
	if ce := c.log.Check(zap.DebugLevel, "TLS established"); ce != nil {
		ce.Write(zap.String("version", tls.VersionName(state.Version)),
			zap.String("cipher", tls.CipherSuiteName(state.CipherSuite)),
			zap.String("sni", state.ServerName))
	}
	return nil
}

// handleStls answers STLS (RFC 2595 §4).
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
		c.quit = endWith(SessionDisconnect, "write failed: "+err.Error())
		return nil
	}
	// A client must wait for the "+OK" (RFC 2595 §4), so bytes already
	// here are an injection attempt (CVE-2011-0411) or a broken client.
	if n := c.lr.buffered(); n > 0 {
		c.log.Warn("data pipelined after STLS, closing", zap.Int("bytes", n))
		c.quit = endWith(SessionTLSFailed, "data pipelined after STLS")
		return nil
	}
	if err := c.handshake(); err != nil {
		c.log.Debug("TLS handshake failed", zap.Error(err))
		c.quit = endWith(SessionTLSFailed, "TLS handshake failed")
		return nil
	}
	// RFC 2595 §4: the client forgets what it learnt before TLS, and the
	// server forgets the pending USER.
	c.user = ""
	return nil
}

func (c *conn) plaintextRefused() bool {
	return c.cfg.RequireTLS && c.info.TLS == nil && !c.tlsExempt
}
