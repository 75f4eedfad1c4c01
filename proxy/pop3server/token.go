package pop3server

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"
)

const (
	// MechanismXOAUTH2 is Google's XOAUTH2, which Gmail and Outlook.com
	// offer for POP3: base64 of "user=<user>^Aauth=Bearer <token>^A^A".
	MechanismXOAUTH2 = "XOAUTH2"
	// MechanismOAUTHBEARER is RFC 7628's OAUTHBEARER: a GS2 header
	// carrying the authorization identity, then key-value pairs
	// ("host", "port", "auth=Bearer <token>").
	MechanismOAUTHBEARER = "OAUTHBEARER"
)

// TokenBackend is an optional Backend add-on for OAuth 2.0 bearer tokens.
// With it the server also offers SASL XOAUTH2 and OAUTHBEARER: CAPA
// announces "SASL PLAIN LOGIN XOAUTH2 OAUTHBEARER" (under the RequireTLS
// rules of every login) and a bare AUTH lists them. The server parses and
// checks the SASL message in either form, as AUTH's initial response or
// after the empty challenge, and calls LoginToken; UserChecker is not
// consulted, since the whole login arrives at once. A malformed message is
// a failed login, delayed like a wrong password.
type TokenBackend interface {
	// LoginToken logs in with cred, sent with mechanism (MechanismXOAUTH2
	// or MechanismOAUTHBEARER), like Backend.Login. To refuse a token with
	// the error challenge of RFC 7628 §3.2.2 (XOAUTH2 has the same), return
	// a *Challenge; any other error is answered as from Backend.Login.
	LoginToken(ctx context.Context, c *ConnInfo, mechanism string, cred TokenCredentials) (Session, error)
}

// TokenCredentials is a parsed XOAUTH2 or OAUTHBEARER message. No field
// contains CR, LF, NUL or ^A (%x01, the separator of both formats).
type TokenCredentials struct {
	// User is the login: XOAUTH2's "user", or OAUTHBEARER's authorization
	// identity ("a=" in the GS2 header, with "=2C" and "=3D" decoded), which
	// an OAUTHBEARER client may leave out ("").
	User string
	// Token is the bearer token, without the "Bearer" scheme: an RFC 6750
	// §2.1 b64token (letters, digits, "-._~+/", then "=" padding).
	Token string
	// Host and Port are OAUTHBEARER's "host" and "port" (RFC 7628 §3.1),
	// the server the client thinks it talks to; "" when not sent.
	Host, Port string
	// CBFlag is OAUTHBEARER's gs2-cb-flag (RFC 5801 §4), "n" or "y": no
	// channel binding, which RFC 7628 §3.1 leaves out; "" for XOAUTH2.
	CBFlag string
	// Extra holds OAUTHBEARER's other key-value pairs in the client's
	// order: RFC 7628 §3.1 lets later specifications add keys.
	Extra []KeyValue
}

// KeyValue is one key-value pair of an OAUTHBEARER message.
type KeyValue struct{ Key, Value string }

// Challenge is an error a TokenBackend returns to send a SASL challenge,
// "+ " and Data in base64 (RFC 5034 §4): for a refused token, the JSON
// error of RFC 7628 §3.2.2. The client's response ("AQ==", the %x01
// RFC 7628 §3.2.3 asks for, or an empty line as with Gmail's XOAUTH2) is
// decoded and handed to Answer, whose error is the login's result. Exactly
// one of Answer and Abort is called, Abort when Answer is not (a cancel
// with "*", a malformed response, a lost connection: all failed logins):
// the backend may hold resources (an upstream connection) until then.
type Challenge struct {
	// Data is at most MaxChallengeData octets.
	Data []byte
	// Answer returns the final error, answered like one from LoginToken;
	// nil counts as ErrAuthFailed, as does a Challenge, which is not sent
	// (its Abort is called).
	Answer func(ctx context.Context, response []byte) error
	// Abort may be nil.
	Abort func()
}

// MaxChallengeData bounds Challenge.Data: RFC 7628 §3.2.2's JSON error is
// a few hundred octets. A longer one is answered as an internal error.
const MaxChallengeData = 2048

