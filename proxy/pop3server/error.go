package pop3server

import "strings"

// Error is a POP3 -ERR response. The server maps every error a Backend or
// Session returns to a response in one place: an *Error (found with
// errors.As) is sent as "-ERR [Code] Message"; any other error is logged
// and the client gets "internal error" with the SYS/TEMP code. The line is
// made safe on the way out: a Code that is not a valid RFC 2449 §8
// resp-code is dropped (announcing RESP-CODES promises valid codes), CR, LF
// and NUL are removed from Message, a Message without a Code loses any
// leading "[" (it would read as a code), and the line is cut to 512 octets
// (RFC 1939 §3).
type Error struct {
	// Code is an extended response code (RFC 2449 §8, RFC 3206) without the
	// brackets: "AUTH", "SYS/TEMP", "SYS/PERM", "IN-USE", "LOGIN-DELAY", or
	// "" for none.
	Code string
	// Message is the client-visible text. It must never carry internal
	// detail (addresses, scanner names, errors from libraries).
	Message string
	// Err is the underlying cause. It is logged, never sent.
	Err error
	// Disconnect closes the connection after the response, for failures
	// that leave the session unusable (the upstream connection was lost).
	// A closed connection never commits deletions.
	Disconnect bool
}

// Error returns the response text with the cause, for logs.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString("[" + e.Code + "] ")
	}
	b.WriteString(e.Message)
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Sentinel errors for backends. Return them as they are, or copy one and set
// Err to keep the cause for the log.
var (
	// ErrAuthFailed is the answer to bad credentials (RFC 3206 [AUTH]).
	ErrAuthFailed = &Error{Code: "AUTH", Message: "authentication failed"}
	// ErrNoSuchMessage answers a message number that does not exist or is
	// marked deleted (RFC 1939 §5).
	ErrNoSuchMessage = &Error{Message: "no such message"}
	// ErrInUse answers a maildrop that is locked by another session
	// (RFC 2449 §8.1.2 [IN-USE]).
	ErrInUse = &Error{Code: "IN-USE", Message: "maildrop already locked"}
	// ErrTemporary is a transient failure the client should retry later
	// (RFC 3206 SYS/TEMP).
	ErrTemporary = &Error{Code: "SYS/TEMP", Message: "temporary failure, try again later"}
)
