// Package proxy is a framework for writing POP3 servers (RFC 1939, with
// CAPA, PIPELINING and response codes from RFC 2449 and RFC 3206), in the
// spirit of Perl's Net::Server::POP3. The relaying gateway of this project
// is built on it; so can be any other POP3 server.
//
// # Backend and Session
//
// As in go-smtp and go-imap, the protocol and the maildrop are separate.
// The server owns the wire: it parses commands, keeps the protocol state
// (AUTHORIZATION, TRANSACTION, UPDATE), checks every command's state and
// syntax, and formats every response. A Backend authenticates a client
// (USER/PASS and AUTH, and APOP if it implements APOPBackend) and returns a
// Session, which answers for one maildrop with plain Go values: counts,
// listings and message readers. Optional features are add-on interfaces discovered by
// type assertion: UserChecker, APOPBackend, UIDLSession, TopSession and
// CapabilitySession.
//
// Backends that have nothing but a list of messages implement Mailbox and
// use NewMailboxSession, which provides the maildrop semantics of RFC 1939
// (fixed message numbers, deletion marks, RSET, deletion only on QUIT) and
// TOP.
//
// Errors reach the client through one mapping: an *Error is sent as
// "-ERR [Code] Message" (see the sentinels such as ErrAuthFailed), any other
// error is logged and answered "internal error" with the SYS/TEMP response
// code (RFC 3206).
//
// # What the server handles
//
//   - Commands: USER, PASS, APOP, AUTH, STLS, QUIT, CAPA before login;
//     STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL, QUIT, CAPA after it.
//     Keywords are case-insensitive, bare LF ends a line as well as CRLF,
//     and trailing spaces are ignored.
//   - CAPA (USER, SASL, RESP-CODES, PIPELINING, STLS, TOP, UIDL,
//     LOGIN-DELAY, EXPIRE, IMPLEMENTATION), announced by state, by TLS and
//     by what the session implements.
//   - Pipelining (RFC 2449 §6.6): commands run strictly in order, and the
//     responses to a batch of commands go out together.
//   - Multi-line responses: dot-stuffing, a CRLF before the terminator,
//     and no terminator at all if a message body fails half-way, so the
//     client never takes a truncated message for a complete one.
//   - UPDATE only on QUIT in the TRANSACTION state: a dropped connection,
//     a timeout, a shutdown or an internal error never commits deletions.
//     Session.Close is called exactly once on every path.
//   - Limits: command lines (Options.MaxLineLength, default 4096 octets,
//     discarded without buffering when longer), bad commands
//     (Options.MaxBadCommands, default 10), idle time before login
//     (Options.AuthTimeout, default 60s) and after it (Options.IdleTimeout,
//     default 10m, the RFC 1939 §3 autologout), and each write
//     (Options.WriteTimeout, default 60s).
//   - A panic in a backend closes that connection only, after logging the
//     stack.
//   - Graceful shutdown (Server.Shutdown): clients that have not logged in
//     are sent away, logged-in ones may finish and QUIT.
//   - The SHUTDOWN command of Net::Server::POP3proxy, off by default
//     (Options.AllowShutdown).
//
// Logs go to one injected zap.Logger, with the connection id and remote
// address on every entry. Passwords, APOP digests and SASL data are never
// logged.
//
// # TLS
//
// With Options.TLSConfig, Serve offers STLS (RFC 2595 §4) and ServeTLS
// serves implicit TLS (RFC 8314 §3, port 995), whose handshake precedes the
// greeting. Certificates come from the caller's tls.Config, so a
// GetCertificate callback can reload them; TLS 1.2 is the minimum unless
// the caller chose MinVersion. Handshakes are bounded by
// Options.HandshakeTimeout (default 10s); one that fails on a ServeTLS
// listener is logged at debug level only. STLS is valid only in the
// AUTHORIZATION state of a plain connection; any byte the client sent after
// the STLS line, before the handshake, closes the connection without TLS
// (the CVE-2011-0411 plaintext injection); afterwards the server reads
// through a fresh buffer and forgets a pending USER, and CAPA no longer
// lists STLS. ConnInfo.TLS is set once TLS is up.
//
// Options.RequireTLS refuses USER, PASS, APOP and AUTH on plain
// connections, except those Options.TLSExempt exempts (loopback, say),
// with "-ERR [AUTH] Plaintext authentication disallowed on non-secure
// (SSL/TLS) connections." (no RFC has a "TLS required" code; RFC 3206 §4
// puts logins against policy under [AUTH], and the text is Dovecot's).
// CAPA there lists STLS but neither USER nor SASL.
//
// # AUTH
//
// The server terminates SASL (RFC 5034) itself and maps it onto
// Backend.Login, so every backend gets it: PLAIN (RFC 4616; the
// authorization identity must be empty or equal to the authentication
// identity) and LOGIN (with or without the user name as initial response).
// CAPA announces "SASL PLAIN LOGIN" wherever it announces USER. A bare
// AUTH lists the mechanisms as Dovecot does, for Outlook. Decoded names and
// passwords with CR, LF or NUL are refused before any backend call, so a
// relaying backend cannot be made to send extra commands. "*" cancels,
// and AUTH lines may be as long as Options.MaxLineLength. A failed AUTH
// counts like a failed PASS.
//
// # Limits against abuse
//
//   - Connections: Options.MaxConnections (default 1000, all listeners
//     together) and Options.MaxConnectionsPerIP (default 20, by the IP of
//     ConnInfo.RemoteAddr, which behind a PROXY protocol listener is the
//     real client's); negative means unlimited. A connection over a limit
//     is answered "-ERR [SYS/TEMP] too many connections" (or "... from
//     your address") and closed before any backend call.
//   - Failed logins (PASS, APOP, AUTH): the answer waits
//     Options.FailedLoginDelay (default 1s; negative: none), doubled for each further
//     failure from the same client IP up to Options.MaxFailedLoginDelay
//     (default 30s); a successful login from that IP, or 15 minutes
//     without failures, resets it. At most 10,000 addresses are
//     remembered, the longest idle forgotten first. Close and Shutdown cut
//     the wait short.
//   - Hitting a limit is logged at warning level once per limit and client
//     address, then at most once a minute with the number of hits
//     suppressed meanwhile.
package pop3server
