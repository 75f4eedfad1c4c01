package pop3server

import (
	"errors"
	"strings"
	"unicode/utf8"

	"go.uber.org/zap"
)

var (
	errUnknownCommand = &Error{Message: "unknown command"}
	errWrongState     = &Error{Message: "command not valid in this state"}
	errSyntax         = &Error{Message: "syntax error"}
	errBadMsgNumber   = &Error{Message: "invalid message number"}
	errBadCharacters  = &Error{Message: "invalid characters in command"}
	errLineTooLongRsp = &Error{Message: "line too long"}
	errNoUser         = &Error{Message: "send USER first"}
	errTooManyBad     = &Error{Message: "too many bad commands", Disconnect: true}
	errShuttingDown   = &Error{Code: "SYS/TEMP", Message: "server shutting down", Disconnect: true}
	errInternal       = &Error{Code: "SYS/TEMP", Message: "internal error"}
	// errUpdateFailed has the text RFC 1939 §6 gives for a failed UPDATE.
	errUpdateFailed = &Error{Code: "SYS/TEMP", Message: "some deleted messages not removed"}
)

// badCommandError marks an error that counts toward Options.MaxBadCommands.
type badCommandError struct{ err error }

func (e *badCommandError) Error() string { return e.err.Error() }
func (e *badCommandError) Unwrap() error { return e.err }

func badCommand(err error) error { return &badCommandError{err: err} }

func (c *conn) writeError(err error) { c.writeErrorOr(err, errInternal) }

// writeErrorOr is the one place where errors become -ERR responses; an
// error that is not an *Error is logged and answered with fallback.
func (c *conn) writeErrorOr(err error, fallback *Error) {
	var bad *badCommandError
	if errors.As(err, &bad) {
		c.badCommands++
		if c.badCommands > c.cfg.MaxBadCommands {
			err = errTooManyBad
			c.srv.limitLog.hit(c.log, limitBadCommands, c.key, "too many bad commands, closing")
		}
	}
	var e *Error
	switch {
	case !errors.As(err, &e):
		c.log.Error("command failed", zap.String("command", c.verb), zap.Error(err))
		e = fallback
	case e.Err != nil:
		c.log.Info("command refused", zap.String("command", c.verb), zap.Error(e))
	}
	c.scratch = appendErrorLine(c.scratch[:0], e)
	c.bw.Write(c.scratch)
	if e.Disconnect && c.quit.reason == "" {
		c.quit = endWith(disconnectResult(e), "error: "+e.Message)
	}
}

// appendErrorLine keeps to the 512 octets of RFC 1939 §3, drops CR, LF and
// NUL so a backend cannot inject lines, and drops an invalid Code because
// announcing RESP-CODES promises valid ones (RFC 2449 §8).
func appendErrorLine(b []byte, e *Error) []byte {
	start := len(b)
	b = append(b, "-ERR"...)
	code := e.Code
	if !validRespCode(code) {
		code = ""
	}
	if code != "" {
		b = append(b, " ["...)
		b = append(b, code...)
		b = append(b, ']')
	}
	msg := e.Message
	if code == "" {
		// Without a code, text starting with "[" would be read as one.
		msg = strings.TrimLeft(msg, "[")
	}
	room := maxResponseLine - len("\r\n") - (len(b) - start) - len(" ")
	if msg != "" && room > 0 {
		b = append(b, ' ')
		b = appendClean(b, msg, room)
	}
	return append(b, '\r', '\n')
}

// appendClean appends at most limit bytes of s without CR, LF and NUL,
// never cutting a UTF-8 sequence in half.
func appendClean(b []byte, s string, limit int) []byte {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\r' || r == '\n' || r == 0 {
			i += size
			continue
		}
		if n+size > limit {
			break
		}
		b = append(b, s[i:i+size]...)
		n += size
		i += size
	}
	return b
}

// validRespCode checks a resp-code of RFC 2449 §8 without the brackets.
func validRespCode(code string) bool {
	if code == "" {
		return false
	}
	for _, level := range strings.Split(code, "/") {
		if level == "" {
			return false
		}
		for i := 0; i < len(level); i++ {
			if ch := level[i]; ch < 0x21 || ch > 0x7e || ch == ']' {
				return false
			}
		}
	}
	return true
}

// disconnectResult tells the Observer why an Error closed the connection.
func disconnectResult(e *Error) SessionResult {
	switch e {
	case errTooManyBad:
		return SessionBadCommands
	case errShuttingDown:
		return SessionShutdown
	}
	return SessionError
}
