// Package upstream is the proxy's side towards the real POP3 servers: it
// works out where a client login goes (ParseLogin, AllowList), connects
// there with the configured TLS policy (Dial, Overrides), and runs the
// commands the relay needs (Client).
//
// # go-pop3
//
// The command plumbing is github.com/knadh/go-pop3 v1.0.2, whose gaps are
// closed here:
//   - It has no deadlines, and its Dial takes no context and breaks IPv6
//     literals ("%s:%d"). Dial connects and starts TLS itself and hands
//     go-pop3 the connection; a wrapper below go-pop3, the guard, sets a
//     deadline before every Read and Write.
//   - NewConn discards the greeting, and leaks the connection when the
//     greeting fails. The guard keeps the greeting; Dial closes the
//     connection.
//   - It takes an empty status line for +OK and reports -ERR as a bare
//     string. The guard accepts only "+OK" or "-ERR", alone or followed by
//     a space, and keeps the line for ServerError; in an AUTH exchange
//     (Auth, AuthResponse) also a "+ " challenge (RFC 5034 §4), which
//     go-pop3 cannot read at all.
//   - Cmd writes arguments unchecked, so a CRLF in a password would inject a
//     command. Login refuses CR, LF and NUL; SASL data goes in base64.
//   - Auth sends a needless NOOP after PASS; Login sends USER and PASS only.
//   - It reads every line with bufio.ReadBytes, which grows without a
//     limit. The guard refuses a status line (greeting included) over 1024
//     octets, twice RFC 1939 §3's 512, and a CAPA response over 16 KiB,
//     before reading more, and caps every other response at
//     Options.MaxResponseBytes.
//   - LIST and UIDL buffer the whole listing, then parse it into further
//     copies. A Client reads them itself, line by line (1 KiB at most
//     each), straight into the result, at most Options.MaxMessages entries
//     (ErrTooManyMessages).
//   - RETR and TOP buffer whole messages, without a limit, and rewrite bare
//     LF to CRLF. A Client streams them itself (Message).
//   - It has no Close; Quit, its only way out, sends QUIT. A Client closes
//     the connection itself.
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
// A transport or protocol failure wraps ErrConnection and breaks the
// Client: after a timeout or a framing error nobody knows where the next
// response starts. So does a listing over Options.MaxMessages, which also
// wraps ErrTooManyMessages. A -ERR is a *ServerError and leaves the
// connection usable.
//
// Deletions are committed only by QUIT in the TRANSACTION state (RFC 1939
// §6), so only Quit sends QUIT. Abort, Message.Close before the end and
// every error path close the connection without a word.
package upstream
