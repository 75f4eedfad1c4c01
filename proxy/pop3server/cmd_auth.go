package pop3server

import (
	"errors"
	"strings"

	"go.uber.org/zap"
)

// command is one POP3 keyword. Handlers check state and syntax themselves
// and return errors for writeError.
type command struct {
	name   string
	handle func(c *conn, arg string) error
	// secret arguments are never logged.
	secret bool
}

var commands = map[string]command{
	// AUTHORIZATION
	"USER":     {name: "USER", handle: (*conn).handleUser},
	"PASS":     {name: "PASS", handle: (*conn).handlePass, secret: true},
	"APOP":     {name: "APOP", handle: (*conn).handleAPOP, secret: true},
	"AUTH":     {name: "AUTH", handle: (*conn).handleAuth, secret: true},
	"STLS":     {name: "STLS", handle: (*conn).handleStls},
	"SHUTDOWN": {name: "SHUTDOWN", handle: (*conn).handleShutdown},
	// Both states
	"QUIT": {name: "QUIT", handle: (*conn).handleQuit},
	"CAPA": {name: "CAPA", handle: (*conn).handleCapa},
	// TRANSACTION
	"STAT": {name: "STAT", handle: (*conn).handleStat},
	"LIST": {name: "LIST", handle: (*conn).handleList},
	"RETR": {name: "RETR", handle: (*conn).handleRetr},
	"DELE": {name: "DELE", handle: (*conn).handleDele},
	"NOOP": {name: "NOOP", handle: (*conn).handleNoop},
	"RSET": {name: "RSET", handle: (*conn).handleRset},
	"TOP":  {name: "TOP", handle: (*conn).handleTop},
	"UIDL": {name: "UIDL", handle: (*conn).handleUidl},
}

func (c *conn) requireState(s state) error {
	if c.state != s {
		return badCommand(errWrongState)
	}
	return nil
}

func requireNoArgs(arg string) error {
	if strings.TrimRight(arg, " ") != "" {
		return badCommand(errSyntax)
	}
	return nil
}

func (c *conn) handleUser(arg string) error {
	if err := c.requireState(stateAuthorization); err != nil {
		return err
	}
	if c.plaintextRefused() {
		return badCommand(errTLSRequired)
	}
	name := strings.TrimRight(arg, " ")
	if name == "" {
		return badCommand(errSyntax)
	}
	c.user = ""
	if err := c.checkUser(name, "USER", LoginUser); err != nil {
		return err
	}
	c.user = name
	c.writeLine("+OK send PASS")
	return nil
}

func (c *conn) checkUser(name, step string, mech LoginMechanism) error {
	uc := c.cfg.users
	if uc == nil {
		return nil
	}
	if err := uc.CheckUser(c.ctx, &c.info, name); err != nil {
		c.log.Info("login failed", zap.String("user", name), zap.String("step", step))
		c.observeLogin(mech, loginResult(err))
		return badCommand(err)
	}
	return nil
}

// handlePass takes everything after "PASS " as the password, spaces
// included, as RFC 1939 §7 allows.
func (c *conn) handlePass(arg string) error {
	if err := c.requireState(stateAuthorization); err != nil {
		return err
	}
	if c.plaintextRefused() {
		return badCommand(errTLSRequired)
	}
	if c.user == "" {
		return badCommand(errNoUser)
	}
	if arg == "" {
		return badCommand(errSyntax)
	}
	// A failed PASS needs a new USER (RFC 1939 §7).
	user := c.user
	c.user = ""
	sess, err := c.cfg.Backend.Login(c.ctx, &c.info, user, arg)
	return c.finishLogin(user, "PASS", LoginUser, sess, err)
}

func (c *conn) handleAPOP(arg string) error {
	if c.cfg.apop == nil {
		return badCommand(errUnknownCommand)
	}
	if err := c.requireState(stateAuthorization); err != nil {
		return err
	}
	if c.plaintextRefused() {
		return badCommand(errTLSRequired)
	}
	f := fields(arg)
	if len(f) != 2 || !isMD5Hex(f[1]) {
		return badCommand(errSyntax)
	}
	c.user = ""
	sess, err := c.cfg.apop.LoginAPOP(c.ctx, &c.info, f[0], c.timestamp, strings.ToLower(f[1]))
	return c.finishLogin(f[0], "APOP", LoginAPOP, sess, err)
}

func isMD5Hex(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !('0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f' || 'A' <= ch && ch <= 'F') {
			return false
		}
	}
	return true
}

// finishLogin ends PASS, APOP and AUTH alike.
func (c *conn) finishLogin(user, method string, mech LoginMechanism, sess Session, err error) error {
	if err == nil && sess == nil {
		err = errors.New("backend returned neither a session nor an error")
	}
	c.observeLogin(mech, loginResult(err))
	if err != nil {
		if sess != nil {
			c.protect("Session.Close", func() { sess.Close() })
		}
		c.log.Info("login failed", zap.String("user", user), zap.String("method", method))
		if mayBeWrongPassword(err) && !c.loginFailed() {
			return errNoResponse
		}
		return badCommand(err)
	}
	// A success leaves the failed-login delay alone (see failureTable).
	c.enterTransaction(sess)
	c.log = c.log.With(zap.String("user", user))
	c.log.Info("login", zap.String("method", method))
	c.writeLine("+OK maildrop locked and ready")
	return nil
}

// mayBeWrongPassword tells failures that may be password guessing from
// those that say nothing about the password: [IN-USE] means it was right
// (RFC 2449 §8.1.2), [LOGIN-DELAY] that the client came too soon, and SYS
// codes and internal errors a fault of the server (RFC 3206 §4). Delaying
// those would slow every honest client during an outage.
func mayBeWrongPassword(err error) bool {
	if isSysError(err) {
		return false
	}
	var pe *Error
	errors.As(err, &pe)
	return pe.Code != "IN-USE" && pe.Code != "LOGIN-DELAY"
}

// handleQuit commits the deletions in TRANSACTION (RFC 1939 §6).
func (c *conn) handleQuit(arg string) error {
	if err := requireNoArgs(arg); err != nil {
		return err
	}
	if c.state == stateAuthorization {
		c.writeLine("+OK POP3 server signing off")
		c.quit = endWith(SessionQuit, "QUIT")
		return nil
	}
	c.setState(stateUpdate)
	c.quit = endWith(SessionQuit, "QUIT")
	err := c.session.Update(c.ctx)
	// RFC 1939 §6: release the maildrop, then reply, or a client that
	// logs in again at once finds it locked ([IN-USE]).
	c.closeSession()
	if err != nil {
		c.writeErrorOr(err, errUpdateFailed)
		return nil
	}
	c.writeLine("+OK POP3 server signing off")
	return nil
}

// handleShutdown implements Net::Server::POP3proxy's SHUTDOWN. To anyone
// not allowed it is an unknown command, so as not to reveal it.
func (c *conn) handleShutdown(arg string) error {
	if c.state != stateAuthorization || c.cfg.AllowShutdown == nil || !c.cfg.AllowShutdown(&c.info) {
		return badCommand(errUnknownCommand)
	}
	if err := requireNoArgs(arg); err != nil {
		return err
	}
	c.log.Warn("SHUTDOWN command accepted")
	c.writeLine("+OK shutting down")
	c.quit = endWith(SessionShutdown, "SHUTDOWN")
	if f := c.cfg.OnShutdown; f != nil {
		go protect(c.log, "OnShutdown", f)
	}
	return nil
}