// Error names the challenge for logs; Data is left out.
func (ch *Challenge) Error() string { return "SASL challenge" }

var errChallengeNotAnswered = errors.New("backend returned a Challenge without Answer, a Session with a Challenge, or Data over MaxChallengeData")

func (c *conn) tokenMechanism(mech string) (LoginMechanism, bool) {
	if c.cfg.tokens == nil {
		return 0, false
	}
	switch mech {
	case MechanismXOAUTH2:
		return LoginXOAUTH2, true
	case MechanismOAUTHBEARER:
		return LoginOAUTHBEARER, true
	}
	return 0, false
}

// authToken runs XOAUTH2 or OAUTHBEARER. args are AUTH's arguments after
// the mechanism: none, or the initial response. Everything that fails
// after AUTH was accepted is a failed login, with its delay, so that a
// token guesser gains nothing by sending garbage or cancelling at the
// error challenge; only a cancel before any token was sent is not.
func (c *conn) authToken(mech string, lm LoginMechanism, args []string) error {
	method := "AUTH " + mech
	var msg []byte
	var err error
	switch {
	case len(args) == 0:
		msg, err = c.saslStep(emptyChallenge)
		switch {
		case err == errNoResponse, errors.Is(err, errAuthCancelled):
			return err
		case err != nil:
			return c.finishLogin("", method, lm, nil, unwrapBad(err))
		}
	case args[0] == "=":
		// RFC 5034 §4: a zero-length initial response, malformed here.
		msg = nil
	default:
		if msg, err = decodeSASL(args[0]); err != nil {
			return c.finishLogin("", method, lm, nil, unwrapBad(err))
		}
	}
	cred, ok := parseToken(mech, msg)
	if !ok {
		return c.finishLogin("", method, lm, nil, errAuthMalformed)
	}
	sess, err := c.cfg.tokens.LoginToken(c.ctx, &c.info, mech, cred)
	var ch *Challenge
	if errors.As(err, &ch) {
		if sess != nil || ch.Answer == nil || len(ch.Data) > MaxChallengeData {
			if ch.Abort != nil {
				c.protect("Challenge.Abort", ch.Abort)
			}
			err = errChallengeNotAnswered
		} else if err = c.answerChallenge(ch); err == errNoResponse {
			c.observeLogin(lm, LoginFailed)
			c.log.Info("login failed", zap.String("user", cred.User), zap.String("method", method))
			return errNoResponse
		}
	}
	return c.finishLogin(cred.User, method, lm, sess, err)
}

// answerChallenge sends ch and returns the login's error. The response is
// never logged.
func (c *conn) answerChallenge(ch *Challenge) error {
	answered := false
	defer func() {
		if !answered && ch.Abort != nil {
			c.protect("Challenge.Abort", ch.Abort)
		}
	}()
	resp, err := c.saslStep("+ " + base64.StdEncoding.EncodeToString(ch.Data))
	switch {
	case err == errNoResponse:
		return err
	case err != nil:
		return unwrapBad(err)
	}
	answered = true
	err = ch.Answer(c.ctx, resp)
	var again *Challenge
	if errors.As(err, &again) && again.Abort != nil {
		c.protect("Challenge.Abort", again.Abort)
	}
	if err == nil || again != nil {
		err = ErrAuthFailed
	}
	return err
}

// unwrapBad undoes badCommand, which finishLogin applies again.
func unwrapBad(err error) error {
	var bad *badCommandError
	if errors.As(err, &bad) {
		return bad.err
	}
	return err
}

func parseToken(mech string, msg []byte) (TokenCredentials, bool) {
	if mech == MechanismXOAUTH2 {
		return ParseXOAUTH2(msg)
	}
	return ParseOAUTHBEARER(msg)
}

