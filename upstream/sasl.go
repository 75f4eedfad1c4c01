package upstream

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
)

// maxAuthIRLine is the longest AUTH command with an initial response, CRLF
// included (RFC 5034 §4, keeping RFC 2449 §4's 255 octets): a longer one is
// sent after the server's empty challenge instead, as curl does.
const maxAuthIRLine = 255

// SASLChallenge is a decoded AUTH challenge (RFC 5034 §4), e.g. the JSON
// error of RFC 7628 §3.2.2 for a refused OAuth 2.0 token.
type SASLChallenge struct{ Data []byte }

var (
	errSASLPending    = errors.New("SASL exchange in progress (answer the challenge or Abort)")
	errNoSASL         = errors.New("no SASL exchange in progress")
	errEmptyChallenge = errors.New("server sent a challenge where an empty one was due")
)

// Auth starts a SASL exchange, AUTH mechanism with the non-empty initial
// response ir (RFC 5034 §4), after the server's empty challenge if the line
// would exceed 255 octets. It returns nil, nil on +OK, with CAPA re-read as
// Login does; a *SASLChallenge to answer with AuthResponse (or Abort); a
// *ServerError for -ERR. ir and responses are never logged or put in errors.
func (c *Client) Auth(mechanism string, ir []byte) (*SASLChallenge, error) {
	op := "AUTH " + mechanism
	if !validMechanism(mechanism) || len(ir) == 0 {
		return nil, fmt.Errorf("upstream %s: AUTH: %w: mechanism name or empty initial response", c.addr, ErrBadArgument)
	}
	if err := c.ready(op); err != nil {
		return nil, err
	}
	enc := base64.StdEncoding.EncodeToString(ir)
	if len(op)+1+len(enc)+2 <= maxAuthIRLine {
		return c.saslStep(op, op+" "+enc)
	}
	ch, err := c.saslStep(op, op)
	if err != nil || ch == nil {
		return ch, err
	}
	if len(ch.Data) != 0 {
		return nil, c.fail(op, errEmptyChallenge)
	}
	return c.AuthResponse(ir)
}

// AuthResponse answers the last challenge (RFC 5034 §4; empty: empty line).
func (c *Client) AuthResponse(response []byte) (*SASLChallenge, error) {
	op := "AUTH " + c.saslMech
	if c.saslMech == "" {
		return nil, fmt.Errorf("upstream %s: SASL response: %w", c.addr, errNoSASL)
	}
	c.saslMech = ""
	return c.saslStep(op, base64.StdEncoding.EncodeToString(response))
}

// saslStep's line may hold credentials.
func (c *Client) saslStep(op, line string) (*SASLChallenge, error) {
	if c.Broken() {
		return nil, fmt.Errorf("upstream %s: %s: %w", c.addr, op, connError(errClosed))
	}
	status, err := c.sendLine(op, line, respSASL)
	if err != nil {
		return nil, err
	}
	status = trimEOL(status)
	switch classify(status) {
	case statusOK:
		c.log.Debug("upstream login", zap.String("mechanism", strings.TrimPrefix(op, "AUTH ")))
		return nil, c.capa()
	case statusErr:
		return nil, fmt.Errorf("upstream %s: %s: %w", c.addr, op, parseServerError(status))
	case statusCont:
		// RFC 5034 §4: "+" SP base64; a bare "+" is an empty challenge.
		data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(status[1:])))
		if err != nil {
			return nil, c.fail(op, errors.New("challenge is not base64"))
		}
		c.saslMech = strings.TrimPrefix(op, "AUTH ")
		return &SASLChallenge{Data: data}, nil
	}
	return nil, c.fail(op, fmt.Errorf("malformed status line %q", status[:min(len(status), 40)]))
}

// validMechanism checks a SASL mechanism name (RFC 4422 §3.1).
func validMechanism(m string) bool {
	if m == "" || len(m) > 20 {
		return false
	}
	for i := 0; i < len(m); i++ {
		ch := m[i]
		if !('A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return true
}

// OffersSASL reports whether CAPA's SASL lists mechanism (RFC 2449 §6.3).
func (c *Client) OffersSASL(mechanism string) bool {
	args, ok := c.HasCapability("SASL")
	if !ok {
		return false
	}
	for _, m := range strings.Fields(args) {
		if strings.EqualFold(m, mechanism) {
			return true
		}
	}
	return false
}

// usePlain: a CAPA without USER (RFC 2449 §6.2) may refuse USER and PASS,
// so use SASL PLAIN if offered. A server without CAPA gets USER and PASS.
func (c *Client) usePlain() bool {
	if c.caps == nil {
		return false
	}
	if _, ok := c.HasCapability("USER"); ok {
		return false
	}
	return c.OffersSASL("PLAIN")
}

// loginPlain sends no authorization identity (RFC 4616 §2).
func (c *Client) loginPlain(user, pass string) error {
	ch, err := c.Auth("PLAIN", []byte("\x00"+user+"\x00"+pass))
	if ch != nil {
		return c.fail("AUTH PLAIN", errors.New("unexpected SASL challenge"))
	}
	return err
}
