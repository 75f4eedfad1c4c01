// Package upstream is the proxy's side towards the real POP3 servers: it
// works out where a client login goes (ParseLogin, AllowList), connects
// there with the configured TLS policy (Dial, Overrides), and runs the
// commands the relay needs (Client).
//
// # go-pop3
//
// The command plumbing is github.com/knadh/go-pop3 v1.0.2, whose gaps are
// closed here:
//   - No deadlines, no context, and Dial's "%s:%d" breaks IPv6 literals, so
//     Dial connects and starts TLS itself, and the guard, below go-pop3,
//     sets a deadline before every Read and Write.
//   - NewConn discards the greeting and leaks the connection if it fails:
//     the guard keeps the greeting; Dial closes the connection.
//   - An empty status line passes for +OK, -ERR is a bare string, and "+ "
//     challenges (RFC 5034 §4) are unreadable: the guard accepts only "+OK"
//     or "-ERR", alone or followed by a space, and in AUTH "+ " too.
//   - Cmd writes arguments unchecked (a CRLF in a password would inject a
//     command) and Auth sends a needless NOOP after PASS: Login refuses CR,
//     LF and NUL and sends USER and PASS only; SASL data goes in base64.
//   - Lines are read without a limit: before reading more, the guard refuses
//     status lines (greeting included), CAPA and other responses over their
//     caps (Options.MaxResponseBytes).
//   - LIST, UIDL, RETR and TOP are buffered whole, unlimited, and bare LF is
//     rewritten to CRLF: a Client parses listings line by line and streams
//     messages (Message).
//   - There is no Close, and Quit sends QUIT: a Client closes the connection.
//
// The streaming reader shares the connection with go-pop3, which works
// because POP3 without PIPELINING is lock step (RFC 1939 §3, RFC 2449
// §6.6). The guard does not trust the server to keep to that: it follows
// the framing of every response and fails on any byte read after a complete
// one, as the streaming reader does with its own buffer. Such bytes come
// from a broken server or an attacker; after STLS they would pass as coming
// from inside TLS (the CVE-2011-0411 class of injection).
//
// # Errors and QUIT
//
// A transport or protocol failure, or a listing over Options.MaxMessages,
// wraps ErrConnection and breaks the Client: after a timeout or a framing
// error nobody knows where the next response starts. A -ERR is a
// *ServerError and leaves the connection usable. Deletions are committed
// only by QUIT in the TRANSACTION state (RFC 1939 §6), so only Quit sends
// QUIT; Abort, Message.Close before the end and every error path close the
// connection without a word.
package upstream
