package pop3server

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"
)

// saslMechanisms are announced by CAPA and listed by a bare AUTH;
// tokenMechanisms too when the backend is a TokenBackend.
var (
	saslMechanisms  = []string{"PLAIN", "LOGIN"}
	tokenMechanisms = []string{"PLAIN", "LOGIN", MechanismXOAUTH2, MechanismOAUTHBEARER}
)

func (c *config) mechanisms() []string {
	if c.tokens != nil {
		return tokenMechanisms
	}
	return saslMechanisms
}

// Challenges of the LOGIN mechanism (draft-murchison-sasl-login §2):
// base64 of "Username:" and "Password:", which clients expect verbatim.
const (
	loginUserChallenge = "+ VXNlcm5hbWU6"
	loginPassChallenge = "+ UGFzc3dvcmQ6"
	// emptyChallenge is "+" and one space (RFC 5034 §4).
	emptyChallenge = "+ "
)

var (
	errAuthMechanism = &Error{Message: "unsupported authentication mechanism"}
	errAuthCancelled = &Error{Message: "authentication cancelled"}
	errAuthBase64    = &Error{Message: "invalid base64 data"}
	errAuthMalformed = &Error{Message: "malformed authentication data"}
	// errAuthzid refuses an authzid other than the authcid, a request to
	// act as someone else (RFC 4616 §2) that Backend.Login cannot express.
	errAuthzid = &Error{Code: "AUTH", Message: "authorization identity must be empty or the authentication identity"}
)

// errNoResponse tells handle that a command has already ended the
// connection (c.quit is set) and that there is nothing to answer.
var errNoResponse = errors.New("no response")

// handleAuth answers AUTH (RFC 5034 §4).
func (c *conn) handleAuth(arg string) error {
	if err := c.requireState(stateAuthorization); err != nil {
		return err
	}
	if c.plaintextRefused() {
		return badCommand(errTLSRequired)
	}
	f := fields(arg)
	switch {
	case len(f) == 0:
		// Mechanism discovery (docs/clients.md, Outlook).
		c.writeLine("+OK")
		for _, m := range c.cfg.mechanisms() {
			c.writeLine(m)
		}
		c.bw.Write(terminator)
		return nil
	case len(f) > 2:
		return badCommand(errSyntax)
	}
	mech := strings.ToUpper(f[0])
	c.logMechanism(mech)
	if lm, ok := c.tokenMechanism(mech); ok {
		c.user = ""
		return c.authToken(mech, lm, f[1:])
	}
	var ir []byte
	hasIR := len(f) == 2
	if hasIR {
		// RFC 5034 §4: "=" is an initial response of zero length.
		if f[1] != "=" {
			var err error
			if ir, err = decodeSASL(f[1]); err != nil {
				return err
			}
		}
	}
	// AUTH starts over: a pending USER no longer counts.
	c.user = ""

	var user, pass string
	var err error
	var mechanism LoginMechanism
	switch mech {
	case "PLAIN":
		mechanism = LoginPlain
		user, pass, err = c.saslPlain(ir, hasIR)
	case "LOGIN":
		mechanism = LoginLogin
		user, pass, err = c.saslLogin(ir, hasIR)
	default:
		return badCommand(errAuthMechanism)
	}
	if err != nil {
		return err
	}
	sess, err := c.cfg.Backend.Login(c.ctx, &c.info, user, pass)
	return c.finishLogin(user, "AUTH "+mech, mechanism, sess, err)
}

// knownMechanisms are SASL mechanisms clients offer, from the IANA
// registry and XOAUTH2, which are logged by name. Any other "mechanism"
// may be a password sent as AUTH's argument, and is logged by length only.
var knownMechanisms = map[string]bool{
	"PLAIN": true, "LOGIN": true, "CRAM-MD5": true, "DIGEST-MD5": true,
	"SCRAM-SHA-1": true, "SCRAM-SHA-1-PLUS": true, "SCRAM-SHA-256": true, "SCRAM-SHA-256-PLUS": true,
	"GSSAPI": true, "NTLM": true, "EXTERNAL": true, "ANONYMOUS": true, "OAUTHBEARER": true, "XOAUTH2": true,
}

