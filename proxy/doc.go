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
// (USER/PASS, and APOP if it implements APOPBackend) and returns a Session,
// which answers for one maildrop with plain Go values: counts, listings and
// message readers. Optional features are add-on interfaces discovered by
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
//   - Commands: USER, PASS, APOP, QUIT, CAPA before login; STAT, LIST,
//     RETR, DELE, NOOP, RSET, TOP, UIDL, QUIT, CAPA after it. Keywords are
//     case-insensitive, bare LF ends a line as well as CRLF, and trailing
//     spaces are ignored.
//   - CAPA (USER, RESP-CODES, PIPELINING, TOP, UIDL, LOGIN-DELAY, EXPIRE,
//     IMPLEMENTATION), announced by state and by what the session
//     implements.
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
// address on every entry. Passwords and APOP digests are never logged.
//
// # Not yet
//
// Implicit TLS (RFC 8314) and STLS (RFC 2595) will add TLS options and set
// ConnInfo.TLS; AUTH (RFC 5034) will add SASL mechanisms. Until then USER
// and PASS travel in cleartext: listen on loopback or behind a TLS
// terminator.
package proxy