// ParseXOAUTH2 parses XOAUTH2's client message (Google's "XOAUTH2
// mechanism" page): "user=" user ^A "auth=Bearer " token ^A ^A, the two
// pairs in either order, nothing else, in UTF-8.
func ParseXOAUTH2(msg []byte) (TokenCredentials, bool) {
	var cred TokenCredentials
	if !utf8.Valid(msg) {
		return cred, false
	}
	pairs, ok := splitPairs(msg)
	if !ok || len(pairs) != 2 {
		return cred, false
	}
	var haveUser, haveAuth bool
	for _, kv := range pairs {
		switch {
		case kv.Key == "user" && !haveUser:
			haveUser, cred.User = true, kv.Value
		case kv.Key == "auth" && !haveAuth:
			haveAuth = true
			if cred.Token, ok = parseBearer(kv.Value); !ok {
				return cred, false
			}
		default:
			return cred, false
		}
	}
	if !haveUser || !haveAuth || !validLogin(cred.User) {
		return cred, false
	}
	return cred, true
}

// ParseOAUTHBEARER parses OAUTHBEARER's initial client response (RFC 7628
// §3.1):
//
//	client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
//	kvpair      = key "=" value kvsep
//	key         = 1*(ALPHA)
//	value       = *(VCHAR / SP / HTAB / CR / LF )
//	gs2-header  = [gs2-nonstd-flag ","] gs2-cb-flag "," [gs2-authzid] ","
//
// with the GS2 header of RFC 5801 §4. A lone kvsep answers an error
// challenge and is no login; "auth" is required. Refused though the grammar
// allows them: CR and LF in values (no RFC 7628 key needs them, and a
// relaying backend would carry them on), duplicate keys, the non-standard
// flag "F", and channel binding ("p=", ruled out by RFC 7628 §3.1).
func ParseOAUTHBEARER(msg []byte) (TokenCredentials, bool) {
	var cred TokenCredentials
	if !utf8.Valid(msg) {
		return cred, false
	}
	header, rest, found := bytes.Cut(msg, []byte{1})
	if !found {
		return cred, false
	}
	cb, authzid, ok := parseGS2Header(string(header))
	if !ok {
		return cred, false
	}
	cred.CBFlag, cred.User = cb, authzid
	pairs, ok := splitPairs(rest)
	if !ok {
		return cred, false
	}
	seen := make(map[string]bool, len(pairs))
	var haveAuth bool
	for _, kv := range pairs {
		if seen[kv.Key] || !isAlpha(kv.Key) || !validValue(kv.Value) {
			return cred, false
		}
		seen[kv.Key] = true
		switch kv.Key {
		case "auth":
			haveAuth = true
			if cred.Token, ok = parseBearer(kv.Value); !ok {
				return cred, false
			}
		case "host":
			cred.Host = kv.Value
		case "port":
			cred.Port = kv.Value
		default:
			cred.Extra = append(cred.Extra, kv)
		}
	}
	if !haveAuth || !isDigitsOrEmpty(cred.Port) {
		return cred, false
	}
	return cred, true
}

// splitPairs splits "key=value^A...key=value^A^A" into its pairs. Keys
// are checked by the caller; the message must end with the empty pair.
func splitPairs(b []byte) ([]KeyValue, bool) {
	body, ok := bytes.CutSuffix(b, []byte{1, 1})
	if !ok || len(body) == 0 {
		return nil, false
	}
	parts := bytes.Split(body, []byte{1})
	pairs := make([]KeyValue, 0, len(parts))
	for _, p := range parts {
		k, v, ok := bytes.Cut(p, []byte{'='})
		if !ok || len(k) == 0 {
			return nil, false
		}
		pairs = append(pairs, KeyValue{Key: string(k), Value: string(v)})
	}
	return pairs, true
}

// parseGS2Header parses "n,a=<saslname>," or "n,," (RFC 5801 §4), "y"
// allowed for "n".
func parseGS2Header(h string) (cb, authzid string, ok bool) {
	h, ok = strings.CutSuffix(h, ",")
	if !ok {
		return "", "", false
	}
	cb, az, ok := strings.Cut(h, ",")
	if !ok || (cb != "n" && cb != "y") || strings.Contains(az, ",") {
		return "", "", false
	}
	if az == "" {
		return cb, "", true
	}
	name, ok := strings.CutPrefix(az, "a=")
	if !ok {
		return "", "", false
	}
	if authzid, ok = unescapeSASLName(name); !ok || !validLogin(authzid) {
		return "", "", false
	}
	return cb, authzid, true
}