func (c *conn) logMechanism(mech string) {
	ce := c.log.Check(zap.DebugLevel, "SASL")
	if ce == nil {
		return
	}
	if knownMechanisms[mech] {
		ce.Write(zap.String("mechanism", mech))
	} else {
		ce.Write(zap.Int("mechanism_length", len(mech)))
	}
}

// saslPlain runs PLAIN (RFC 4616 §2): "authzid NUL authcid NUL passwd",
// in the initial response or after an empty challenge.
func (c *conn) saslPlain(ir []byte, hasIR bool) (user, pass string, err error) {
	msg := ir
	if !hasIR {
		if msg, err = c.saslStep(emptyChallenge); err != nil {
			return "", "", err
		}
	}
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 || !utf8.Valid(msg) {
		return "", "", badCommand(errAuthMalformed)
	}
	authzid, authcid, passwd := string(parts[0]), string(parts[1]), string(parts[2])
	if !validCredential(authcid) || !validCredential(passwd) || strings.ContainsAny(authzid, "\r\n") {
		return "", "", badCommand(errAuthMalformed)
	}
	if authzid != "" && authzid != authcid {
		return "", "", badCommand(errAuthzid)
	}
	if err := c.checkUser(authcid, "AUTH PLAIN", LoginPlain); err != nil {
		return "", "", err
	}
	return authcid, passwd, nil
}

// saslLogin runs LOGIN. Some clients send the user name as the initial
// response. The name is checked before the password is asked for.
func (c *conn) saslLogin(ir []byte, hasIR bool) (user, pass string, err error) {
	name := ir
	if !hasIR {
		if name, err = c.saslStep(loginUserChallenge); err != nil {
			return "", "", err
		}
	}
	user = string(name)
	if !validCredential(user) {
		return "", "", badCommand(errAuthMalformed)
	}
	if err := c.checkUser(user, "AUTH LOGIN", LoginLogin); err != nil {
		return "", "", err
	}
	secret, err := c.saslStep(loginPassChallenge)
	if err != nil {
		return "", "", err
	}
	pass = string(secret)
	if !validCredential(pass) {
		return "", "", badCommand(errAuthMalformed)
	}
	return user, pass, nil
}

// saslStep sends a challenge and reads the response line (RFC 5034 §4):
// base64, or "*" to cancel. The line is never logged.
func (c *conn) saslStep(challenge string) ([]byte, error) {
	c.writeLine(challenge)
	c.lr.sasl = true
	line, err := c.readCommand()
	c.lr.sasl = false
	switch {
	case err == nil:
	case errors.Is(err, errLineTooLong):
		return nil, badCommand(errLineTooLongRsp)
	case c.out.err != nil:
		c.quit = endWith(SessionDisconnect, "write failed: "+c.out.err.Error())
		return nil, errNoResponse
	default:
		c.quit = c.readFailure(err)
		return nil, errNoResponse
	}
	s := strings.TrimRight(string(line), " ")
	if s == "*" {
		return nil, badCommand(errAuthCancelled)
	}
	return decodeSASL(s)
}

// decodeSASL decodes padded base64 (RFC 4648 §4). The standard decoder
// skips CR and LF; here they are errors.
func decodeSASL(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, badCommand(errAuthBase64)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, badCommand(errAuthBase64)
	}
	return b, nil
}

// validCredential accepts a non-empty user name or password without CR,
// LF or NUL: RFC 4616 §2 forbids NUL, and a CR or LF would end a relaying
// backend's USER or PASS line early and smuggle in a command.
func validCredential(s string) bool {
	return s != "" && !strings.ContainsAny(s, "\r\n\x00")
}
