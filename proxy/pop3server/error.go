package pop3server

import "strings"

// Error is a POP3 -ERR response. A Backend or Session returns it (found
// with errors.As) to choose what the client sees; any other error becomes
// "-ERR [SYS/TEMP] internal error". The line is made safe on the way out:
// an invalid Code is dropped, CR, LF and NUL are removed from Message, and
// the line is cut to 512 octets.
type Error struct {
	// Code is a response code (RFC 2449 §8, RFC 3206) without the brackets,
	// such as "AUTH", "SYS/TEMP" or "IN-USE"; "" for none.
	Code string
	// Message is the client-visible text; it must carry no internal detail.
	Message string
	// Err is the underlying cause. It is logged, never sent.
	Err error
	// Disconnect closes the connection after the response, for failures
	// that leave the session unusable (the upstream connection was lost).
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
	// ErrAuthFailed answers bad credentials (RFC 3206 §5).
	ErrAuthFailed = &Error{Code: "AUTH", Message: "authentication failed"}
	// ErrNoSuchMessage answers a message number that does not exist or is
	// marked deleted (RFC 1939 §5).
	ErrNoSuchMessage = &Error{Message: "no such message"}
	// ErrInUse answers a maildrop locked by another session (RFC 2449 §8.1.2).
	ErrInUse = &Error{Code: "IN-USE", Message: "maildrop already locked"}
	// ErrTemporary is a transient failure to retry later (RFC 3206 §4).
	ErrTemporary = &Error{Code: "SYS/TEMP", Message: "temporary failure, try again later"}
)