// unescapeSASLName decodes a saslname (RFC 5801 §4): 1*(UTF8-char-safe /
// "=2C" / "=3D"), where "=2C" is "," and "=3D" is "=" and any other "="
// is an error.
func unescapeSASLName(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

func escapeSASLName(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// parseBearer takes the token from "Bearer <b64token>" (RFC 7628 §3.1,
// auth-value = "Bearer" 1*SP b64token; ABNF strings are case-insensitive,
// RFC 5234 §2.3).
func parseBearer(v string) (string, bool) {
	if len(v) < len("Bearer ") || !strings.EqualFold(v[:len("Bearer")], "Bearer") || v[len("Bearer")] != ' ' {
		return "", false
	}
	tok := strings.TrimLeft(v[len("Bearer"):], " ")
	return tok, validToken(tok)
}

// validToken checks an RFC 6750 §2.1 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func validToken(t string) bool {
	body := strings.TrimRight(t, "=")
	if body == "" {
		return false
	}
	for i := 0; i < len(body); i++ {
		ch := body[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' ||
			strings.IndexByte("-._~+/", ch) >= 0) {
			return false
		}
	}
	return true
}

// validLogin accepts a non-empty user name without control characters
// (C0, which includes CR, LF, NUL and ^A, and DEL): it goes into a relayed
// message and into logs.
func validLogin(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// validValue accepts RFC 7628 §3.1's value without CR and LF: VCHAR, SP
// and HTAB.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if ch := s[i]; (ch < 0x21 || ch > 0x7e) && ch != ' ' && ch != '\t' {
			return false
		}
	}
	return true
}

func isAlpha(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if ch := s[i]; !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z') {
			return false
		}
	}
	return true
}

func isDigitsOrEmpty(s string) bool { return s == "" || isDigits(s) }

var errInvalidToken = errors.New("pop3server: TokenCredentials cannot be encoded: a field is empty or has characters its format does not allow")

// Encode returns cred as a client message of mechanism, the reverse of
// ParseXOAUTH2 and ParseOAUTHBEARER, for a backend that relays it:
// OAUTHBEARER's authorization identity is escaped ("," as "=2C", "=" as
// "=3D"), and its pairs go in the order host, port, Extra, auth (RFC
// 7628 §3.1 fixes none). The fields are checked as the parsers check them
// (User is required for XOAUTH2); the error names none of them.
func (cred TokenCredentials) Encode(mechanism string) ([]byte, error) {
	if !validToken(cred.Token) || (cred.User != "" && !validLogin(cred.User)) || !utf8.ValidString(cred.User) {
		return nil, errInvalidToken
	}
	var b bytes.Buffer
	switch mechanism {
	case MechanismXOAUTH2:
		if cred.User == "" {
			return nil, errInvalidToken
		}
		b.WriteString("user=" + cred.User + "\x01")
	case MechanismOAUTHBEARER:
		cb := cred.CBFlag
		if cb == "" {
			cb = "n"
		}
		if cb != "n" && cb != "y" || !validValue(cred.Host) || !isDigitsOrEmpty(cred.Port) {
			return nil, errInvalidToken
		}
		b.WriteString(cb + ",")
		if cred.User != "" {
			b.WriteString("a=" + escapeSASLName(cred.User))
		}
		b.WriteString(",\x01")
		if cred.Host != "" {
			b.WriteString("host=" + cred.Host + "\x01")
		}
		if cred.Port != "" {
			b.WriteString("port=" + cred.Port + "\x01")
		}
		for _, kv := range cred.Extra {
			switch kv.Key {
			case "auth", "host", "port":
				return nil, errInvalidToken
			}
			if !isAlpha(kv.Key) || !validValue(kv.Value) {
				return nil, errInvalidToken
			}
			b.WriteString(kv.Key + "=" + kv.Value + "\x01")
		}
	default:
		return nil, errInvalidToken
	}
	b.WriteString("auth=Bearer " + cred.Token + "\x01\x01")
	return b.Bytes(), nil
}
