package proxy

import (
	"context"
	"errors"
	"strconv"

	"go.uber.org/zap"

	"github.com/pop3proxy/pop3proxy/proxy/pop3server"
)

// OAuth 2.0 logins (SASL XOAUTH2 and OAUTHBEARER, RFC 7628) are relayed,
// not terminated: the proxy cannot check a token, the upstream can.
// "user=" of XOAUTH2 and the authorization identity "a=" of OAUTHBEARER's
// GS2 header carry "user%host:port"; the proxy routes it, rewrites the
// user name (and OAUTHBEARER's "host" and "port") to the upstream's, and
// runs the same mechanism there, which must be in the upstream's CAPA.

var _ pop3server.TokenBackend = (*Gateway)(nil)

// LoginToken relays an OAuth 2.0 login; the token is never logged nor put in an error.
func (g *Gateway) LoginToken(ctx context.Context, c *pop3server.ConnInfo, mechanism string, cred pop3server.TokenCredentials) (pop3server.Session, error) {
	r, err := g.route(cred.User)
	if err != nil {
		c.Logger.Info("login refused", zap.String("login", cred.User), zap.String("mechanism", mechanism), zap.Error(err))
		return nil, err
	}
	up := cred
	up.User = r.User
	if mechanism == pop3server.MechanismOAUTHBEARER {
		// RFC 7628 §3.1: the server the client connects to.
		up.Host, up.Port = r.Host, strconv.Itoa(r.Port)
	}
	msg, err := up.Encode(mechanism)
	if err != nil {
		return nil, &pop3server.Error{Code: "AUTH", Message: "login contains characters that cannot be relayed", Err: err}
	}
	client, log, err := g.dial(ctx, c, r)
	if err != nil {
		return nil, err
	}
	log = log.With(zap.String("mechanism", mechanism))
	if !client.OffersSASL(mechanism) {
		client.Abort()
		g.upstreamFailed(StageLogin, ReasonMechanism)
		log.Info("upstream login impossible: its CAPA does not offer the mechanism")
		// [SYS/PERM]: no other token helps, and it is no failed guess.
		return nil, &pop3server.Error{Code: "SYS/PERM", Message: "upstream server does not offer " + mechanism}
	}
	ch, err := client.Auth(mechanism, msg)
	if err != nil {
		return nil, g.loginFailed(client, log, err)
	}
	if ch == nil {
		log.Debug("logged in")
		return newSession(g, client, r.User, c.ID, log), nil
	}
	// The upstream refused the token with an error challenge (RFC 7628
	// §3.2.2): the client sees it and answers, and the upstream's -ERR
	// after that answer ends the login (§3.2.3).
	return nil, &pop3server.Challenge{
		Data: ch.Data,
		Answer: func(ctx context.Context, response []byte) error {
			defer client.Abort()
			next, err := client.AuthResponse(response)
			switch {
			case err != nil:
				return g.loginFailed(client, log, err)
			case next != nil:
				err = errors.New("a second challenge")
			default:
				err = errors.New("+OK after an error challenge")
			}
			// RFC 7628 §3.2.3 has the server fail here; an upstream that
			// does not is not trusted with the session.
			g.upstreamFailed(StageLogin, ReasonProtocol)
			log.Warn("upstream broke the SASL exchange", zap.Error(err))
			return &pop3server.Error{Code: "SYS/TEMP", Message: "upstream server broke the authentication exchange", Err: err}
		},
		Abort: func() {
			client.Abort()
			g.upstreamFailed(StageLogin, ReasonAuth)
			log.Info("upstream login failed: the client did not answer the error challenge")
		},
	}
}
