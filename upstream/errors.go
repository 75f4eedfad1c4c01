package upstream

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/pop3proxy/pop3proxy/internal/neterr"
)

var (
	// ErrConnection is wrapped by every transport or protocol failure:
	// connect, handshake, timeout, a closed connection, or a malformed,
	// over-long or unsolicited response. The Client is broken afterwards;
	// the relay answers its client "-ERR [SYS/TEMP]" (RFC 3206 §4).
	ErrConnection = errors.New("upstream connection failed")

	// ErrTLS is wrapped, together with ErrConnection, by TLS failures: a
	// failed handshake or certificate check, STLS not offered in starttls
	// mode or refused, and bytes injected after the STLS response.
	ErrTLS = errors.New("upstream TLS failed")

	// ErrBadArgument refuses a command before anything is written, leaving
	// the connection usable: an empty user name, CR, LF or NUL in it or the
	// password, a message number below 1, a bad SASL mechanism or empty Auth ir.
	ErrBadArgument = errors.New("invalid argument")

	// ErrMessageOpen refuses commands while a RETR or TOP body is unread.
	ErrMessageOpen = errors.New("previous message not read to the end")

	// ErrTooManyMessages is wrapped, with ErrConnection, by a LIST or UIDL
	// listing over Options.MaxMessages entries.
	ErrTooManyMessages = errors.New("upstream mailbox has more messages than max_messages")

	// ErrInvalidLogin is wrapped by every *LoginError.
	ErrInvalidLogin = errors.New("invalid login")

	errClosed      = errors.New("connection closed, or broken by an earlier error")
	errUnsolicited = errors.New("unsolicited data after a complete response") // see the package doc
)

func connError(err error) error {
	if err == nil {
		return ErrConnection
	}
	return tag(ErrConnection, neterr.Cause(err))
}

// tagged matches sentinel (errors.Is) without its text: the message already
// names the upstream and the failed step, which the sentinel's would repeat.
type tagged struct {
	sentinel error
	err      error
}

func (e *tagged) Error() string   { return e.err.Error() }
func (e *tagged) Unwrap() []error { return []error{e.sentinel, e.err} }

func tag(sentinel, err error) error {
	if errors.Is(err, sentinel) {
		return err
	}
	return &tagged{sentinel: sentinel, err: err}
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ServerError is a -ERR response. The connection stays usable unless the
// server closes it, as RFC 1939 §4 allows after a failed PASS.
type ServerError struct {
	// Code is the response code without brackets (RFC 2449 §8, RFC 3206), e.g.
	// "IN-USE"; "" if none or it breaks RFC 2449 §3's grammar (then it stays in
	// Text). One over 102 octets, as no genuine one is, is dropped (maxRespCode).
	Code string
	// Text is the rest, control characters and invalid UTF-8 replaced by
	// '?', cut to 400 bytes (see maxRespCode).
	Text string
}

// Error returns the cleaned-up response: "-ERR [CODE] text".
func (e *ServerError) Error() string {
	var b strings.Builder
	b.WriteString("-ERR")
	if e.Code != "" {
		b.WriteString(" [" + e.Code + "]")
	}
	if e.Text != "" {
		b.WriteString(" " + e.Text)
	}
	return b.String()
}

const maxErrorText = 400 // see ServerError.Text

// maxRespCode bounds ServerError.Code: with the longest Text, a relayed
// "-ERR [CODE] Text" line is RFC 1939 §3's 512 octets, CRLF included.
const maxRespCode = 512 - len("-ERR [] \r\n") - maxErrorText

func parseServerError(line []byte) *ServerError {
	rest := bytes.TrimPrefix(trimEOL(line), []byte("-ERR"))
	rest = bytes.TrimPrefix(rest, []byte(" "))
	e := &ServerError{}
	if code, text, ok := splitRespCode(rest); ok {
		rest = text
		if len(code) <= maxRespCode {
			e.Code = code
		}
	}
	e.Text = sanitize(rest, maxErrorText)
	return e
}

// splitRespCode splits "[CODE/SUB] text" per the grammar of RFC 2449 §3:
//
//	resp-code  = "[" resp-level *("/" resp-level) "]"
//	resp-level = 1*rchar
//	rchar      = %x21-2E / %x30-5C / %x5E-7F
//
// DEL (%x7F) is refused although the grammar allows it: the code is relayed
// to clients, where a control character has no business.
func splitRespCode(b []byte) (code string, text []byte, ok bool) {
	if len(b) == 0 || b[0] != '[' {
		return "", b, false
	}
	end := bytes.IndexByte(b, ']')
	if end < 0 {
		return "", b, false
	}
	inner := b[1:end]
	for _, level := range bytes.Split(inner, []byte("/")) {
		if len(level) == 0 {
			return "", b, false
		}
		for _, c := range level {
			if c < 0x21 || c > 0x7e || c == '/' || c == ']' {
				return "", b, false
			}
		}
	}
	return string(inner), bytes.TrimLeft(b[end+1:], " "), true
}

// sanitize replaces control characters (C0, DEL, C1) and invalid UTF-8 by
// '?', trims spaces and cuts to max bytes on a character boundary.
func sanitize(b []byte, max int) string {
	var s strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r == utf8.RuneError && size == 1, r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0:
			r = '?'
		}
		if s.Len()+utf8.RuneLen(r) > max {
			break
		}
		s.WriteRune(r)
	}
	return strings.TrimSpace(s.String())
}

// LoginError is returned by ParseLogin. Its message is safe to show to the
// POP3 client: it describes the problem without echoing the input.
type LoginError struct {
	Reason string // e.g. "empty upstream host"
}

// Error returns "invalid login: " and the reason.
func (e *LoginError) Error() string { return "invalid login: " + e.Reason }

// Unwrap returns ErrInvalidLogin.
func (e *LoginError) Unwrap() error { return ErrInvalidLogin }
